"""The candle timeframes the service reads and serves, and their length in seconds."""

from __future__ import annotations

from typing import Literal, get_args

Timeframe = Literal["1m", "5m", "30m", "1h", "4h", "1d"]
"""The candle timeframes the service reads and serves (keys of TIMEFRAME_SECONDS)."""

TIMEFRAME_SECONDS: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "30m": 1800,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}
TIMEFRAMES: tuple[str, ...] = get_args(Timeframe)
