"""ccxt and ccxt.pro against the loopback fake Bybit: a ccxt.pro instance whose REST and
stream URLs point at the fake (spot markets only, as the service loads them), the REST
source and the streaming source on it (these with ccxt's limiter at loopback speed)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import ccxt.pro
import pytest
from ccxt.async_support.base.exchange import Exchange as AsyncExchange

from app.market.sources.ccxt import CcxtMarketSource, override_api_urls
from app.market.sources.exchange_feed import ExchangeStreams
from app.market.sources.streaming import StreamingSource
from tests.conftest import FAKE_EXCHANGE_RATE_LIMIT_MS
from tools.fake_bybit import FakeBybit

LOOPBACK_RATE_LIMIT_MS = float(FAKE_EXCHANGE_RATE_LIMIT_MS)
"""ccxt's ``rateLimit`` (ms per unit of cost) against the loopback fake: 5 ms per Bybit
market call instead of ccxt's 100 ms. The limiter still runs; its own tests keep
Bybit's value."""

PATIENT_TIMEOUT_MS = 10_000
"""ccxt's request timeout against the loopback fake where a test is not about timeouts:
a busy machine can hold a loopback answer past a few seconds."""


def close_without_tls_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    """ccxt's ``close`` sleeps 250 ms (``timeout_on_exit``) so that aiohttp's TLS
    transports can close; the loopback fake speaks plain HTTP and WebSocket, so for the
    rest of the test every ccxt exchange (a source's, an app's) closes at once."""
    monkeypatch.setattr(AsyncExchange, "timeout_on_exit", 0)


def loopback_source(base_url: str, **options: Any) -> CcxtMarketSource:
    """``CcxtMarketSource`` on Bybit's REST at ``base_url`` (the loopback fake), its
    limiter at ``LOOPBACK_RATE_LIMIT_MS`` and its requests timing out after
    ``PATIENT_TIMEOUT_MS`` unless ``options`` (the source's other arguments) say."""
    options = {"timeout_ms": PATIENT_TIMEOUT_MS} | options
    return CcxtMarketSource(
        "bybit", base_url=base_url, rate_limit_ms=LOOPBACK_RATE_LIMIT_MS, **options
    )


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
    """A ccxt.pro.bybit on ``fake`` (REST and the spot and linear streams; ccxt's own
    spacing of requests and subscriptions); the caller closes it
    (``await exchange.close()``)."""
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
    resubscribe_after: float | None = None,
    clock: Any = None,
) -> StreamingSource:
    """A started ``StreamingSource`` on ``fake``: ccxt.pro Bybit REST with its
    ``ExchangeStreams`` (1m candles, books 5 deep, ``silent_after`` seconds of silence,
    ``resubscribe_after`` seconds of a ticker or book stall, three times the silence by
    default; ``clock``: the feed's epoch seconds, the wall clock by default); the caller
    closes it."""
    market = loopback_source(fake.base_url, streaming=True)
    timing = {} if clock is None else {"clock": clock}

    def build(rest: Any, listed: Any) -> ExchangeStreams:
        return ExchangeStreams(
            market,
            listed,
            backfill=rest.fetch_candles,
            candle_limits={"1m": 10},
            book_depth=5,
            silent_after=silent_after,
            resubscribe_after=resubscribe_after,
            **timing,
        )

    source = StreamingSource(market, build, symbols)
    await source.start()
    return source
