"""Whether each configured symbol is still listed and served by the exchange.

A pair can disappear while the service runs: the exchange delists it (its market
definitions no longer hold it), or stops serving it (no ticker in the batch, its
candles or order book refused as an unknown symbol). :class:`ListingTracker` turns the
evidence of each refresh into one :class:`ListingIssue` per symbol affected, kept while
it lasts and dropped as soon as the pair is served again. Reasons are the service's
own words (never the exchange's raw error text, which can name hosts).

It sits at the root of ``app.market``, beside the models, rather than with the
sources: it judges what any source returned over successive refreshes, and the
services (the snapshot) and the health report read its statuses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)

DELISTED = "delisted"
"""Listed when the service started (or later), no longer in the exchange's markets."""
NOT_LISTED = "not_listed"
"""Configured, but the exchange has not listed it since start-up (never served)."""
UNSERVED = "unserved"
"""Still in the exchange's markets, but no data comes: no ticker in the batch for
``UNSERVED_AFTER`` refreshes, or no ticker and its candles or book refused as unknown."""

UNSERVED_AFTER = 3
"""Consecutive refreshes without a ticker after which a listed pair counts as unserved."""


@dataclass(frozen=True, slots=True)
class ListingIssue:
    """One symbol the exchange does not list or serve now.

    ``since_ms``: epoch ms of the first refresh that showed it; ``last_price`` and
    ``last_seen_ms``: its last ticker's price and time, None when never seen."""

    symbol: str
    status: str
    since_ms: int
    reason: str
    last_price: float | None = None
    last_seen_ms: int | None = None

    def to_dict(self) -> dict:
        """``{"symbol", "status", "since", "reason", "last_price", "last_seen"}``."""
        return {
            "symbol": self.symbol,
            "status": self.status,
            "since": self.since_ms,
            "reason": self.reason,
            "last_price": self.last_price,
            "last_seen": self.last_seen_ms,
        }


@dataclass(frozen=True, slots=True)
class RefreshEvidence:
    """What one refresh saw: the symbols the source lists now, the tickers it got
    (symbol → (price, epoch ms)), and the symbols whose candles or book were refused as
    unknown symbols."""

    listed: frozenset[str]
    priced: Mapping[str, tuple[float, int]]
    refused: frozenset[str]


class ListingTracker:
    """The listing issues of ``configured`` symbols, updated once per refresh."""

    def __init__(self, exchange: str, configured: Iterable[str]) -> None:
        self.exchange = exchange
        self.configured = list(dict.fromkeys(configured))
        self.issues: dict[str, ListingIssue] = {}
        self._ever_listed: set[str] = set()
        self._absent: dict[str, int] = {}  # symbol → consecutive refreshes without ticker
        self._absent_since: dict[str, int] = {}
        self._last: dict[str, tuple[float, int]] = {}  # symbol → (last price, epoch ms)

    def absent(self) -> set[str]:
        """Symbols that had no ticker in the last refresh."""
        return {s for s, count in self._absent.items() if count}

    def observe(self, evidence: RefreshEvidence, now_ms: int) -> dict[str, ListingIssue]:
        """Updates and returns the issues (symbol → issue) after one refresh."""
        for symbol in self.configured:
            issue = self._judge(symbol, evidence, now_ms)
            self._record(symbol, issue)
        return dict(self.issues)

    def _judge(self, symbol: str, evidence: RefreshEvidence, now_ms: int) -> ListingIssue | None:
        if symbol in evidence.priced:
            self._absent.pop(symbol, None)
            self._absent_since.pop(symbol, None)
            self._last[symbol] = evidence.priced[symbol]
            self._ever_listed.add(symbol)
            return None
        self._absent[symbol] = self._absent.get(symbol, 0) + 1
        since = self._absent_since.setdefault(symbol, now_ms)
        if symbol not in evidence.listed:
            if symbol in self._ever_listed:
                return self._issue(symbol, DELISTED, since, f"{self.exchange} no longer lists it")
            return self._issue(
                symbol, NOT_LISTED, since, f"{self.exchange} does not list it (not served)"
            )
        self._ever_listed.add(symbol)
        if symbol in evidence.refused:
            reason = f"{self.exchange} refuses its candles or order book as an unknown symbol"
            return self._issue(symbol, UNSERVED, since, reason)
        if self._absent[symbol] >= UNSERVED_AFTER:
            reason = f"no ticker from {self.exchange} in {self._absent[symbol]} refreshes"
            return self._issue(symbol, UNSERVED, since, reason)
        return None

    def _issue(self, symbol: str, status: str, since: int, reason: str) -> ListingIssue:
        last = self._last.get(symbol)
        previous = self.issues.get(symbol)
        if previous is not None and previous.status == status:
            return replace(previous, reason=reason)  # since stays where it started
        return ListingIssue(
            symbol,
            status,
            previous.since_ms if previous else since,
            reason,
            None if last is None else last[0],
            None if last is None else last[1],
        )

    def _record(self, symbol: str, issue: ListingIssue | None) -> None:
        """Keeps ``issue``; one log line when an issue starts or changes, one when it ends."""
        previous = self.issues.get(symbol)
        if issue is None:
            if previous is not None:
                del self.issues[symbol]
                log.info("%s is served by %s again", symbol, self.exchange)
            return
        if previous is None or previous.status != issue.status:
            log.warning("%s %s: %s", symbol, issue.status.replace("_", " "), issue.reason)
        self.issues[symbol] = issue
