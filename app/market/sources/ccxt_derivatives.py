"""Derivatives positioning from a ccxt exchange's linear perpetual swaps, for the ccxt
source's ``fetch_derivatives`` (``app.market.models.derivatives``).

A canonical spot symbol (``BTCUSDT``) has derivatives data when the exchange lists an
active linear perpetual on the same base and quote, settled in the quote (Bybit:
``BTC/USDT:USDT``). One read costs:

* one batch call for every perpetual asked: ``fetch_funding_rates`` (Bybit:
  ``/v5/market/tickers?category=linear``): funding rate, next funding time, and — from
  the same tickers' ``info`` — open interest now (``openInterest``, contracts) and its
  value (``openInterestValue``, quote). The tickers are used rather than
  ``fetch_open_interest``: that is one request per symbol, gives the last 5-minute (or
  hourly) bucket rather than the live figure, and no value for a linear contract.
  Where the tickers carry no open interest (other exchanges), the newest point of the
  history stands in, valued at the mark price. A failure of this call raises
  ``MarketDataError``: no symbol can be answered.
* per symbol, the histories, each cached for as long as it cannot have changed much:
  open interest (``fetch_open_interest_history``, 1 h, ``HISTORY_POINTS`` points: the
  1 h and 24 h changes) and the long/short account ratio
  (``fetch_long_short_ratio_history``, 1 h) refetched at most every
  ``HISTORY_REFRESH_SECONDS``; settled funding (``fetch_funding_rate_history``) every
  ``FUNDING_REFRESH_SECONDS`` or after the next settlement. A failure of one of these
  leaves that history empty (its values None, never invented) and keeps the symbol's
  row — its funding rate and open interest came with the batch call — naming the
  failed histories in ``DerivativesRead.partial`` (a rate limit still raises: it is
  about this client, not the symbol; and when every history call of every symbol
  failed because the exchange is unavailable, that is raised too, for the breakers).

Reasons name what failed and how (``"long/short history: exchange unavailable (HTTP
502)"``), never the exchange's URL or query, which ccxt's messages carry.

Bad values are cleaned by ``app.market.sources.derivatives_cleaning`` and counted per
symbol in the source's data-quality counters (kinds in ``QUALITY_KINDS``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from app.market.errors import (
    ExchangeRateLimited,
    ExchangeUnavailable,
    MarketDataError,
    SymbolNotListed,
)
from app.market.models.derivatives import Derivatives, DerivativesRead, Point
from app.market.models.symbols import canonical_symbol
from app.market.sources import derivatives_cleaning as clean
from app.market.sources.quality import DataQualityCounters

log = logging.getLogger(__name__)

T = TypeVar("T")
Call = Callable[[str, Awaitable[Any]], Awaitable[Any]]
"""The source's ccxt call: awaits the request, maps ccxt errors to MarketDataError."""

HISTORY_POINTS = 30
"""Hourly points asked of the open-interest and ratio histories (≥ 25: 24 h back)."""
FUNDING_POINTS = 21
"""Settled funding rates asked (a week at Bybit's 8-hour interval)."""
HISTORY_REFRESH_SECONDS = 300.0
FUNDING_REFRESH_SECONDS = 3600.0
HISTORY_SYMBOLS_PER_READ = 8
"""Symbols whose histories one read may fetch (three requests each): the first read of
25 symbols would otherwise make 76 requests at once, several seconds behind the
exchange's rate limit and near the call's timeout. The others keep their cached
histories (or none yet: those values stay None, never invented) and are fetched by the
next reads, stalest first."""
NO_PERPETUAL = "no linear perpetual listed for {symbol} on {exchange}"
HISTORY_NAMES = {
    "open_interest": "open interest history",
    "long_short": "long/short history",
    "funding": "funding history",
}
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S*", re.IGNORECASE)
_HTTP_STATUS = re.compile(r"://\S*\s+([1-5]\d\d)\b")  # ccxt: "<id> GET <url> <status> …"
_EXCHANGE_SAYS = re.compile(r'"(?:retMsg|msg|message)"\s*:\s*"([^"]{1,120})"')
_CCXT_ERROR = re.compile(r"failed \((\w+)\)")  # app.market.sources.ccxt.map_ccxt_error
QUALITY_KINDS = (
    "funding_rate_invalid",
    "next_funding_time_invalid",
    "open_interest_invalid",
    "open_interest_value_invalid",
    "funding_history_dropped",
    "open_interest_history_dropped",
    "long_short_history_dropped",
)


def linear_perpetuals(markets: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Canonical symbol → ccxt symbol of the active linear perpetual swaps settled in
    their quote currency (``BTCUSDT`` → ``BTC/USDT:USDT``), from ccxt's ``markets``."""
    found: dict[str, str] = {}
    for market in markets.values():
        if not (market.get("swap") and market.get("linear")) or market.get("active") is False:
            continue
        try:
            base, quote = str(market["base"]).upper(), str(market["quote"]).upper()
            settle = str(market.get("settle") or quote).upper()
            canonical = canonical_symbol(f"{base}{quote}")
        except (KeyError, TypeError, ValueError):
            continue
        if settle == quote:
            found.setdefault(canonical, str(market["symbol"]))
    return found


def failure_reason(error: BaseException) -> str:
    """What kind of failure ``error`` is, without URLs: ``"exchange unavailable (HTTP
    502)"``, ``"symbol refused by the exchange (Not supported symbols)"``, ``"exchange
    unavailable (RequestTimeout)"``, ``"unreadable answer (KeyError)"``."""
    text = " ".join(str(error).split())
    if isinstance(error, ExchangeUnavailable):
        kind = "exchange unavailable"
    elif isinstance(error, SymbolNotListed):
        kind = "symbol refused by the exchange"
    elif isinstance(error, MarketDataError):
        kind = "refused by the exchange"
    else:
        return f"unreadable answer ({type(error).__name__})"
    status = _HTTP_STATUS.search(text)
    said = _EXCHANGE_SAYS.search(text)
    ccxt_error = _CCXT_ERROR.search(text)
    if status:
        return f"{kind} (HTTP {status.group(1)})"
    if said and _URL.sub("", said.group(1)).strip():
        return f"{kind} ({_URL.sub('', said.group(1)).strip()})"
    return f"{kind} ({ccxt_error.group(1)})" if ccxt_error else kind


@dataclass(slots=True)
class _Attempts:
    """One symbol's history calls in one read: the failed ones by kind, and how many
    came back."""

    failed: dict[str, Exception] = field(default_factory=dict)
    fetched: int = 0

    def exchange_down(self) -> bool:
        """Every call made failed because the exchange is unavailable."""
        return (
            bool(self.failed)
            and not self.fetched
            and all(isinstance(e, ExchangeUnavailable) for e in self.failed.values())
        )

    def reason(self) -> str:
        """``"long/short history: exchange unavailable (HTTP 502); …"``."""
        return "; ".join(
            f"{HISTORY_NAMES.get(kind, kind)}: {failure_reason(error)}"
            for kind, error in self.failed.items()
        )


@dataclass(frozen=True, slots=True)
class _History:
    points: tuple[Point, ...]
    newest_ok: bool
    fetched: float  # monotonic seconds
    expires_ms: int | None = None  # exchange time (epoch ms) after which it is stale anyway
    dropped: int = 0  # points cleaning refused in this fetch


def _tolerate(exchange: Any, method: str, value_key: str) -> None:
    """Wrap ``exchange.<method>`` (a ccxt parser of one history entry) so that an entry
    it cannot parse (``Precise("NaN")`` raises) becomes a row without a value — dropped
    and counted by the cleaning — instead of failing the whole call."""
    parse = getattr(exchange, method, None)
    if parse is None:
        return

    def tolerant(entry: Any, market: Any = None) -> dict[str, Any]:
        try:
            parsed: dict[str, Any] = parse(entry, market)
            return parsed
        except Exception:  # one entry's parse failure is that entry's
            symbol = market.get("symbol") if isinstance(market, Mapping) else None
            stamp = (
                exchange.safe_integer(entry, "timestamp") if isinstance(entry, Mapping) else None
            )
            return {"info": entry, "symbol": symbol, "timestamp": stamp, value_key: None}

    setattr(exchange, method, tolerant)


class DerivativesReader:
    """Reads derivatives positioning through ``exchange`` (a ccxt instance with linear
    markets loaded) for the ccxt source named ``name``: ``call`` is the source's error-
    mapping call, ``quality`` its counters. ``clock`` (monotonic seconds) ages the cached
    histories; ``wall_ms`` (epoch ms) stands in for the exchange's time when its
    funding-rate answer carries none (settlements are compared with the exchange's)."""

    def __init__(
        self,
        name: str,
        exchange: Any,
        call: Call,
        quality: DataQualityCounters,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.name = name
        self.exchange = exchange
        self.call = call
        self.quality = quality
        self.clock = clock
        self.wall_ms = wall_ms
        self.perpetuals: dict[str, str] = {}
        """Canonical symbol → ccxt linear perpetual (after ``index``)."""
        self._cache: dict[tuple[str, str], _History] = {}
        self._refreshing: set[str] = set()  # contracts whose histories this read may fetch
        _tolerate(exchange, "parse_long_short_ratio", "longShortRatio")
        _tolerate(exchange, "parse_open_interest", "openInterestAmount")

    def index(self, markets: Mapping[str, Mapping[str, Any]]) -> None:
        """Learn the perpetuals from freshly loaded ``markets``."""
        self.perpetuals = linear_perpetuals(markets)

    async def read(self, symbols: Sequence[str]) -> DerivativesRead:
        """The derivatives of canonical ``symbols`` (see the module docstring)."""
        contracts = {s: self.perpetuals[s] for s in symbols if s in self.perpetuals}
        unavailable = {
            s: NO_PERPETUAL.format(symbol=s, exchange=self.name)
            for s in symbols
            if s not in contracts
        }
        if not contracts:
            return DerivativesRead({}, unavailable)
        asked = sorted(set(contracts.values()))
        rates = await self.call("fetch_funding_rates", self.exchange.fetch_funding_rates(asked))
        stalest = sorted(contracts.values(), key=self._staleness)
        self._refreshing = set(stalest[:HISTORY_SYMBOLS_PER_READ])
        attempts = {s: _Attempts() for s in contracts}
        results = await asyncio.gather(
            *(self._symbol(s, c, (rates or {}).get(c), attempts[s]) for s, c in contracts.items()),
            return_exceptions=True,
        )
        by_symbol: dict[str, Derivatives] = {}
        partial: dict[str, str] = {}
        down: list[Exception] = []  # one failure per symbol the exchange failed outright
        for symbol, result in zip(contracts, results, strict=True):
            tried = attempts[symbol]
            if isinstance(result, ExchangeRateLimited):
                raise result
            if isinstance(result, Exception):  # a failure outside the histories
                log.warning("%s %s derivatives failed: %r", self.name, symbol, result)
                unavailable[symbol] = f"{contracts[symbol]}: {failure_reason(result)}"
                if isinstance(result, ExchangeUnavailable):
                    down.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                by_symbol[symbol] = result
                if tried.failed:
                    partial[symbol] = tried.reason()
                if tried.exchange_down():
                    down.append(next(iter(tried.failed.values())))
        if len(down) == len(contracts):  # the exchange failed every symbol: for the breakers
            raise ExchangeUnavailable(
                f"{self.name} derivatives: every history call failed, {failure_reason(down[0])}"
            ) from down[0]
        return DerivativesRead(by_symbol, unavailable, partial)

    async def _symbol(self, symbol: str, contract: str, rate: Any, tried: _Attempts) -> Derivatives:
        """One symbol's ``Derivatives`` from its funding-rate entry and its histories
        (a history that fails is empty, and named in ``tried``)."""
        bad: dict[str, int] = {}
        now_ms = clean.time_ms(clean.field(rate, "timestamp")) or self.wall_ms()
        oi_history = await self._open_interest_history(contract, bad, tried)
        ratios = await self._ratio_history(contract, bad, tried)
        next_time = self._checked(
            bad,
            "next_funding_time",
            lambda sent: clean.next_funding_time(sent, now_ms),
            rate,
            "fundingTimestamp",
            "nextFundingTime",
        )
        funding = await self._funding_history(contract, now_ms, next_time, bad, tried)
        open_interest, value, measured_ms = self._open_interest_now(rate, oi_history, bad)
        rate_now = self._checked(bad, "funding_rate", clean.funding_rate, rate, "fundingRate")
        self._note(symbol, bad, any(h.dropped for h in (oi_history, ratios, funding)))
        return Derivatives(
            symbol=symbol,
            contract=contract,
            timestamp_ms=now_ms,
            funding_rate=rate_now,
            next_funding_time_ms=next_time,
            open_interest=open_interest,
            open_interest_value=value,
            long_short_ratio=ratios.points[-1][1] if ratios.newest_ok else None,
            funding_history=funding.points,
            open_interest_history=oi_history.points,
            long_short_history=ratios.points,
            open_interest_time_ms=measured_ms,
        )

    def _open_interest_now(
        self, rate: Any, history: _History, bad: dict[str, int]
    ) -> tuple[float | None, float | None, int | None]:
        """(contracts, value, when measured) from the tickers' ``info`` (when: None, the
        read's time); where the exchange's tickers carry none, the newest history point
        valued at the mark price, and its time."""
        info = rate.get("info") if isinstance(rate, Mapping) else None
        if isinstance(info, Mapping) and "openInterest" in info:
            contracts = self._checked(bad, "open_interest", clean.amount, info, "openInterest")
            value = self._checked(
                bad, "open_interest_value", clean.amount, info, "openInterestValue"
            )
            return contracts, value, None
        if not history.newest_ok:
            return None, None, None
        measured_ms, contracts = history.points[-1]
        mark = clean.amount(clean.field(rate, "markPrice"))
        return contracts, (contracts * mark if mark else None), measured_ms

    @staticmethod
    def _checked(
        bad: dict[str, int],
        kind: str,
        rule: Callable[[Any], T | None],
        entry: Any,
        unified: str,
        raw: str | None = None,
    ) -> T | None:
        """``rule`` of the entry's field; a value sent but refused is counted in ``bad``."""
        sent = clean.field(entry, unified, raw)
        value = rule(sent)
        if value is None and sent is not None and sent != "":
            bad[f"{kind}_invalid"] = bad.get(f"{kind}_invalid", 0) + 1
        return value

    # ----- histories, cached -------------------------------------------------------------

    async def _open_interest_history(
        self, contract: str, bad: dict[str, int], tried: _Attempts
    ) -> _History:
        if not self.exchange.has.get("fetchOpenInterestHistory"):
            return _History((), False, self.clock())
        exchange = self.exchange
        return await self._history(
            ("open_interest", contract),
            HISTORY_REFRESH_SECONDS,
            lambda: exchange.fetch_open_interest_history(contract, "1h", limit=HISTORY_POINTS),
            ("openInterestAmount", clean.amount, "openInterest"),
            bad,
            tried,
        )

    async def _ratio_history(
        self, contract: str, bad: dict[str, int], tried: _Attempts
    ) -> _History:
        if not self.exchange.has.get("fetchLongShortRatioHistory"):
            return _History((), False, self.clock())
        exchange = self.exchange
        return await self._history(
            ("long_short", contract),
            HISTORY_REFRESH_SECONDS,
            lambda: exchange.fetch_long_short_ratio_history(contract, "1h", limit=HISTORY_POINTS),
            ("longShortRatio", clean.ratio, "longShortRatio"),
            bad,
            tried,
        )

    async def _funding_history(
        self,
        contract: str,
        now_ms: int,
        next_time: int | None,
        bad: dict[str, int],
        tried: _Attempts,
    ) -> _History:
        if not self.exchange.has.get("fetchFundingRateHistory"):
            return _History((), False, self.clock())
        exchange = self.exchange
        return await self._history(
            ("funding", contract),
            FUNDING_REFRESH_SECONDS,
            lambda: exchange.fetch_funding_rate_history(contract, limit=FUNDING_POINTS),
            ("fundingRate", clean.funding_rate, "fundingRate"),
            bad,
            tried,
            now_ms=now_ms,
            expires_ms=next_time,
        )

    async def _history(
        self,
        key: tuple[str, str],
        max_age: float,
        fetch: Callable[[], Awaitable[Any]],
        rule: tuple[str, Callable[[Any], float | None], str],
        bad: dict[str, int],
        tried: _Attempts,
        now_ms: int | None = None,
        expires_ms: int | None = None,
    ) -> _History:
        """The cached history ``key`` while younger than ``max_age`` seconds (and, given
        the exchange's ``now_ms``, before the ``expires_ms`` it was fetched with), else
        fetched again. A failed fetch is empty (not cached: the next read asks first)
        and named in ``tried``; a rate limit raises ``ExchangeRateLimited``."""
        cached = self._cache.get(key)
        young = cached is not None and self.clock() - cached.fetched < max_age
        if cached is not None and young and not _settled_since(cached, now_ms):
            return cached
        if key[1] not in self._refreshing:  # another symbol's turn: the next reads
            return cached if cached is not None else _History((), False, self.clock())
        operation = f"fetch_{key[0]}_history"
        try:
            rows = await self.call(operation, fetch())
        except ExchangeRateLimited:
            raise
        except Exception as error:  # this history's failure, not the symbol's
            if not isinstance(error, MarketDataError):  # ccxt could not read the answer
                log.warning("%s %s %s unreadable: %r", self.name, key[1], operation, error)
            tried.failed[key[0]] = error
            return _History((), False, self.clock())
        tried.fetched += 1
        value_key, value_rule, raw_key = rule
        points, dropped, newest_ok = clean.history(rows or [], value_key, value_rule, raw_key)
        if dropped:
            bad[f"{key[0]}_history_dropped"] = dropped
        fresh = _History(points, newest_ok, self.clock(), expires_ms, dropped)
        self._cache[key] = fresh
        return fresh

    def _staleness(self, contract: str) -> float:
        """When the contract's oldest cached history was fetched (never: first), so a
        read spends its history requests on the stalest symbols."""
        kinds = ("open_interest", "long_short", "funding")
        cached = [self._cache.get((kind, contract)) for kind in kinds]
        return (
            min((h.fetched for h in cached if h is not None), default=float("-inf"))
            if all(cached)
            else float("-inf")
        )

    def _note(self, symbol: str, bad: Mapping[str, int], cached_bad: bool) -> None:
        """Count what cleaning refused now; one log line when a symbol's derivatives
        turn bad and one when they are clean again (``cached_bad``: a cached history
        still holds what was refused when it was fetched)."""
        for kind, count in bad.items():
            self.quality.add(symbol, kind, count)
        if bad and self.quality.start_episode(symbol, "derivatives"):
            detail = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            log.warning("%s sent bad %s derivatives data, cleaned: %s", self.name, symbol, detail)
        elif not bad and not cached_bad and self.quality.end_episode(symbol, "derivatives"):
            log.info("%s %s derivatives data is clean again", self.name, symbol)


def _settled_since(history: _History, now_ms: int | None) -> bool:
    """Whether the exchange's ``now_ms`` is past the settlement ``history`` awaited."""
    return history.expires_ms is not None and now_ms is not None and now_ms >= history.expires_ms
