"""Choose the market source the settings ask for. A real exchange is wrapped in
GuardedSource: timeouts, bounded jittered retries and a breaker per operation family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.market.sources.base import MarketSource
from app.settings import Settings

if TYPE_CHECKING:
    from app.market.sources.guarded import CallObserver


def make_source(settings: Settings, observers: Sequence[CallObserver] = ()) -> MarketSource:
    """The simulated market, or the ccxt exchange the settings name inside a
    GuardedSource that tells ``observers`` of every call."""
    if settings.exchange == "simulated":
        from app.market.sources.simulated import SimulatedMarket

        return SimulatedMarket(seed=settings.seed)
    from app.market.sources.ccxt import CcxtMarketSource  # ccxt is slow to import
    from app.market.sources.guarded import GuardedSource

    exchange = CcxtMarketSource(
        settings.exchange,
        base_url=settings.exchange_url,
        timeout_ms=int(settings.exchange_timeout_seconds * 1000),
        symbols_hint=settings.symbols,
        rate_limit_ms=settings.exchange_rate_limit_ms,
    )
    # ccxt times out first; the guard's bound only catches what ccxt's does not.
    return GuardedSource(
        exchange, timeout_seconds=settings.exchange_timeout_seconds + 1, observers=observers
    )
