"""Choose the market source the settings ask for. A real exchange is wrapped in
GuardedSource: timeouts, bounded jittered retries and a breaker per operation family."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.market.sources.base import MarketSource
from app.settings import Settings

if TYPE_CHECKING:
    from app.market.sources.ccxt import CcxtMarketSource
    from app.market.sources.guarded import CallObserver
    from app.market.sources.simulated import SimulatedMarket

log = logging.getLogger(__name__)


def make_source(settings: Settings, observers: Sequence[CallObserver] = ()) -> MarketSource:
    """The simulated market, or the ccxt exchange the settings name inside a
    GuardedSource that tells ``observers`` of every call."""
    if settings.exchange == "simulated":
        from app.market.sources.simulated import SimulatedMarket

        market = SimulatedMarket(seed=settings.seed)
        if settings.streams == "off":
            return market
        return _simulated_streams(settings, market)
    from app.market.sources.ccxt import CcxtMarketSource  # ccxt is slow to import
    from app.market.sources.guarded import GuardedSource

    exchange = CcxtMarketSource(
        settings.exchange,
        base_url=settings.exchange_url,
        timeout_ms=int(settings.exchange_timeout_seconds * 1000),
        symbols_hint=settings.symbols,
        rate_limit_ms=settings.exchange_rate_limit_ms,
        ws_url=settings.exchange_ws_url,
        streaming=settings.streams == "on",
    )
    # ccxt times out first; the guard's bound only catches what ccxt's does not.
    guarded = GuardedSource(
        exchange, timeout_seconds=settings.exchange_timeout_seconds + 1, observers=observers
    )
    return _with_streams(settings, exchange, guarded)


def _with_streams(
    settings: Settings, exchange: CcxtMarketSource, guarded: MarketSource
) -> MarketSource:
    """The guarded REST source behind the exchange's streams, when they are on and the
    exchange's ccxt class has them (else polled, with one line saying so)."""
    if settings.streams == "off":
        return guarded
    from app.market.sources.exchange_feed import exchange_feed_factory, supports_streams
    from app.market.sources.streaming import StreamingSource

    if not supports_streams(exchange):
        log.warning("%s has no public streams in ccxt.pro: polling REST", settings.exchange)
        return guarded
    feed = exchange_feed_factory(
        exchange,
        candle_limits=settings.candle_limits,
        book_depth=settings.order_book_depth,
        silent_after=settings.stream_silence_seconds,
    )
    return StreamingSource(guarded, feed, settings.symbols)


def _simulated_streams(settings: Settings, market: SimulatedMarket) -> MarketSource:
    """The simulated market with its ticks pushed like an exchange's streams (several
    a second), so the embedded default moves as a streaming exchange does."""
    from app.market.sources.simulated_feed import SimulatedFeed
    from app.market.sources.streaming import StreamingSource

    def feed(_source: MarketSource, symbols: Sequence[str]) -> SimulatedFeed:
        return SimulatedFeed(market, symbols)

    return StreamingSource(market, feed, settings.symbols)
