"""Errors a market source raises, independent of the library behind it.

Shared by every source (which raise them) and the services and web (which map them
to stale data or HTTP answers), hence at the root of ``app.market``; none of them is
about configuration (that is ``app.errors.ConfigError``)."""


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


class ExchangeRateLimited(ExchangeUnavailable):
    """The exchange refused the request because of its rate limit or an IP ban
    (HTTP 429/418, or a rate-limit code in its own envelope). ``retry_after_seconds`` is
    the exchange's ``Retry-After`` in seconds when it sent one, else None; retrying
    before then only prolongs the ban."""

    def __init__(self, message: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
