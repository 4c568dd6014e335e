"""Derivatives positioning of one symbol: its linear perpetual swap's funding, open
interest, long/short account ratio and liquidations.

A spot symbol (``BTCUSDT``) has derivatives data when the exchange lists a linear
perpetual on the same pair (Bybit: ``BTC/USDT:USDT``). Units are the exchange's, as
ccxt gives them: the funding rate is a fraction per funding interval (0.0001 = 0.01 %
every 8 h on Bybit), open interest is in contracts (base units for a linear contract)
and its value in the quote currency, the long/short ratio is accounts long ÷ accounts
short. Histories are oldest first, as ``(epoch ms, value)`` pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Point = tuple[int, float]
"""(epoch ms, value)."""

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Liquidations:
    """Forced closes of positions seen on the exchange's stream over ``window_ms`` up to
    ``until_ms``: ``long_value`` (quote currency) of long positions liquidated (sell
    orders), ``short_value`` of shorts (buy orders), and how many of each."""

    window_ms: int
    until_ms: int
    long_value: float
    short_value: float
    long_count: int
    short_count: int

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready."""
        return {
            "window_ms": self.window_ms,
            "until_ms": self.until_ms,
            "long_value": self.long_value,
            "short_value": self.short_value,
            "long_count": self.long_count,
            "short_count": self.short_count,
        }


@dataclass(frozen=True, slots=True)
class Derivatives:
    """What the perpetual ``contract`` of canonical ``symbol`` says about positioning.

    Every value may be None (the exchange sent none usable); ``timestamp_ms`` is when
    the newest of them was read (epoch ms). ``funding_history``: settled funding rates;
    ``open_interest_history``: open interest (contracts) at regular intervals (hourly on
    Bybit); ``long_short_history``: the long/short account ratio at regular intervals.
    """

    symbol: str
    contract: str
    timestamp_ms: int
    funding_rate: float | None = None
    next_funding_time_ms: int | None = None
    open_interest: float | None = None
    open_interest_value: float | None = None
    long_short_ratio: float | None = None
    funding_history: tuple[Point, ...] = ()
    open_interest_history: tuple[Point, ...] = ()
    long_short_history: tuple[Point, ...] = ()
    liquidations: Liquidations | None = None
    open_interest_time_ms: int | None = None
    """When ``open_interest`` was measured (epoch ms); None: at ``timestamp_ms`` (the
    exchange's tickers). A source whose tickers carry no open interest and stands the
    newest history point in for it gives that point's time."""

    def open_interest_change_pct(self, hours: float) -> float | None:
        """Open interest now against ``hours`` ago, in percent (``(now / then − 1) ·
        100``): "now" is the current ``open_interest`` at ``open_interest_time_ms``
        (default ``timestamp_ms``), "then" the newest point of ``open_interest_history``
        at or before that time − ``hours``. None when the current open interest is None
        (unknown or refused: never computed from the history alone), without a point
        that old, or with a non-positive one."""
        at_ms = (
            self.timestamp_ms if self.open_interest_time_ms is None else self.open_interest_time_ms
        )
        return change_pct(self.open_interest_history, hours, self.open_interest, at_ms)


def change_pct(
    history: Sequence[Point], hours: float, current: float | None, at_ms: int
) -> float | None:
    """Percent change ``(current / then − 1) · 100`` of a series whose value at
    ``at_ms`` (epoch ms) is ``current``, against ``then``, the newest point of
    ``history`` (``(epoch ms, value)``, oldest first) at or before ``at_ms − hours``.
    None when ``current`` is None or no such positive point exists."""
    if current is None:
        return None
    then = None
    for stamp, value in reversed(history):
        if stamp <= at_ms - hours * HOUR_MS:
            then = value
            break
    if then is None or not then > 0:
        return None
    return (current / then - 1.0) * 100.0


@dataclass(frozen=True, slots=True)
class DerivativesRead:
    """One read of the derivatives of many symbols: ``by_symbol`` those that have data,
    ``unavailable`` why the others have none (no perpetual listed, a spot-only source,
    a failed call) — never invented. ``partial``: symbols of ``by_symbol`` some of whose
    histories failed to come (those are empty, their values None), with which and why
    (``"long/short history: exchange unavailable (HTTP 502)"``), for the caller to show."""

    by_symbol: Mapping[str, Derivatives] = field(default_factory=dict)
    unavailable: Mapping[str, str] = field(default_factory=dict)
    partial: Mapping[str, str] = field(default_factory=dict)
