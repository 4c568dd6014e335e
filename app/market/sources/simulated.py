"""The embedded default market: a deterministic factor model that advances in real time.

Every 5-second step, BTC moves by a normal return and each other symbol by
``beta_i × BTC return + its own noise``; the true betas are public
(``app.market.simulated_universe``) so tests can check that the beta estimator recovers them.

Between steps the market ticks ``TICKS_PER_SECOND`` times a second: a symbol's live
price is the last step's price × exp(a random walk) of the same factor model with the
same volatility per unit time, so the walk's variance is σ_step² × the fraction of the
step elapsed; it starts again from zero at every step. Tickers (and the book) show the
live price, stamped with the tick's time; candles keep the 5-second step structure (the
snapshot patches the forming candle from the ticker). The ticks add no history cost.

Determinism: the random draws of each hour come from ``(seed, hour index)``, those of a
step's ticks from ``(seed, step index)``, and the price path starts at the listed prices
at a fixed anchor (midnight UTC, ``HISTORY_DAYS`` before the clock's day), so a given
seed and clock always give the same market, in any process.
Memory stays small: steps are folded straight into the candles of every
timeframe; only the candles kept for each timeframe are stored.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from app.market.errors import ExchangeRejected, SymbolNotListed
from app.market.models.candles import Candles
from app.market.models.derivatives import Derivatives, DerivativesRead
from app.market.models.order_book import OrderBook
from app.market.models.symbols import split_symbol
from app.market.models.ticker import Ticker
from app.market.models.timeframes import TIMEFRAME_SECONDS
from app.market.simulated_universe import SIMULATED_UNIVERSE, SimulatedAsset
from app.market.sources.simulated_derivatives import (
    OI_TURNOVER_DAYS,
    PerpetualPath,
    hourly_volatility,
    no_perpetual_reason,
    perpetual_of,
    perpetual_positioning,
)

STEP_SECONDS = 5
TICKS_PER_SECOND = 4
"""Live-price ticks per second between steps: as often as a busy exchange stream updates
a ticker on screen, and as often as the live views are sent (at most 4 per second)."""
TICKS_PER_STEP = STEP_SECONDS * TICKS_PER_SECOND
STEPS_PER_HOUR = 3600 // STEP_SECONDS
HISTORY_DAYS = 31
STEPS_PER_YEAR = 365 * 24 * STEPS_PER_HOUR
DAY = 86_400

# Candles kept per timeframe: enough for the longest analytics window plus the 24h ticker.
CANDLES_KEPT: dict[str, int] = {"1m": 1500, "5m": 600, "30m": 400, "1h": 400, "4h": 200, "1d": 40}


BTC_ANNUAL_VOL = 0.55
PRICE_DIGITS = 7

_TICK_DRAWS = 2  # tags the seed of a step's tick draws: (seed, step, _TICK_DRAWS)

# Mean of the volume noise lognormal(0, 0.5) × (1 + 0.5·|z|), to keep turnover on target.
_VOLUME_NOISE_MEAN = math.exp(0.125) * (1 + 0.5 * math.sqrt(2 / math.pi))


class _TimeframeCandles:
    """Growing OHLCV table (candles × symbols) of one timeframe, trimmed to a bound."""

    def __init__(self, seconds: int, keep: int, symbols: int) -> None:
        self.seconds = seconds
        self.keep = keep
        self.start_s = np.empty(0, dtype=np.int64)
        self.ohlcv = np.empty((5, 0, symbols))  # open, high, low, close, volume

    def fold(
        self,
        step_times: np.ndarray,
        prev_log_price: np.ndarray,
        path: np.ndarray,
        volume: np.ndarray,
    ) -> None:
        """Fold consecutive steps (times, log-price path, volumes) into the candles;
        ``prev_log_price`` is the log price before the first step (the first open)."""
        buckets = step_times // self.seconds * self.seconds
        first = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
        prices = np.exp(path)
        opens = np.exp(np.vstack([prev_log_price[None, :], path[first[1:] - 1]]))
        new = np.stack(
            [
                opens,
                np.maximum(np.maximum.reduceat(prices, first, axis=0), opens),
                np.minimum(np.minimum.reduceat(prices, first, axis=0), opens),
                prices[np.r_[first[1:] - 1, len(prices) - 1]],
                np.add.reduceat(volume, first, axis=0),
            ]
        )
        new_start = buckets[first]
        if self.start_s.size and self.start_s[-1] == new_start[0]:
            self._merge_into_last(new[:, 0])
            new, new_start = new[:, 1:], new_start[1:]
        self.start_s = np.concatenate([self.start_s, new_start])[-self.keep :]
        self.ohlcv = np.concatenate([self.ohlcv, new], axis=1)[:, -self.keep :]

    def _merge_into_last(self, candle: np.ndarray) -> None:
        last = self.ohlcv[:, -1]
        last[1] = np.maximum(last[1], candle[1])
        last[2] = np.minimum(last[2], candle[2])
        last[3] = candle[3]
        last[4] = last[4] + candle[4]


@dataclass(frozen=True, slots=True)
class _StepView:
    """What the tickers of one step share, computed once per step (by column): the
    step's prices, the tick walk (ticks in the step × symbols, log returns from the step
    price, row 0 = 0), the 24h statistics of the 1-minute candles (rounded prices) and
    the uniform draw that sets each book's spread."""

    step: int
    price: np.ndarray
    walk: np.ndarray
    open_24h: list[float]
    high_24h: list[float]
    low_24h: list[float]
    base_volume: list[float]
    quote_volume: list[float]
    spread_draw: list[float]


class SimulatedMarket:
    """The ``simulated`` MarketSource. ``clock`` returns epoch seconds (tests pass their own)."""

    name = "simulated"

    def __init__(
        self,
        seed: int = 7,
        clock: Callable[[], float] = time.time,
        universe: Sequence[SimulatedAsset] = SIMULATED_UNIVERSE,
    ) -> None:
        self.seed = seed
        self.clock = clock
        self.assets = tuple(universe)
        self._index = {asset.symbol: i for i, asset in enumerate(self.assets)}
        # Prices keep PRICE_DIGITS significant digits, like an exchange's tick size.
        self._decimals = [PRICE_DIGITS - 1 - math.floor(math.log10(a.price)) for a in self.assets]
        self._beta = np.array([a.beta for a in self.assets])
        step_scale = math.sqrt(STEPS_PER_YEAR)
        self._idio_sigma = np.array([a.idio_vol for a in self.assets]) / step_scale
        self._btc_sigma = BTC_ANNUAL_VOL / step_scale
        # One tick's share of a step's variance: σ_tick² = σ_step² / TICKS_PER_STEP.
        self._tick_scale = 1 / math.sqrt(TICKS_PER_STEP)
        self._step_volume = np.array(
            [
                a.daily_turnover / a.price / (DAY / STEP_SECONDS) / _VOLUME_NOISE_MEAN
                for a in self.assets
            ]
        )
        self._tables: dict[str, _TimeframeCandles] = {}
        self._log_price = np.log([a.price for a in self.assets])
        self._last_step = -1
        self._hour_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        self._view: _StepView | None = None
        self._delisted: set[str] = set()

    # --- MarketSource -------------------------------------------------------------------

    async def start(self) -> None:
        """Generates the history (about half a second of numpy work) off the event loop."""
        await asyncio.to_thread(self._build_history)

    async def close(self) -> None:
        return None

    def listed_symbols(self) -> frozenset[str]:
        """Every simulated symbol but those ``delist``-ed (current at every call)."""
        return frozenset(self._index).difference(self._delisted)

    def delist(self, symbol: str) -> None:
        """Stop serving ``symbol`` (as an exchange that delists a pair): it leaves
        ``listed_symbols``, gets no ticker, and its candles and book raise SymbolNotListed."""
        self._column(symbol)
        self._delisted.add(symbol)

    def relist(self, symbol: str) -> None:
        """Serve a ``delist``-ed ``symbol`` again."""
        self._delisted.discard(symbol)

    def market_assets(self) -> dict[str, tuple[str, str]]:
        """(base, quote) of every simulated symbol (the default universe: all in USDT)."""
        return {symbol: split_symbol(symbol) for symbol in self._index}

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        return self.tickers_now(symbols)

    def tickers_now(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        """The tickers of ``symbols`` at the clock's tick, by symbol (delisted ones left
        out; SymbolNotListed for an unknown one). ``last`` is the live tick price,
        ``timestamp_ms`` the tick's time. Cheap: what only changes per step is computed
        once per step (25 symbols: about 0.1 ms a tick, 1 ms when a step begins)."""
        tick = self._advance()
        view = self._step_view()
        served = [symbol for symbol in symbols if symbol not in self._delisted]
        return {symbol: self._ticker(self._column(symbol), view, tick) for symbol in served}

    async def fetch_candles(self, symbol: str, timeframe: str, limit: int) -> Candles:
        column = self._served_column(symbol)
        if timeframe not in TIMEFRAME_SECONDS:
            raise ExchangeRejected(
                f"simulated: unknown timeframe {timeframe!r}; valid: {', '.join(TIMEFRAME_SECONDS)}"
            )
        self._advance()
        table = self._tables[timeframe]
        start = max(0, table.start_s.size - limit)
        prices = np.round(table.ohlcv[:4, start:, column], self._decimals[column])
        return Candles(
            symbol,
            timeframe,
            table.start_s[start:] * 1000,
            prices[0],
            prices[1],
            prices[2],
            prices[3],
            table.ohlcv[4, start:, column].copy(),
        )

    async def fetch_order_book(self, symbol: str, depth: int) -> OrderBook:
        column = self._served_column(symbol)
        return self._order_book(column, depth, self._advance())

    async def fetch_derivatives(self, symbols: Sequence[str]) -> DerivativesRead:
        """The positioning of each symbol's linear perpetual at the clock's tick, read
        off the price path of its candles and tickers (the model:
        ``app.market.sources.simulated_derivatives``). A pair not quoted in USDT, an
        unknown or a delisted symbol is unavailable with the reason."""
        tick = self._advance()
        found: dict[str, Derivatives] = {}
        unavailable: dict[str, str] = {}
        for symbol in symbols:
            reason = self._no_perpetual(symbol)
            if reason is None:
                found[symbol] = perpetual_positioning(self._perpetual_path(symbol, tick))
            else:
                unavailable[symbol] = reason
        return DerivativesRead(found, unavailable)

    # --- the path -----------------------------------------------------------------------

    def _column(self, symbol: str) -> int:
        try:
            return self._index[symbol]
        except KeyError:
            raise SymbolNotListed(f"simulated: {symbol} is not listed") from None

    def _served_column(self, symbol: str) -> int:
        """The symbol's column; SymbolNotListed when it is unknown or delisted."""
        if symbol in self._delisted:
            raise SymbolNotListed(f"simulated: {symbol} is delisted")
        return self._column(symbol)

    def _anchor_step(self, now: float) -> int:
        return (int(now) // DAY - HISTORY_DAYS) * DAY // STEP_SECONDS

    def _build_history(self) -> None:
        now_step = int(self.clock()) // STEP_SECONDS
        symbols = len(self.assets)
        self._tables = {
            tf: _TimeframeCandles(seconds, CANDLES_KEPT[tf], symbols)
            for tf, seconds in TIMEFRAME_SECONDS.items()
        }
        self._last_step = self._anchor_step(self.clock()) - 1
        chunk = 6 * STEPS_PER_HOUR  # bounds the temporary arrays
        while self._last_step < now_step:
            self._advance_to(min(now_step, self._last_step + chunk))

    def _advance(self) -> int:
        """Brings the path up to the clock's step; returns the clock's tick in that step
        (0 to TICKS_PER_STEP - 1; 0 if the clock went back before the step)."""
        if not self._tables:
            raise RuntimeError("SimulatedMarket.start() was not awaited")
        now = self.clock()
        now_step = int(now) // STEP_SECONDS
        if now_step > self._last_step:
            self._advance_to(now_step)
        elapsed = now - self._last_step * STEP_SECONDS
        return min(TICKS_PER_STEP - 1, max(0, math.floor(elapsed * TICKS_PER_SECOND)))

    def _advance_to(self, last_step: int) -> None:
        """Simulate steps (self._last_step, last_step] and fold them into every timeframe."""
        steps = np.arange(self._last_step + 1, last_step + 1)
        shocks, volume_noise = self._draws(steps)
        btc = self._btc_sigma * shocks[:, 0]
        returns = self._beta * btc[:, None] + self._idio_sigma * shocks[:, 1:]
        path = self._log_price + np.cumsum(returns, axis=0)
        activity = np.exp(0.5 * volume_noise) * (1 + 0.5 * np.abs(shocks[:, 1:]))
        volume = self._step_volume * activity
        for table in self._tables.values():
            table.fold(steps * STEP_SECONDS, self._log_price, path, volume)
        self._log_price = path[-1]
        self._last_step = last_step

    def _draws(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normal shocks (factor + one per symbol) and volume noise for the given steps."""
        hours = steps // STEPS_PER_HOUR
        parts = [self._hour_draws(int(h)) for h in np.unique(hours)]
        shocks = np.concatenate([p[0] for p in parts])
        noise = np.concatenate([p[1] for p in parts])
        offset = steps - hours[0] * STEPS_PER_HOUR
        return shocks[offset], noise[offset]

    def _hour_draws(self, hour: int) -> tuple[np.ndarray, np.ndarray]:
        if self._hour_cache is None or self._hour_cache[0] != hour:
            rng = np.random.default_rng([self.seed, hour])
            symbols = len(self.assets)
            shocks = rng.standard_normal((STEPS_PER_HOUR, symbols + 1))
            noise = rng.standard_normal((STEPS_PER_HOUR, symbols))
            self._hour_cache = (hour, shocks, noise)
        return self._hour_cache[1], self._hour_cache[2]

    def _tick_walk(self, step: int) -> np.ndarray:
        """The step's tick walk (TICKS_PER_STEP × symbols log returns, row 0 = 0): the
        factor model at tick scale, drawn from ``(seed, step)``."""
        rng = np.random.default_rng([self.seed, step, _TICK_DRAWS])
        shocks = rng.standard_normal((TICKS_PER_STEP - 1, len(self.assets) + 1))
        btc = self._btc_sigma * self._tick_scale * shocks[:, :1]
        returns = self._beta * btc + self._idio_sigma * self._tick_scale * shocks[:, 1:]
        return np.vstack([np.zeros((1, len(self.assets))), np.cumsum(returns, axis=0)])

    # --- views of the current state -----------------------------------------------------

    def _step_view(self) -> _StepView:
        """The per-step part of the tickers (see _StepView), cached for the step."""
        if self._view is not None and self._view.step == self._last_step:
            return self._view
        minutes = self._tables["1m"]
        recent = minutes.start_s > self._last_step * STEP_SECONDS - DAY
        o, h, low, c, v = minutes.ohlcv[:, recent, :]
        digits = self._decimals
        self._view = _StepView(
            step=self._last_step,
            price=np.exp(self._log_price),
            walk=self._tick_walk(self._last_step),
            open_24h=[round(float(x), d) for x, d in zip(o[0], digits, strict=True)],
            high_24h=[round(float(x), d) for x, d in zip(h.max(axis=0), digits, strict=True)],
            low_24h=[round(float(x), d) for x, d in zip(low.min(axis=0), digits, strict=True)],
            base_volume=v.sum(axis=0).tolist(),
            quote_volume=(v * c).sum(axis=0).tolist(),
            spread_draw=[self._book_rng(column).random() for column in range(len(self.assets))],
        )
        return self._view

    def _tick_price(self, column: int, view: _StepView, tick: int) -> float:
        """The symbol's live price at ``tick`` of the step, rounded to its decimals."""
        price = float(view.price[column]) * math.exp(float(view.walk[tick, column]))
        return round(price, self._decimals[column])

    def _ticker(self, column: int, view: _StepView, tick: int) -> Ticker:
        last = self._tick_price(column, view, tick)
        digits = self._decimals[column]
        best_bid, spread_ticks = self._spread(column, last, view.spread_draw[column])
        open_24h = view.open_24h[column]
        return Ticker(
            symbol=self.assets[column].symbol,
            last=last,
            bid=round(best_bid, digits),
            ask=round(best_bid + spread_ticks * 10.0**-digits, digits),
            open_24h=open_24h,
            high_24h=max(view.high_24h[column], last),
            low_24h=min(view.low_24h[column], last),
            change_24h_pct=(last / open_24h - 1) * 100,
            base_volume_24h=view.base_volume[column],
            quote_volume_24h=view.quote_volume[column],
            timestamp_ms=self._tick_ms(tick),
        )

    def _book_rng(self, column: int) -> np.random.Generator:
        """The draws of the symbol's book in this step: first the spread, then sizes."""
        return np.random.default_rng([self.seed, self._last_step, column, 1])

    def _spread(self, column: int, price: float, draw: float) -> tuple[float, int]:
        """Best bid and spread (in price increments) around ``price`` for a spread draw in
        [0, 1): 1-2 bp, at least 2 ticks, the price inside the spread."""
        unit = 10.0 ** -self._decimals[column]  # the price increment
        spread_ticks = max(2, round(price * 1e-4 * (1 + draw) / unit))
        return price - (spread_ticks // 2) * unit, spread_ticks

    def _order_book(self, column: int, depth: int, tick: int) -> OrderBook:
        """A book around the live price at ``tick`` whose bid/ask imbalance leans with
        the last 5 minutes; spread and sizes are drawn once per step."""
        price = self._tick_price(column, self._step_view(), tick)
        digits = self._decimals[column]
        unit = 10.0**-digits  # the price increment
        rng = self._book_rng(column)
        best_bid, spread_ticks = self._spread(column, price, rng.random())
        five_minutes = self._tables["5m"].ohlcv[3, -2:, column]
        lean = math.tanh(50 * math.log(five_minutes[-1] / five_minutes[0]))
        levels = np.arange(depth) * unit
        sizes = rng.lognormal(0.0, 0.6, size=(2, depth)) * self._step_volume[column] * 4
        bid_prices = np.round(best_bid - levels, digits)
        ask_prices = np.round(best_bid + spread_ticks * unit + levels, digits)
        bids = np.column_stack([bid_prices, sizes[0] * (1 + 0.5 * lean)])
        asks = np.column_stack([ask_prices, sizes[1] * (1 - 0.5 * lean)])
        return OrderBook(self.assets[column].symbol, bids, asks, self._tick_ms(tick))

    def _no_perpetual(self, symbol: str) -> str | None:
        """Why ``symbol`` has no simulated perpetual (None: it has one)."""
        if symbol in self._delisted:
            return f"simulated: {symbol} is delisted"
        if symbol not in self._index:
            return f"simulated: {symbol} is not listed"
        return no_perpetual_reason(symbol, split_symbol(symbol)[1])

    def _perpetual_path(self, symbol: str, tick: int) -> PerpetualPath:
        """The symbol's price path for its perpetual: hour boundaries (each the close of
        the hour before it) and the last 9 hours of minutes, prices rounded as served."""
        column = self._index[symbol]
        asset, digits = self.assets[column], self._decimals[column]
        hours, minutes = self._tables["1h"], self._tables["1m"]
        recent = minutes.start_s >= self._last_step * STEP_SECONDS - 9 * 3600 - 60
        high, low, close = np.round(minutes.ohlcv[1:4, recent, column], digits)
        return PerpetualPath(
            symbol=symbol,
            contract=perpetual_of(*split_symbol(symbol)),
            now_ms=self._tick_ms(tick),
            price=self._tick_price(column, self._step_view(), tick),
            hour_ms=hours.start_s[1:] * 1000,
            hour_price=np.round(hours.ohlcv[3, :-1, column], digits),
            minute_ms=minutes.start_s[recent] * 1000,
            minute_high=high,
            minute_low=low,
            minute_close=close,
            hourly_vol=hourly_volatility(asset.beta, asset.idio_vol, BTC_ANNUAL_VOL),
            base_open_interest=OI_TURNOVER_DAYS * asset.daily_turnover / asset.price,
        )

    def _tick_ms(self, tick: int) -> int:
        """Epoch milliseconds of ``tick`` in the current step."""
        return self._last_step * STEP_SECONDS * 1000 + tick * 1000 // TICKS_PER_SECOND
