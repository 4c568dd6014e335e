"""Symbol notation: canonical compact ids such as ``BTCUSDT`` (base + quote, upper
case); each source maps them to its own notation."""

from __future__ import annotations

import re

QUOTE_ASSETS: tuple[str, ...] = ("USDT", "USDC", "USD", "BTC", "EUR")
_SYMBOL_CHARS = re.compile(r"^[A-Z0-9]{2,20}$")


def canonical_symbol(text: str) -> str:
    """``btc/usdt``, ``BTC-USDT`` and ``BTCUSDT`` all become ``BTCUSDT``.

    Raises ValueError for anything that cannot be a symbol.
    """
    compact = re.sub(r"[/\-_:]", "", text.strip().upper())
    if not _SYMBOL_CHARS.match(compact):
        raise ValueError(f"not a symbol: {text!r}")
    return compact


def split_symbol(symbol: str) -> tuple[str, str]:
    """``BTCUSDT`` → (``BTC``, ``USDT``) guessed from common quote assets: a fallback
    only — base and quote come from the exchange's market definitions (see
    ``app.market.sources.base.market_assets``). Raises ValueError when no suffix matches."""
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise ValueError(f"unknown quote asset in {symbol!r}; known: {', '.join(QUOTE_ASSETS)}")
