"""Errors a market source raises, independent of the library behind it."""


class MarketDataError(Exception):
    """Base class: market data could not be had."""


class ExchangeUnavailable(MarketDataError):
    """The exchange could not be reached or answered with a transient failure
    (timeout, connection error, 5xx, rate limit). Retrying later may succeed."""


class ExchangeRejected(MarketDataError):
    """The exchange answered with an error for this request (bad parameters,
    unsupported operation). Retrying the same request will not help."""


class SymbolNotListed(ExchangeRejected):
    """The symbol is not traded on this exchange."""
