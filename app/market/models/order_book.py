"""The top of one symbol's order book (numpy arrays)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class OrderBook:
    """Top of the order book: ``bids`` best (highest) first, ``asks`` best (lowest) first.

    Each side is a float64 array of shape (levels, 2): price, quantity in base units.
    """

    symbol: str
    bids: np.ndarray
    asks: np.ndarray
    timestamp_ms: int

    @property
    def mid(self) -> float:
        return float((self.bids[0, 0] + self.asks[0, 0]) / 2)

    def top(self, depth: int) -> OrderBook:
        """The best ``depth`` levels of each side (this book when it has no more)."""
        if len(self.bids) <= depth and len(self.asks) <= depth:
            return self
        return OrderBook(self.symbol, self.bids[:depth], self.asks[:depth], self.timestamp_ms)
