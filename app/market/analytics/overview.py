"""Market-wide analytics from tickers: overview (regime, breadth), top movers.

Regime follows the original system: BTC's 24h change above +2 % is ``bullish``,
below −2 % ``bearish``, otherwise ``neutral``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from app.market.models.candles import Candles
from app.market.models.ticker import Ticker
from app.market.models.timeframes import TIMEFRAME_SECONDS

BTC = "BTCUSDT"
REGIME_THRESHOLD_PCT = 2.0
SECONDS_PER_YEAR = 365 * 86_400


def market_regime(btc_change_pct: float | None) -> str:
    if btc_change_pct is None:
        return "unknown"
    if btc_change_pct > REGIME_THRESHOLD_PCT:
        return "bullish"
    if btc_change_pct < -REGIME_THRESHOLD_PCT:
        return "bearish"
    return "neutral"


def annualized_volatility(candles: Candles | None, periods: int = 288) -> float | None:
    """Realised volatility (percent, annualised) of the last ``periods`` log returns."""
    if candles is None or len(candles) < 3:
        return None
    closes = candles.close[-(periods + 1) :]
    returns = np.diff(np.log(closes))
    per_year = SECONDS_PER_YEAR / TIMEFRAME_SECONDS[candles.timeframe]
    value = float(np.std(returns, ddof=1) * math.sqrt(per_year) * 100)
    return value if math.isfinite(value) else None


def market_overview(tickers: Mapping[str, Ticker], btc_candles: Candles | None) -> dict:
    """Breadth and regime of the tracked symbols.

    ``trend_strength`` (0–100) is breadth agreement: |gainers − losers| / symbols.
    Breadth counts only tickers with a known 24h change (``symbols``).
    ``btc_volume_dominance`` is BTC's share of the tracked symbols' 24h turnover — a
    volume share, not the market-cap dominance (no market-cap feed exists here).
    """
    changes = [c for t in tickers.values() if math.isfinite(c := t.change_24h_pct)]
    gainers = sum(1 for c in changes if c > 0)
    losers = sum(1 for c in changes if c < 0)
    total_volume = sum(t.quote_volume_24h for t in tickers.values())
    btc = tickers.get(BTC)
    return {
        "market_regime": market_regime(_finite(btc.change_24h_pct) if btc else None),
        "trend_strength": round(abs(gainers - losers) / len(changes) * 100, 2) if changes else 0.0,
        "btc_price": btc.last if btc else None,
        "btc_change_24h": _rounded(_finite(btc.change_24h_pct)) if btc else None,
        "btc_volatility": _rounded(annualized_volatility(btc_candles)),
        "btc_volume_dominance": (
            round(btc.quote_volume_24h / total_volume * 100, 2) if btc and total_volume else None
        ),
        "total_volume_24h": round(total_volume, 2),
        "symbols": len(changes),
        "gainers": gainers,
        "losers": losers,
        "unchanged": len(changes) - gainers - losers,
        "average_change": round(sum(changes) / len(changes), 4) if changes else 0.0,
    }


def top_movers(tickers: Mapping[str, Ticker], count: int, min_quote_volume: float) -> dict:
    """Top gainers and losers by 24h % among symbols with enough 24h turnover (a
    symbol whose 24h change is unknown is not a mover; counted as excluded)."""
    liquid = [
        t
        for t in tickers.values()
        if t.quote_volume_24h >= min_quote_volume and math.isfinite(t.change_24h_pct)
    ]
    by_change = sorted(liquid, key=lambda t: t.change_24h_pct, reverse=True)
    gainers = [t for t in by_change if t.change_24h_pct > 0][:count]
    losers = [t for t in reversed(by_change) if t.change_24h_pct < 0][:count]
    return {
        "gainers": [mover_row(t) for t in gainers],
        "losers": [mover_row(t) for t in losers],
        "min_quote_volume": min_quote_volume,
        "excluded_illiquid": len(tickers) - len(liquid),
    }


def mover_row(ticker: Ticker) -> dict:
    return {
        "symbol": ticker.symbol,
        "price": ticker.last,
        "change_24h": round(ticker.change_24h_pct, 4),
        "volume_24h": round(ticker.quote_volume_24h, 2),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
