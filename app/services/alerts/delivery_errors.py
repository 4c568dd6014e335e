"""The one error a message sender raises: ``DeliveryFailed``, shared by every sender
(the outbox's webhook adapter, the channels' Apprise sender) and the outbox that
retries them."""

from __future__ import annotations


class DeliveryFailed(Exception):
    """A message was not delivered. ``reason``: why, in words that may be shown (never
    a URL's userinfo, path, query or token); ``retryable``: whether trying again later
    may succeed (a receiver down, a 5xx answer, a time-out) or not (the destination
    policy refused it, a 4xx answer, an unusable URL). ``refused``: the destination
    policy refused it (no connection made). A non-retryable failure is no failure of the
    destination's circuit breaker (the receiver answered, or was never called)."""

    def __init__(self, reason: str, retryable: bool, *, refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.refused = refused
        self.breaker_failure = retryable
