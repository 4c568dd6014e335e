"""Derivatives read on their own cadence, beside the refreshes: at most every
``every_seconds``, in the background (a snapshot takes the last finished read), the
last good read kept (and named in ``missing``) while reads fail, symbols without a
perpetual never counted as failures, a history that failed alone named too."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from app.market.errors import ExchangeUnavailable
from app.market.models.derivatives import Derivatives, DerivativesRead
from app.services.derivatives_collection import DerivativesCollector


class PerpetualsSource:
    """A source whose ``fetch_derivatives`` answers from ``funding`` (a symbol without
    an entry has no perpetual) or raises ``failure`` when set; counts the reads."""

    name = "perpetuals"

    def __init__(self, funding: dict[str, float]) -> None:
        self.funding = funding
        self.failure: Exception | None = None
        self.reads = 0

    async def fetch_derivatives(self, symbols: Sequence[str]) -> DerivativesRead:
        self.reads += 1
        if self.failure is not None:
            raise self.failure
        return DerivativesRead(
            by_symbol={
                s: Derivatives(s, f"{s[:-4]}/USDT:USDT", 1_000 * self.reads, funding_rate=rate)
                for s, rate in self.funding.items()
                if s in symbols
            },
            unavailable={s: "no linear perpetual" for s in symbols if s not in self.funding},
        )


async def test_read_at_most_every_cadence_and_cut_to_the_symbols_asked() -> None:
    source = PerpetualsSource({"BTCUSDT": 0.0001, "ETHUSDT": -0.0002})
    collector = DerivativesCollector(source, every_seconds=60)
    missing: dict[str, str] = {}
    first = await collector.read(["BTCUSDT", "ETHUSDT", "ETHBTC"], 0.0, missing)  # waited for
    again = await collector.read(["BTCUSDT", "ETHBTC"], 59.9, missing)
    assert source.reads == 1
    assert set(first.by_symbol) == {"BTCUSDT", "ETHUSDT"}
    assert set(again.by_symbol) == {"BTCUSDT"} and set(again.unavailable) == {"ETHBTC"}
    assert missing == {}  # no perpetual is not a failure
    await collector.read(["BTCUSDT"], 60.0, missing)
    await collector.settled()
    assert source.reads == 2


async def test_a_failed_read_keeps_the_last_and_names_what_it_covered() -> None:
    source = PerpetualsSource({"BTCUSDT": 0.0001})
    collector = DerivativesCollector(source, every_seconds=60)
    await collector.read(["BTCUSDT", "ETHBTC"], 0.0, {})
    await collector.settled()
    source.failure = ExchangeUnavailable("bybit: 503")
    await collector.read(["BTCUSDT", "ETHBTC"], 60.0, {})
    await collector.settled()
    missing: dict[str, str] = {}
    kept = await collector.read(["BTCUSDT", "ETHBTC"], 61.0, missing)
    assert kept.by_symbol["BTCUSDT"].timestamp_ms == 1_000  # the older read, as it was
    assert missing == {"BTCUSDT/derivatives": "bybit: 503"}
    later: dict[str, str] = {}
    await collector.read(["BTCUSDT", "ETHBTC"], 90.0, later)  # not due: no new try
    assert source.reads == 2 and later == missing
    source.failure = None
    await collector.read(["BTCUSDT", "ETHBTC"], 120.0, {})
    await collector.settled()
    recovered: dict[str, str] = {}
    await collector.read(["BTCUSDT", "ETHBTC"], 121.0, recovered)
    assert recovered == {} and collector.error is None


async def test_a_source_without_derivatives_says_so_for_every_symbol() -> None:
    class SpotOnly:
        name = "spot"

    collector = DerivativesCollector(SpotOnly())  # type: ignore[arg-type]
    await collector.read(["BTCUSDT"], 0.0, {})
    await collector.settled()
    read = await collector.read(["BTCUSDT"], 1.0, {})
    assert read.by_symbol == {} and "no derivatives" in read.unavailable["BTCUSDT"]


def test_the_cadence_must_be_positive() -> None:
    with pytest.raises(ValueError, match="every_seconds"):
        DerivativesCollector(PerpetualsSource({}), every_seconds=0)  # type: ignore[arg-type]


async def test_a_hanging_read_holds_back_no_snapshot_and_one_runs_at_a_time() -> None:
    gate = asyncio.Event()

    class Hanging(PerpetualsSource):
        async def fetch_derivatives(self, symbols: Sequence[str]) -> DerivativesRead:
            await gate.wait()
            return await super().fetch_derivatives(symbols)

    source = Hanging({"BTCUSDT": 0.0001})
    collector = DerivativesCollector(source, every_seconds=60)
    # the first read is waited for FIRST_READ_WAIT_SECONDS at most, then left running
    assert (await collector.read(["BTCUSDT"], 0.0, {})).by_symbol == {}
    assert (await collector.read(["BTCUSDT"], 120.0, {})).by_symbol == {}  # due, still one
    gate.set()
    await collector.settled()
    assert source.reads == 1
    assert set((await collector.read(["BTCUSDT"], 121.0, {})).by_symbol) == {"BTCUSDT"}
    await collector.close()


async def test_a_history_that_failed_alone_is_named() -> None:
    class Partial(PerpetualsSource):
        async def fetch_derivatives(self, symbols: Sequence[str]) -> DerivativesRead:
            read = await super().fetch_derivatives(symbols)
            partial = {"BTCUSDT": "long/short history: exchange unavailable (HTTP 502)"}
            return DerivativesRead(read.by_symbol, read.unavailable, partial)

    collector = DerivativesCollector(Partial({"BTCUSDT": 0.0001}))
    await collector.read(["BTCUSDT"], 0.0, {})
    await collector.settled()
    missing: dict[str, str] = {}
    read = await collector.read(["BTCUSDT"], 1.0, missing)
    assert set(read.by_symbol) == {"BTCUSDT"}  # the row stays
    assert missing == {"BTCUSDT/derivatives": "long/short history: exchange unavailable (HTTP 502)"}
