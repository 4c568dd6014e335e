"""The outbound destination policy: address classes, host spellings, the allow-list,
URL checks with a resolver under the test's control, and masking. Pure: nothing here
opens a connection or asks a real DNS server."""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.services.alerts.destinations import (
    DestinationPolicy,
    DestinationRefused,
    classify,
    mask_url,
    parse_numeric_host,
)

POLICY = DestinationPolicy()
bounded = settings(derandomize=True, max_examples=400, deadline=None, database=None)


def table_resolver(table: dict[str, list[str]]):
    """A resolver that answers from ``table`` (OSError for other names)."""

    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"{host}: no such host")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared address space"),
        ("100.127.255.255", "shared address space"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "non-global"),  # documentation
        ("198.18.0.1", "non-global"),  # benchmarking
        ("2001:db8::1", "non-global"),
        ("192.0.0.9", "IETF protocol"),
        ("3fff::1", "documentation"),
        ("64:ff9b:1::1", "reserved"),  # local-use NAT64 (RFC 8215), inside ::/8
        ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, a loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped form of 169.254.169.254, a link-local"),
        ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1, a private"),
        ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254"),
        ("2002:7f00:1::", "6to4 form of 127.0.0.1"),
        ("2002:c0a8:101::1", "6to4 form of 192.168.1.1"),
        ("::7f00:1", "reserved"),  # IPv4-compatible (deprecated)
        ("2001::1", "non-global"),  # Teredo
    ],
)
def test_non_global_addresses_are_refused_with_their_class(address: str, reason: str) -> None:
    refusal = classify(ipaddress.ip_address(address))
    assert refusal is not None and reason in refusal, refusal


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "93.184.215.14", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_global_addresses_pass(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None


ipv4 = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(IPv6Address)
# Random IPv6 addresses are nearly all in 2000::/3 or reserved space; mix in the
# special blocks so each gets examples.
special_v6 = st.sampled_from(
    ["::", "::ffff:0:0", "64:ff9b::", "2002::", "fe80::", "fc00::", "ff00::", "2001::", "100::"]
).flatmap(
    lambda base: st.integers(0, 2**32 - 1).map(lambda n: IPv6Address(int(IPv6Address(base)) + n))
)
any_address = st.one_of(ipv4, ipv6, special_v6)


@bounded
@given(any_address)
def test_whatever_ipaddress_does_not_call_global_is_refused(address) -> None:
    if not address.is_global or address.is_multicast:
        assert classify(address) is not None


@bounded
@given(ipv4)
def test_an_ipv4_address_is_allowed_exactly_when_global_and_unicast(address) -> None:
    extra = any(address in ipaddress.ip_network(n) for n in ("192.0.0.0/24", "192.88.99.0/24"))
    expected = address.is_global and not address.is_multicast and not extra
    assert (classify(address) is None) == expected


@bounded
@given(ipv4)
def test_ipv6_forms_embedding_ipv4_are_judged_by_the_ipv4_address(v4) -> None:
    n = int(v4)
    mapped = IPv6Address((0xFFFF << 32) | n)
    nat64 = IPv6Address((0x64FF9B << 96) | n)
    sixtofour = IPv6Address((0x2002 << 112) | (n << 80))
    refused = classify(v4) is not None
    assert (classify(mapped) is not None) == refused
    assert (classify(nat64) is not None) == refused
    if refused:
        assert classify(sixtofour) is not None


@bounded
@given(ipv4, st.integers(8, 32))
def test_allow_listed_networks_pass(address, prefix: int) -> None:
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    policy = DestinationPolicy((str(network),))
    assert policy.refusal(address) is None
    assert policy.refusal(IPv6Address((0xFFFF << 32) | int(address))) is None  # mapped form


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # decimal
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("0x7f.1", "127.0.0.1"),  # hex, short
        ("0X7F000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("127.0.0.1.", "127.0.0.1"),  # trailing dot
        ("0", "0.0.0.0"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("[0:0:0:0:0:ffff:7f00:1]", "::ffff:7f00:1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_numeric_spellings_are_read_as_inet_aton_does(host: str, address: str) -> None:
    assert parse_numeric_host(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["hooks.example.com", "1.example", "0x7f.example", "a-1"])
def test_host_names_are_not_numbers(host: str) -> None:
    assert parse_numeric_host(host) is None


@pytest.mark.parametrize("host", ["1.2.3.999", "08.0.0.1", "1.2.3.4.5", "4294967296", "[::g]"])
def test_numeric_looking_hosts_that_are_no_address_are_refused(host: str) -> None:
    with pytest.raises(DestinationRefused, match="not a valid"):
        POLICY.check_literal(host)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://127.0.0.1:9090/-/quit", "127.0.0.1 is a loopback address"),
        ("http://2130706433/", "2130706433 (127.0.0.1) is a loopback address"),
        ("http://0177.0.0.1/", "(127.0.0.1) is a loopback"),
        ("http://0x7f.1/", "(127.0.0.1) is a loopback"),
        ("http://127.1:6379/", "(127.0.0.1) is a loopback"),
        ("http://[::1]:11211/", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped form of 127.0.0.1"),
        ("http://[0:0:0:0:0:ffff:7f00:1]/", "IPv4-mapped form of 127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://localhost/", "localhost is a loopback name"),
        ("http://localhost./", "localhost is a loopback name"),
        ("http://LOCALHOST:8080/", "localhost is a loopback name"),
        ("http://api.localhost/", "api.localhost is a loopback name"),
        ("http://good.example@127.0.0.1/", "127.0.0.1 is a loopback"),
        ("http://good.example:pw@10.0.0.1/", "10.0.0.1 is a private address"),
        ("HTTP://100.64.0.1/", "shared address space"),
        ("http://0.0.0.0:8003/", "unspecified"),
        ("http://224.0.0.251/", "multicast"),
        ("http://internal.test/", "internal.test resolves to 10.0.0.7, a private address"),
        ("http://mixed.test/", "mixed.test resolves to 127.0.0.1"),  # one bad address is enough
        ("http://meta.test./", "resolves to 169.254.169.254"),
        ("http://nowhere.test/", "cannot be resolved"),
        ("ftp://hooks.example.com/", "only http:// and https://"),
        ("http://a b/", "not a valid host name"),
        ("http:///path", "only http:// and https://"),
    ],
)
async def test_urls_are_refused_naming_why(url: str, named: str) -> None:
    resolve = table_resolver(
        {
            "internal.test": ["10.0.0.7"],
            "mixed.test": ["93.184.215.14", "127.0.0.1"],
            "meta.test": ["169.254.169.254"],
            "meta.test.": ["169.254.169.254"],
        }
    )
    with pytest.raises(DestinationRefused, match=re.escape(named)):
        await POLICY.check_url(url, resolve)


async def test_public_destinations_and_allow_listed_ones_pass() -> None:
    resolve = table_resolver({"hooks.test": ["93.184.215.14", "2606:2800:21f:cb07::1"]})
    await POLICY.check_url("https://hooks.test/T0/B0/secret?x=1", resolve)
    await POLICY.check_url("http://93.184.215.14:8443/x", resolve)  # any port
    allowed = DestinationPolicy(("alertmanager", "127.0.0.1", "10.0.0.0/8", "fd00::/8"))
    internal = table_resolver({"alertmanager": ["172.18.0.5"], "svc.test": ["10.9.8.7"]})
    for url in (
        "http://alertmanager:9093/api/v2/alerts",  # by name, whatever it resolves to
        "http://ALERTMANAGER./x",
        "http://127.0.0.1:8080/x",
        "http://0x7f000001/x",  # the same address in another spelling
        "http://[::ffff:127.0.0.1]/x",
        "http://10.1.2.3/x",
        "http://svc.test/x",  # resolves into an allowed network
        "http://[fd00::5]/x",
    ):
        await allowed.check_url(url, internal)
    with pytest.raises(DestinationRefused, match=r"127\.0\.0\.2 is a loopback"):
        await allowed.check_url("http://127.0.0.2/", internal)  # only the listed address


def test_the_allow_list_syntax() -> None:
    policy = DestinationPolicy(("Alertmanager.", "10.0.0.7", "192.168.0.0/16", "fd00::/8"))
    assert policy.names == {"alertmanager"}
    assert [str(n) for n in policy.networks] == ["10.0.0.7/32", "192.168.0.0/16", "fd00::/8"]
    for bad in ("10.0.0.0/33", "http://x", "a b", "*.example.com"):
        with pytest.raises(ValueError, match="VIRTUOSO_WEBHOOK_ALLOW"):
            DestinationPolicy((bad,))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XXXXsecret", "https://hooks.slack.com/…"),
        ("https://user:pw@Hooks.Example.com:8443/x?token=abc#f", "https://hooks.example.com/…"),
        ("http://[::1]:5000/x", "http://[::1]/…"),
        ("https://discord.com", "https://discord.com/…"),
        ("not a url", "(invalid URL)"),
        (None, None),
    ],
)
def test_masking_keeps_scheme_and_host_only(url: str | None, shown: str | None) -> None:
    assert mask_url(url) == shown
