"""Digests, pure: the slots a schedule is due at (``next_due``) across hour, 4-hour and
day boundaries with a manual clock, the input's validation, and the message's sections
when the analysis could not compute them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from app.services.alerts.digests import (
    Digest,
    DigestInput,
    compose_digest,
    idempotency_key,
    next_due,
)
from tests.conftest import ManualClock


def ms(text: str) -> int:
    """Epoch ms of a UTC time written 'YYYY-MM-DD HH:MM[:SS]'."""
    fmt = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    return int(datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp() * 1000)


def digest(every: str, created: str) -> Digest:
    return Digest(id="d1", name="Desk", channels=("c1",), every=every, created_at_ms=ms(created))


def test_hourly_first_due_at_the_first_hour_after_creation_then_each_hour() -> None:
    clock = ManualClock(ms("2026-09-21 10:20") / 1000)
    hourly = digest("1h", "2026-09-21 10:20")
    now = lambda: int(clock() * 1000)  # noqa: E731
    assert next_due(hourly, None, now()) == ms("2026-09-21 11:00")  # not due yet
    clock.advance(39 * 60 + 59.999)  # 10:59:59.999
    assert next_due(hourly, None, now()) == ms("2026-09-21 11:00") > now()
    clock.advance(0.001)  # 11:00:00.000 exactly: due
    assert next_due(hourly, None, now()) == ms("2026-09-21 11:00") == now()
    sent = ms("2026-09-21 11:00")
    clock.advance(30 * 60)  # 11:30, sent for 11:00: next at 12:00
    assert next_due(hourly, sent, now()) == ms("2026-09-21 12:00")
    clock.advance(2 * 3600 + 10 * 60)  # 13:40: 12:00 and 13:00 missed → 13:00 once
    assert next_due(hourly, sent, now()) == ms("2026-09-21 13:00")
    assert next_due(hourly, ms("2026-09-21 13:00"), now()) == ms("2026-09-21 14:00")


def test_created_exactly_on_a_slot_is_due_at_the_next_one() -> None:
    quarter = digest("15m", "2026-09-21 10:15")
    assert next_due(quarter, None, ms("2026-09-21 10:15")) == ms("2026-09-21 10:30")
    assert next_due(quarter, None, ms("2026-09-21 10:29:59")) == ms("2026-09-21 10:30")
    assert next_due(quarter, None, ms("2026-09-21 10:44")) == ms("2026-09-21 10:30")


@pytest.mark.parametrize(
    ("every", "created", "now", "due"),
    [
        # 4h slots at 00, 04, 08, … UTC
        ("4h", "2026-09-21 01:00", "2026-09-21 03:59", "2026-09-21 04:00"),
        ("4h", "2026-09-21 01:00", "2026-09-21 07:30", "2026-09-21 04:00"),
        ("4h", "2026-09-21 22:00", "2026-09-22 00:00", "2026-09-22 00:00"),
        # daily at 00:00 UTC, across a month and a year
        ("1d", "2026-09-30 12:00", "2026-09-30 23:59", "2026-10-01 00:00"),
        ("1d", "2026-12-31 08:00", "2027-01-01 00:00:01", "2027-01-01 00:00"),
        ("1h", "2026-12-31 23:30", "2027-01-01 00:00", "2027-01-01 00:00"),
    ],
)
def test_slots_are_utc_multiples_of_the_period(
    every: str, created: str, now: str, due: str
) -> None:
    assert next_due(digest(every, created), None, ms(now)) == ms(due)


def test_the_idempotency_key_names_the_digest_and_its_slot() -> None:
    assert idempotency_key("d1", 1_790_000_100_000) == "digest:d1:1790000100000"
    assert idempotency_key("d1", 1) != idempotency_key("d1", 2) != idempotency_key("d2", 2)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"name": "", "channels": ["c1"], "every": "1h"}, "name"),
        ({"name": "   ", "channels": ["c1"], "every": "1h"}, "name"),
        ({"name": "x" * 81, "channels": ["c1"], "every": "1h"}, "name"),
        ({"name": "a\nb", "channels": ["c1"], "every": "1h"}, "name"),
        ({"name": "ok", "channels": [], "every": "1h"}, "channels"),
        ({"name": "ok", "channels": ["c1"] * 11, "every": "1h"}, "channels"),
        ({"name": "ok", "channels": ["c1", "c1"], "every": "1h"}, "channels"),
        ({"name": "ok", "channels": ["../etc"], "every": "1h"}, "channels"),
        ({"name": "ok", "channels": ["c1"], "every": "2h"}, "every"),
        ({"name": "ok", "channels": ["c1"], "every": "1h", "extra": 1}, "extra"),
        ({"name": "ok", "channels": "c1", "every": "1h"}, "channels"),
    ],
)
def test_bad_input_is_refused_naming_the_field(body: dict, named: str) -> None:
    with pytest.raises(ValidationError) as refused:
        DigestInput.model_validate(body)
    assert named in str(refused.value)


def test_a_section_not_computed_says_why_and_invents_nothing() -> None:
    errors = {"movers": "ValueError: no tickers", "signals": "ValueError: no candles"}
    title, body = compose_digest("Desk", ms("2026-09-21 11:00"), None, None, errors)
    assert title == "Desk — 2026-09-21 11:00 UTC"
    assert body == (
        "Top movers (24h change)\n"
        "  unavailable: ValueError: no tickers\n"
        "Signals (confluence)\n"
        "  unavailable: ValueError: no candles"
    )
    _, quiet = compose_digest("Desk", 0, {"gainers": [], "losers": []}, [])
    assert quiet.splitlines()[1:] == [
        "  Gainers: none",
        "  Losers: none",
        "Signals (confluence)",
        "  none: every symbol is neutral",
    ]
