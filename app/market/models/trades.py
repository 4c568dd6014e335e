"""Public trades: what happened on the exchange, trade by trade."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Side = Literal["buy", "sell"]


@dataclass(frozen=True, slots=True)
class PublicTrade:
    """One trade on the exchange: when (epoch ms, the exchange's time), at what price
    (quote per base), how much (base units), and the taker's side (``buy``: an
    aggressive buyer lifted an ask)."""

    timestamp_ms: int
    price: float
    amount: float
    side: Side
