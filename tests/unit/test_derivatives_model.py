"""``Derivatives.open_interest_change_pct`` by hand: "then" is measured back from when the
current open interest was read, not from the history's newest point; no current value,
no change."""

from __future__ import annotations

import pytest

from app.market.models.derivatives import HOUR_MS, Derivatives

T0 = 1_700_000_000_000 // HOUR_MS * HOUR_MS  # an hour boundary
HISTORY = ((T0 - 2 * HOUR_MS, 80.0), (T0 - HOUR_MS, 100.0), (T0, 125.0))


def read_at(timestamp_ms: int, current: float | None, **extra: int) -> Derivatives:
    return Derivatives(
        "BTCUSDT",
        "BTC/USDT:USDT",
        timestamp_ms,
        open_interest=current,
        open_interest_history=HISTORY,
        **extra,  # type: ignore[arg-type]
    )


def test_just_before_the_rollover_the_hour_is_measured_from_the_read() -> None:
    # read at T0 + 59 min: the newest point (T0) is 59 min old; an hour before the read
    # is T0 − 1 min, whose newest point is T0 − 1 h (100), not T0 − 2 h (80)
    d = read_at(T0 + 59 * 60_000, 130.0)
    assert d.open_interest_change_pct(1) == pytest.approx(30.0)  # 130 / 100 − 1
    assert d.open_interest_change_pct(2) == pytest.approx(62.5)  # 130 / 80 − 1
    assert d.open_interest_change_pct(3) is None  # no point that old


def test_just_after_the_rollover() -> None:
    d = read_at(T0 + HOUR_MS + 60_000, 150.0)  # T0 + 1 h 1 min: an hour back is T0 + 1 min
    assert d.open_interest_change_pct(1) == pytest.approx(20.0)  # 150 / 125 − 1


def test_a_refused_current_open_interest_gives_no_change() -> None:
    d = read_at(T0 + 30 * 60_000, None)
    assert d.open_interest_change_pct(1) is None  # not from the history alone
    assert d.open_interest_change_pct(24) is None


def test_the_newest_point_standing_in_for_the_current_value_keeps_its_own_time() -> None:
    # tickers without open interest: the source gives the newest point and its time
    d = read_at(T0 + 59 * 60_000, 125.0, open_interest_time_ms=T0)
    assert d.open_interest_change_pct(1) == pytest.approx(25.0)  # 125 / 100 − 1
    assert d.open_interest_change_pct(2) == pytest.approx(56.25)  # 125 / 80 − 1


def test_a_non_positive_then_gives_no_change() -> None:
    d = Derivatives(
        "X", "X/USDT:USDT", T0, open_interest=5.0, open_interest_history=((T0 - HOUR_MS, 0.0),)
    )
    assert d.open_interest_change_pct(1) is None
