"""The 24-hour ticker of one symbol."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ticker:
    """24-hour rolling statistics of one symbol. Volumes: base units and quote (USD) units.

    ``last`` is always a positive price: a symbol without one has no Ticker (the
    snapshot names it in ``unpriced``). ``change_24h_pct`` is NaN when unknown."""

    symbol: str
    last: float
    bid: float
    ask: float
    open_24h: float
    high_24h: float
    low_24h: float
    change_24h_pct: float
    base_volume_24h: float
    quote_volume_24h: float
    timestamp_ms: int
    missing: tuple[str, ...] = ()
    """Fields the exchange sent no usable value for (``bid``, ``ask``, ``high_24h``,
    ``low_24h``, ``change_24h``, ``volume_24h``): their values here are fallbacks (see
    ``app.market.sources.ccxt.ticker_from_ccxt``) and are shown as null."""
