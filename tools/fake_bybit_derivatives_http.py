"""The HTTP side of the fake Bybit's linear perpetuals (``BybitDerivatives``): Bybit v5's
request parameters, refusals and envelopes' ``result`` for ``/v5/market/tickers``
(category linear), ``/v5/market/funding/history``, ``/v5/market/open-interest`` and
``/v5/market/account-ratio``. The fake's middleware wraps them (faults, latency, the
``retCode`` envelope), as every other path."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tools.fake_bybit import NOT_SUPPORTED_SYMBOLS, PARAMS_ERROR, BybitError
from tools.fake_bybit_derivatives import (
    ACCOUNT_RATIO_PATH,
    FUNDING_HISTORY_PATH,
    FUNDING_LIMITS,
    OPEN_INTEREST_LIMITS,
    OPEN_INTEREST_PATH,
    PERIOD_MS,
    RATIO_LIMITS,
    BybitDerivatives,
)


class DerivativesEndpoints:
    """Answers the linear perpetuals' requests from ``state``."""

    def __init__(self, state: BybitDerivatives) -> None:
        self.state = state

    def install(self, app: web.Application) -> None:
        """Route the history endpoints of ``app`` here."""
        app.router.add_get(FUNDING_HISTORY_PATH, self._funding_history)
        app.router.add_get(OPEN_INTEREST_PATH, self._open_interest)
        app.router.add_get(ACCOUNT_RATIO_PATH, self._account_ratio)

    async def linear_tickers(self, request: web.Request) -> dict[str, Any]:
        """``/v5/market/tickers?category=linear``: every perpetual, or ``symbol``'s."""
        symbol = request.query.get("symbol")
        chosen = [self._perpetual(request)] if symbol else self.state.perpetuals()
        return {"category": "linear", "list": [self.state.linear_ticker(s) for s in chosen]}

    async def _funding_history(self, request: web.Request) -> dict[str, Any]:
        symbol = self._perpetual(request)
        start, end = _int(request, "startTime"), _int(request, "endTime")
        if start is not None and end is None:
            raise BybitError(PARAMS_ERROR, "params error: endTime is required with startTime")
        limit = _limit(request, FUNDING_LIMITS)
        rows = self.state.funding_rows(symbol, limit=limit, end=end, start=start)
        return {"category": "linear", "list": rows}

    async def _open_interest(self, request: web.Request) -> dict[str, Any]:
        symbol = self._perpetual(request)
        interval = request.query.get("intervalTime", "")
        if interval not in PERIOD_MS:
            raise BybitError(PARAMS_ERROR, "params error: intervalTime invalid")
        limit = _limit(request, OPEN_INTEREST_LIMITS)
        end = _int(request, "cursor") or _int(request, "endTime")
        rows = self.state.open_interest_rows(
            symbol, interval, limit=limit, end=end, start=_int(request, "startTime")
        )
        return {
            "symbol": symbol,
            "category": "linear",
            "list": rows,
            "nextPageCursor": _cursor(rows, limit, PERIOD_MS[interval]),
        }

    async def _account_ratio(self, request: web.Request) -> dict[str, Any]:
        symbol = self._perpetual(request)
        period = request.query.get("period", "")
        if period not in PERIOD_MS:
            raise BybitError(PARAMS_ERROR, "params error: period invalid")
        limit = _limit(request, RATIO_LIMITS)
        end = _int(request, "cursor") or _int(request, "endTime")
        rows = self.state.ratio_rows(
            symbol, period, limit=limit, end=end, start=_int(request, "startTime")
        )
        return {"list": rows, "nextPageCursor": _cursor(rows, limit, PERIOD_MS[period])}

    def _perpetual(self, request: web.Request) -> str:
        """The requested perpetual (category linear, a served USDT/USDC symbol)."""
        if request.query.get("category") != "linear":
            raise BybitError(PARAMS_ERROR, "Illegal category")
        symbol = request.query.get("symbol")
        if symbol is None:
            raise BybitError(PARAMS_ERROR, "params error: symbol invalid")
        if not self.state.is_perpetual(symbol):
            refusal = self.state.fake._refusals.get(symbol, NOT_SUPPORTED_SYMBOLS)
            raise BybitError(PARAMS_ERROR, refusal)
        return symbol


def _cursor(rows: list[dict[str, str]], limit: int, step: int) -> str:
    """The next (older) page's end time when this page is full, else ``""``."""
    if len(rows) < limit or not rows:
        return ""
    return str(int(rows[-1]["timestamp"]) - step)


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BybitError(PARAMS_ERROR, f"params error: {name} invalid") from None


def _limit(request: web.Request, limits: tuple[int, int]) -> int:
    default, most = limits
    asked = _int(request, "limit")
    if asked is None:
        return default
    if not 1 <= asked <= most:
        raise BybitError(PARAMS_ERROR, "params error: limit invalid")
    return asked
