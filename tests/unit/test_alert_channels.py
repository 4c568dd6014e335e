"""Channels without a network: what each channel type connects to (every host checked
by the destination policy), what may be shown of a URL, the sender's checks before
any connection (a name that now resolves inward is refused), and the file store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.services.alerts import apprise_sender
from app.services.alerts.channel_store import FileChannelStore, TooManyChannels
from app.services.alerts.channels import (
    Channel,
    ChannelInput,
    describe,
    mask,
    new_channel,
    secret_parts,
)
from app.services.alerts.delivery_errors import DeliveryFailed
from app.services.alerts.destinations import DestinationPolicy

TOKEN = "123456789:AAH-s3cretBotToken"


@pytest.mark.parametrize(
    "url, hosts, destination",
    [
        ("json://u:pw@hooks.example.com:8080/T0KEN", ("hooks.example.com",), "json://hooks.example.com/…"),
        ("forms://hooks.example.com/T0KEN", ("hooks.example.com",), "forms://hooks.example.com/…"),
        ("xml://[2001:db8::1]/T0KEN", ("2001:db8::1",), "xml://[2001:db8::1]/…"),
        ("ntfys://ntfy.example.org/topic", ("ntfy.example.org",), "ntfys://ntfy.example.org/…"),
        ("ntfy://my-secret-topic", ("ntfy.sh",), "ntfy://ntfy.sh/…"),
        (
            "mailto://me:pw@example.com?smtp=mail.example.net&to=ops@example.com",
            ("mail.example.net",),
            "mailto://mail.example.net/…",
        ),
        ("mailtos://me:pw@gmail.com", ("smtp.gmail.com",), "mailtos://smtp.gmail.com/…"),
        ("matrixs://me:pw@matrix.example.org/#room", ("matrix.example.org",), "matrixs://matrix.example.org/…"),
        (f"tgram://{TOKEN}/12315544/", ("api.telegram.org",), "tgram://…"),
        ("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV", ("discord.com",), "discord://…"),
        (
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
            ("hooks.slack.com",),
            "slack://…",
        ),
        ("slack://xoxb-1234-1234-4ddbc191d40ee098cbaae6f3523ada2d/#general", ("slack.com",), "slack://…"),
        ("pover://ukey1234567890@atoken1234567890", ("api.pushover.net",), "pover://…"),
        (
            "workflows://prod.westus.logic.azure.com:443/wf123/s1gnature",
            ("prod.westus.logic.azure.com",),
            "workflows://prod.westus.logic.azure.com/…",
        ),
    ],
)  # fmt: skip
def test_each_type_names_every_host_it_connects_to(url, hosts, destination) -> None:
    target = describe(url)
    assert (target.hosts, target.destination) == (hosts, destination)


@pytest.mark.parametrize(
    "url, message",
    [
        ("syslog://u:pw@10.0.0.1/T0KEN", "unknown channel type 'syslog'"),
        ("no scheme T0KEN", "cannot be parsed"),
        ("json://", "not valid"),
        ("tgram://T0KEN/", "not valid"),
        ("mailto://u:pw@example.com?smtp=mail.example.net&wkd=yes", "wkd= is not supported"),
    ],
)
def test_an_unusable_url_is_a_value_error_that_never_repeats_it(url, message) -> None:
    with pytest.raises(ValueError) as error:
        describe(url)
    assert message in str(error.value)
    assert "T0KEN" not in str(error.value) and "pw@" not in str(error.value)


def test_what_is_shown_of_a_channel_holds_no_secret() -> None:
    url = f"tgram://{TOKEN}/12315544/?format=markdown"
    channel = new_channel(ChannelInput(name="phone", url=url), describe(url), at_ms=5)
    public = channel.public_dict()
    assert public == {
        "id": channel.id,
        "name": "phone",
        "type": "tgram",
        "destination": "tgram://…",
        "created_at_ms": 5,
    }
    assert TOKEN not in repr(channel) and TOKEN not in str(public)
    assert Channel.from_stored(channel.to_stored()).url.get_secret_value() == url
    said = f"POST https://api.telegram.org/bot{TOKEN}/sendMessage chat 12315544 markdown"
    masked = mask(said, secret_parts(url))
    assert "s3cretBotToken" not in masked and "12315544" not in masked
    assert mask("format=markdown", secret_parts(url)) == "format=…"  # the value, not the key


async def test_the_sender_checks_every_host_before_each_send() -> None:
    """A name that resolved to a public address when the channel was made, and to an
    internal one now (DNS rebinding), is refused before any connection; a name that
    does not resolve now is worth a retry; an allowed name is not looked up."""
    table = {"hooks.example.com": ["10.1.2.3"]}
    lookups: list[str] = []

    async def lookup(host: str, port: int) -> list[str]:
        lookups.append(host)
        if host not in table:
            raise OSError(-2, "Name or service not known")
        return table[host]

    async def send(url: str) -> DeliveryFailed:
        with pytest.raises(DeliveryFailed) as failed:
            await apprise_sender.send(
                url, "t", "b", idempotency_key="k-1", policy=DestinationPolicy(),
                timeout_seconds=2.0, lookup=lookup,
            )  # fmt: skip
        return failed.value

    refused = await send("json://hooks.example.com/T0KEN")
    assert not refused.retryable and "10.1.2.3, a private address" in refused.reason
    assert (
        refused.reason.startswith("json://hooks.example.com/…: ") and "T0KEN" not in refused.reason
    )
    unknown = await send("mailto://u:pw@example.com?smtp=mail.invalid&to=a@example.com")
    assert unknown.retryable and "mail.invalid cannot be resolved" in unknown.reason
    assert lookups == ["hooks.example.com", "mail.invalid"]
    invalid = await send("bogus://x/T0KEN")
    assert not invalid.retryable and "T0KEN" not in invalid.reason
    with pytest.raises(ValueError):
        await apprise_sender.send(
            "json://hooks.example.com/", "t", "b", idempotency_key="bad key\r\nX: 1",
            policy=DestinationPolicy(), timeout_seconds=1.0,
        )  # fmt: skip


async def test_the_file_store_caps_keeps_order_and_changes_nothing_on_a_failed_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data" / "channels.json"
    store = FileChannelStore(path)
    url = "json://hooks.example.com/T0KEN"
    made = [
        new_channel(ChannelInput(name=f"c{n}", url=url), describe(url), at_ms=n) for n in range(3)
    ]
    for channel in reversed(made[:2]):
        await store.add_channel(channel, max_channels=2)
    with pytest.raises(TooManyChannels):
        await store.add_channel(made[2], max_channels=2)
    assert [c.id for c in await store.list_channels()] == [made[0].id, made[1].id]
    blocker = path.parent / f".{path.name}.tmp"  # where the next write goes: a directory
    blocker.mkdir()
    with pytest.raises(OSError):
        await store.delete_channel(made[0].id)
    assert await store.get_channel(made[0].id) is not None  # nothing changed
    blocker.rmdir()
    reopened = FileChannelStore(path)
    assert [c.to_stored() for c in await reopened.list_channels()] == [
        c.to_stored() for c in made[:2]
    ]
    assert await reopened.delete_channel(made[0].id) and not await reopened.delete_channel("x")


def test_a_corrupt_file_is_moved_aside_without_logging_its_content(tmp_path: Path, caplog) -> None:
    path = tmp_path / "channels.json"
    path.write_text('{"channels": [{"id": "a", "url": "json://h/T0KEN"}]}')
    store = FileChannelStore(path)
    assert asyncio.run(store.list_channels()) == []
    assert not path.exists() and list(tmp_path.glob("channels.json.corrupt-*"))
    assert "T0KEN" not in caplog.text and "unreadable" in caplog.text
