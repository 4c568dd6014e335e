"""ccxt.pro against the loopback fake Bybit: an instance whose REST and stream URLs
point at the fake (spot markets only, as the service loads them)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import ccxt.pro

from app.market.sources.ccxt import CcxtMarketSource, override_api_urls
from app.market.sources.exchange_feed import ExchangeStreams
from app.market.sources.streaming import StreamingSource
from tools.fake_bybit import FakeBybit

# Eleven USDT pairs and one more: more than one Bybit spot subscribe request may carry.
STREAM_SYMBOLS = (
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "DOGEUSDT",
    "ADAUSDT",
    "DOTUSDT",
    "LTCUSDT",
    "LINKUSDT",
    "AVAXUSDT",
    "ATOMUSDT",
    "ETHBTC",
)


def pro_exchange(fake: FakeBybit, **config: Any) -> Any:
    """A ccxt.pro.bybit on ``fake`` (REST and the spot and linear streams); the caller
    closes it (``await exchange.close()``)."""
    options = {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}}
    exchange = ccxt.pro.bybit({"timeout": 5_000, "options": options, **config})
    exchange.urls["api"] = override_api_urls(exchange.urls["api"], fake.base_url)
    exchange.urls["api"]["ws"]["public"]["spot"] = fake.streams.url("spot")
    exchange.urls["api"]["ws"]["public"]["linear"] = fake.streams.url("linear")
    return exchange


def ccxt_symbol(name: str) -> str:
    """The ccxt spot symbol of a canonical USDT or BTC pair (``ETHBTC`` → ``ETH/BTC``)."""
    return f"{name[:-4]}/USDT" if name.endswith("USDT") else f"{name[:-3]}/BTC"


@contextlib.asynccontextmanager
async def loaded_pro_exchange(fake: FakeBybit) -> AsyncIterator[Any]:
    """``pro_exchange(fake)`` with its markets loaded, closed on exit."""
    made = pro_exchange(fake)
    await made.load_markets()
    try:
        yield made
    finally:
        await made.close()


async def started_streaming_source(
    fake: FakeBybit,
    symbols: Any,
    *,
    silent_after: float,
    clock: Any = None,
) -> StreamingSource:
    """A started ``StreamingSource`` on ``fake``: ccxt.pro Bybit REST with its
    ``ExchangeStreams`` (1m candles, books 5 deep, ``silent_after`` seconds of silence;
    ``clock``: the feed's epoch seconds, the wall clock by default); the caller closes it."""
    market = CcxtMarketSource("bybit", base_url=fake.base_url, streaming=True)
    timing = {} if clock is None else {"clock": clock}

    def build(rest: Any, listed: Any) -> ExchangeStreams:
        return ExchangeStreams(
            market,
            listed,
            backfill=rest.fetch_candles,
            candle_limits={"1m": 10},
            book_depth=5,
            silent_after=silent_after,
            **timing,
        )

    source = StreamingSource(market, build, symbols)
    await source.start()
    return source
