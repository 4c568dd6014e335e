"""The refresher's schedule is start to start: a refresh's duration is not added to the
interval, and an overrunning refresh is followed by the next at once, without pile-up."""

from __future__ import annotations

import pytest

from app.services.cadence import Cadence
from tests.conftest import ManualClock


def run(cadence: Cadence, clock: ManualClock, durations: list[float]) -> list[float]:
    """Starts a refresh per duration, each after the wait the cadence computed; the
    start times (seconds since the first)."""
    first = clock()
    starts = []
    for took in durations:
        starts.append(cadence.started() - first)
        clock.advance(took)
        clock.advance(cadence.delay())
    return starts


def test_the_refresh_time_is_part_of_the_interval() -> None:
    clock = ManualClock(0)
    cadence = Cadence(5, clock)
    assert run(cadence, clock, [2, 2, 2, 2]) == [0, 5, 10, 15]  # not 0, 7, 14, 21


def test_an_overrunning_refresh_is_followed_at_once_and_missed_starts_are_not_made_up() -> None:
    clock = ManualClock(0)
    cadence = Cadence(5, clock)
    # 12 s missed two starts: the next comes at once, then every 5 s again (no burst)
    assert run(cadence, clock, [12, 1, 1, 1]) == [0, 12, 17, 22]


def test_the_delay_is_what_remains_of_the_interval() -> None:
    clock = ManualClock(100)
    cadence = Cadence(5, clock)
    assert cadence.delay() == 0  # nothing started yet: start now
    cadence.started()
    clock.advance(1.5)
    assert cadence.delay() == pytest.approx(3.5)
    clock.advance(3.5)
    assert cadence.delay() == 0
    clock.advance(30)
    assert cadence.delay() == 0
    assert cadence.starts == 1


@pytest.mark.parametrize("interval", [0, -1])
def test_an_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Cadence(interval)
