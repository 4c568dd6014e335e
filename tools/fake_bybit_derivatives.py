"""Bybit v5 linear perpetual market data for the loopback fake exchange (``FakeBybit``).

Every served symbol quoted in ``LINEAR_QUOTES`` (``BTCUSDT``…) is also a linear
perpetual with the same id (a spot-only pair such as ``ETHBTC`` has none). Answers are
in Bybit's formats, as ``ccxt.async_support.bybit`` parses them:

- ``GET /v5/market/tickers?category=linear``: the perpetuals' tickers, with
  ``fundingRate``, ``nextFundingTime``, ``openInterest`` (contracts),
  ``openInterestValue`` (quote), ``markPrice`` and ``indexPrice`` (the spot price);
- ``GET /v5/market/funding/history``: settled rates (``fundingRateTimestamp``,
  ``fundingRate``) every 8 h (``fundingInterval`` 480), newest first; ``limit`` [1, 200]
  default 200; ``startTime`` alone is refused, as Bybit does;
- ``GET /v5/market/open-interest``: ``openInterest`` at ``intervalTime`` steps, newest
  first; ``limit`` [1, 200] default 50; ``nextPageCursor`` (the next page's end time);
- ``GET /v5/market/account-ratio``: ``buyRatio``/``sellRatio`` (accounts long and
  short) at ``period`` steps, newest first; ``limit`` [1, 500] default 50.

State is deterministic for the fake's seed and its clock (``fake.now_ms()``): the
funding rate of each 8-hour period, open interest as a smooth function of time, the
ratio per period bucket. Controls (data, kept across ``clear_faults``):
``set_funding`` (the predicted rate, the next funding time, the settled history),
``set_open_interest`` (now, and a ramp back over 1 h and 24 h so the changes are exact)
and ``set_long_short``. A value given as a string is served verbatim (``"NaN"``,
``"-5"``: bad data as an exchange may send it). The fake's faults (``fail_next``,
``http_error_next``…) apply to these paths as to every other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tools.fake_bybit import (
    LINEAR_QUOTES,
)

if TYPE_CHECKING:
    from tools.fake_bybit import FakeBybit

FUNDING_HISTORY_PATH = "/v5/market/funding/history"
OPEN_INTEREST_PATH = "/v5/market/open-interest"
ACCOUNT_RATIO_PATH = "/v5/market/account-ratio"

HOUR_MS = 3_600_000
FUNDING_INTERVAL_MS = 8 * HOUR_MS
"""Bybit's ``fundingInterval`` 480 (minutes), as ``_linear_instrument`` lists it."""
PERIOD_MS: dict[str, int] = {
    "5min": 300_000,
    "15min": 900_000,
    "30min": 1_800_000,
    "1h": HOUR_MS,
    "4h": 4 * HOUR_MS,
    "1d": 24 * HOUR_MS,
}
"""Bybit's ``intervalTime`` (open interest) and ``period`` (account ratio) values."""
FUNDING_LIMITS = (200, 200)
OPEN_INTEREST_LIMITS = (50, 200)
RATIO_LIMITS = (50, 500)
"""(default, max) ``limit`` of each history endpoint."""

Value = float | str
"""A number; a string is served verbatim (bad data on purpose)."""


def _text(value: Value, decimals: int) -> str:
    """Bybit's number strings: ``value`` rounded to ``decimals``, trailing zeros cut."""
    if isinstance(value, str):
        return value
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


@dataclass
class _Ramp:
    """Open interest set by ``set_open_interest``: ``now`` from ``anchor_ms`` (an hour
    boundary) on, ``ago_1h`` an hour before, ``ago_24h`` a day before and earlier;
    linear in between."""

    anchor_ms: int
    now: Value
    ago_1h: float
    ago_24h: float

    def at(self, t_ms: int) -> float:
        now = float(self.now) if not isinstance(self.now, str) else self.ago_1h
        if t_ms >= self.anchor_ms:
            return now
        if t_ms >= self.anchor_ms - HOUR_MS:
            share = (self.anchor_ms - t_ms) / HOUR_MS
            return now + (self.ago_1h - now) * share
        share = min(1.0, (self.anchor_ms - HOUR_MS - t_ms) / (23 * HOUR_MS))
        return self.ago_1h + (self.ago_24h - self.ago_1h) * share


class BybitDerivatives:
    """The linear perpetual side of a ``FakeBybit`` (see the module docstring)."""

    def __init__(self, fake: FakeBybit) -> None:
        self.fake = fake
        self._funding: dict[str, tuple[int, Value]] = {}  # symbol → (from ms, rate)
        self._next_funding: dict[str, int] = {}
        self._settled: dict[str, dict[int, Value]] = {}  # symbol → settlement ms → rate
        self._oi: dict[str, _Ramp] = {}
        self._oi_value: dict[str, str] = {}
        self._ratio: dict[str, tuple[int, Value, Value]] = {}  # (from ms, buy, sell)

    def install(self, app: web.Application) -> None:
        """Route the history endpoints of ``app`` here (the linear tickers come through
        the fake's ``/v5/market/tickers`` handler: ``linear_tickers``)."""
        from tools.fake_bybit_derivatives_http import DerivativesEndpoints

        self._endpoints = DerivativesEndpoints(self)
        self._endpoints.install(app)

    async def linear_tickers(self, request: web.Request) -> dict[str, Any]:
        """``/v5/market/tickers?category=linear``: every perpetual, or ``symbol``'s."""
        from tools.fake_bybit_derivatives_http import DerivativesEndpoints

        return await DerivativesEndpoints(self).linear_tickers(request)

    def is_perpetual(self, symbol: str) -> bool:
        """Whether ``symbol`` is served as a linear perpetual now."""
        spec = self.fake._specs.get(symbol)
        return spec is not None and spec.quote in LINEAR_QUOTES and self.fake.is_served(symbol)

    def perpetuals(self) -> list[str]:
        """The served linear perpetuals, in the fake's symbol order."""
        return [s for s in self.fake.symbols if self.is_perpetual(s)]

    # ----- controls ---------------------------------------------------------------

    def set_funding(
        self,
        symbol: str,
        rate: Value,
        *,
        next_time_ms: int | None = None,
        settled: Sequence[Value] | None = None,
    ) -> None:
        """From now on ``symbol``'s predicted funding rate (tickers) is ``rate`` (a
        fraction per 8 h); ``next_time_ms`` replaces the next funding time (default:
        the next 8-hour boundary); ``settled``: the newest settled rates, oldest first,
        the last one at the latest settlement before now."""
        self._funding[symbol] = (self.fake.now_ms(), rate)
        if next_time_ms is not None:
            self._next_funding[symbol] = next_time_ms
        if settled is not None:
            newest = self.fake.now_ms() // FUNDING_INTERVAL_MS
            first = newest - len(settled) + 1
            history = self._settled.setdefault(symbol, {})
            for k, value in enumerate(settled, start=first):
                history[k * FUNDING_INTERVAL_MS] = value

    def set_open_interest(
        self,
        symbol: str,
        contracts: Value,
        *,
        ago_1h: float | None = None,
        ago_24h: float | None = None,
        value: str | None = None,
    ) -> None:
        """``symbol``'s open interest is ``contracts`` now (tickers, and the history from
        the current hour's boundary on), ``ago_1h`` at the boundary an hour earlier and
        ``ago_24h`` a day earlier and before (linear in between; defaults: flat). So
        ``(contracts / ago_1h − 1) · 100`` is exactly the 1 h change. ``value``: the
        ticker's ``openInterestValue`` verbatim (default: contracts × mark price)."""
        anchor = self.fake.now_ms() // HOUR_MS * HOUR_MS
        current = contracts if not isinstance(contracts, str) else (ago_1h or 0.0)
        day = ago_24h if ago_24h is not None else (ago_1h if ago_1h is not None else current)
        hour = ago_1h if ago_1h is not None else current + (day - current) / 24
        self._oi[symbol] = _Ramp(anchor, contracts, float(hour), float(day))
        if value is not None:
            self._oi_value[symbol] = value
        else:
            self._oi_value.pop(symbol, None)

    def set_long_short(
        self, symbol: str, buy_ratio: Value, sell_ratio: Value | None = None
    ) -> None:
        """From the current period on (every ``period``), ``symbol``'s accounts are
        ``buy_ratio`` long and ``sell_ratio`` (default ``1 − buy_ratio``) short."""
        if sell_ratio is None:
            sell_ratio = 1.0 - float(buy_ratio)
        self._ratio[symbol] = (self.fake.now_ms(), buy_ratio, sell_ratio)

    # ----- state ------------------------------------------------------------------

    def funding_rate(self, symbol: str) -> str:
        """The predicted rate of the current funding period, as the tickers send it."""
        override = self._funding.get(symbol)
        if override is not None:
            return _text(override[1], 8)
        return _text(self._generated_rate(symbol, self.next_funding_time(symbol)), 8)

    def next_funding_time(self, symbol: str) -> int:
        """Epoch ms of the next settlement (the next 8-hour boundary after now)."""
        if symbol in self._next_funding:
            return self._next_funding[symbol]
        return (self.fake.now_ms() // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS

    def settled_rate(self, symbol: str, at_ms: int) -> str:
        """The rate settled at ``at_ms`` (an 8-hour boundary)."""
        override = self._settled.get(symbol, {}).get(at_ms)
        if override is not None:
            return _text(override, 8)
        return _text(self._generated_rate(symbol, at_ms), 8)

    def open_interest(self, symbol: str, at_ms: int | None = None) -> str:
        """Open interest (contracts) at ``at_ms`` (default now), as Bybit sends it."""
        at = self.fake.now_ms() if at_ms is None else at_ms
        ramp = self._oi.get(symbol)
        if ramp is not None and at_ms is None and isinstance(ramp.now, str):
            return ramp.now
        amount = ramp.at(at) if ramp is not None else self._generated_oi(symbol, at)
        return _text(round(amount, 3), 3)

    def open_interest_value(self, symbol: str) -> str:
        """``openInterestValue``: contracts × mark price (quote), or the set value."""
        if symbol in self._oi_value:
            return self._oi_value[symbol]
        try:
            amount = float(self.open_interest(symbol))
        except ValueError:
            return ""
        return _text(amount * float(self.mark_price(symbol)), 2)

    def mark_price(self, symbol: str) -> str:
        """The perpetual's mark (and index) price: the spot ticker's last price."""
        return self.fake.tickers[symbol]["lastPrice"]

    def long_short(self, symbol: str, period: str, at_ms: int) -> tuple[str, str]:
        """(buyRatio, sellRatio) of the ``period`` bucket starting at ``at_ms``."""
        override = self._ratio.get(symbol)
        step = PERIOD_MS[period]
        if override is not None and at_ms >= override[0] // step * step:
            return _text(override[1], 4), _text(override[2], 4)
        wave = 0.12 * math.sin(at_ms / (13 * HOUR_MS) + self._phase(symbol))
        noise = self.fake._rng("ratio", symbol, period, at_ms).uniform(-0.01, 0.01)
        buy = round(0.5 + wave + noise, 4)
        return _text(buy, 4), _text(1 - buy, 4)

    def linear_ticker(self, symbol: str) -> dict[str, str]:
        """``symbol``'s linear ticker as ``/v5/market/tickers?category=linear`` lists it."""
        spot = self.fake.tickers[symbol]
        mark = self.mark_price(symbol)
        return {
            "symbol": symbol,
            "lastPrice": spot["lastPrice"],
            "indexPrice": mark,
            "markPrice": mark,
            "prevPrice24h": spot["prevPrice24h"],
            "price24hPcnt": spot["price24hPcnt"],
            "highPrice24h": spot["highPrice24h"],
            "lowPrice24h": spot["lowPrice24h"],
            "prevPrice1h": spot["lastPrice"],
            "openInterest": self.open_interest(symbol),
            "openInterestValue": self.open_interest_value(symbol),
            "turnover24h": spot["turnover24h"],
            "volume24h": spot["volume24h"],
            "fundingRate": self.funding_rate(symbol),
            "nextFundingTime": str(self.next_funding_time(symbol)),
            "predictedDeliveryPrice": "",
            "basisRate": "",
            "deliveryFeeRate": "",
            "deliveryTime": "0",
            "ask1Size": spot["ask1Size"],
            "bid1Price": spot["bid1Price"],
            "ask1Price": spot["ask1Price"],
            "bid1Size": spot["bid1Size"],
            "basis": "",
            "preOpenPrice": "",
            "preQty": "",
            "curPreListingPhase": "",
        }

    # ----- rows -----------------------------------------------------------------------

    def funding_rows(
        self, symbol: str, *, limit: int = 200, end: int | None = None, start: int | None = None
    ) -> list[dict[str, str]]:
        """Exactly what ``/v5/market/funding/history`` serves, newest first."""
        times = _steps(FUNDING_INTERVAL_MS, self.fake.now_ms(), limit, start, end)
        return [
            {
                "symbol": symbol,
                "fundingRate": self.settled_rate(symbol, t),
                "fundingRateTimestamp": str(t),
            }
            for t in times
        ]

    def open_interest_rows(
        self,
        symbol: str,
        interval: str,
        *,
        limit: int = 50,
        end: int | None = None,
        start: int | None = None,
    ) -> list[dict[str, str]]:
        """Exactly the ``list`` of ``/v5/market/open-interest``, newest first."""
        times = _steps(PERIOD_MS[interval], self.fake.now_ms(), limit, start, end)
        return [
            {"openInterest": f"{float(self.open_interest(symbol, t)):.8f}", "timestamp": str(t)}
            for t in times
        ]

    def ratio_rows(
        self,
        symbol: str,
        period: str,
        *,
        limit: int = 50,
        end: int | None = None,
        start: int | None = None,
    ) -> list[dict[str, str]]:
        """Exactly the ``list`` of ``/v5/market/account-ratio``, newest first."""
        times = _steps(PERIOD_MS[period], self.fake.now_ms(), limit, start, end)
        rows = []
        for t in times:
            buy, sell = self.long_short(symbol, period, t)
            rows.append({"symbol": symbol, "buyRatio": buy, "sellRatio": sell, "timestamp": str(t)})
        return rows

    # ----- generated data -----------------------------------------------------------------

    def _phase(self, symbol: str) -> float:
        return self.fake._rng("phase", symbol).uniform(0, 2 * math.pi)

    def _generated_rate(self, symbol: str, at_ms: int) -> float:
        """The funding rate settled at ``at_ms``: around 0.01 % per 8 h, drifting."""
        k = at_ms // FUNDING_INTERVAL_MS
        wave = 0.00015 * math.sin(k / 5 + self._phase(symbol))
        noise = self.fake._rng("funding", symbol, k).uniform(-0.00003, 0.00003)
        return round(0.0001 + wave + noise, 6)

    def _generated_oi(self, symbol: str, at_ms: int) -> float:
        """Open interest (contracts) at ``at_ms``: a seeded level worth 30 M–3 G of the
        quote at the symbol's price, moving a few percent over hours."""
        spec = self.fake._specs[symbol]
        level = 10 ** self.fake._rng("oi", symbol).uniform(7.5, 9.5) / spec.price
        phase = self._phase(symbol)
        wave = 0.06 * math.sin(at_ms / (31 * HOUR_MS) + phase) + 0.02 * math.sin(
            at_ms / (5 * HOUR_MS)
        )
        noise = self.fake._rng("oi", symbol, at_ms // 300_000).uniform(-0.002, 0.002)
        return level * (1 + wave + noise)


def _steps(step: int, now_ms: int, limit: int, start: int | None, end: int | None) -> list[int]:
    """Bucket start times (ms), newest first: the newest ``limit`` at or before ``end``
    (default now) and not before ``start``."""
    newest = min(now_ms if end is None else end, now_ms) // step
    first = newest - limit + 1
    if start is not None:
        first = max(first, -(-start // step))
    return [k * step for k in range(newest, first - 1, -1)]
