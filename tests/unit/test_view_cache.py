"""The view cache's cold read of a pipeline view: a refresh whose copy cannot be read
afterwards (another replica did it and its copies are gone or unreadable) is followed
by another, bounded; only when no refresh ever lands is it an error."""

from __future__ import annotations

import asyncio

import pytest

from app.cache.coherence import Coherence
from app.cache.l1 import L1Cache
from app.cache.layered import LayeredCache, NothingToServe
from app.cache.policy import load_policy
from app.services.collector_link import CollectorStatus
from app.services.view_cache import PEER_ROUNDS, ViewCache
from tests.conftest import ManualClock

VIEW = "dashboard:desktop"


class PeerRefreshes:
    """A collector link whose first ``peers`` refreshes are another replica's whose
    copies never land here; later ones publish the view here."""

    def __init__(self, clock: ManualClock, peers: int) -> None:
        self.clock = clock
        self.peers = peers
        self.refreshes = 0
        self.views: ViewCache | None = None
        self.status = CollectorStatus()
        self.started = asyncio.Event()

    async def refresh(self, force: bool = False) -> None:
        self.refreshes += 1
        if self.refreshes > self.peers and self.views is not None:
            await self.views.publish({VIEW: b'{"v":1}'}, int(self.clock() * 1000))


def view_cache(clock: ManualClock, peers: int) -> tuple[ViewCache, PeerRefreshes]:
    cache = LayeredCache(load_policy(), L1Cache(1 << 20), clock=clock)
    link = PeerRefreshes(clock, peers)
    views = ViewCache(cache, Coherence(cache), link, "virtuoso")  # type: ignore[arg-type]
    link.views = views
    return views, link


@pytest.mark.parametrize("peers", range(PEER_ROUNDS))
async def test_a_peer_refresh_that_did_not_land_is_followed_by_one_that_does(
    clock: ManualClock, peers: int
) -> None:
    views, link = view_cache(clock, peers)
    read = await views.read(VIEW)
    assert read.entry.body == b'{"v":1}' and not read.stale
    assert link.refreshes == peers + 1


async def test_refreshes_that_never_land_end_in_nothing_to_serve(clock: ManualClock) -> None:
    views, link = view_cache(clock, peers=PEER_ROUNDS)
    with pytest.raises(NothingToServe, match="no readable copy"):
        await views.read(VIEW)
    assert link.refreshes == PEER_ROUNDS
