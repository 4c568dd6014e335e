"""The cleaning rules for derivatives data (``app.market.sources.derivatives_cleaning``),
by hand: what is refused, what is kept, and how a history is ordered and deduplicated."""

from __future__ import annotations

import pytest

from app.market.sources import derivatives_cleaning as clean


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("0.0001", 0.0001),
        (-0.05, -0.05),
        (0.05, 0.05),
        (0.0501, None),
        ("-0.2", None),
        ("NaN", None),
        ("", None),
        (None, None),
        ("abc", None),
        (float("inf"), None),
    ],
)
def test_funding_rate(sent: object, kept: float | None) -> None:
    assert clean.funding_rate(sent) == kept


def test_amounts_times_and_ratios() -> None:
    assert clean.amount("0") == 0.0 and clean.amount("12.5") == 12.5
    assert clean.amount("-0.001") is None and clean.amount("NaN") is None
    assert clean.time_ms("1700000000000") == 1_700_000_000_000
    assert clean.time_ms(0) is None and clean.time_ms("-5") is None
    assert clean.ratio("2.5") == 2.5
    assert clean.ratio(0) is None and clean.ratio("-1") is None


NOW = 1_700_000_000_000


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (NOW + 8 * 3_600_000, NOW + 8 * 3_600_000),  # the next 8-hour settlement
        (NOW, NOW),
        (NOW - clean.NEXT_FUNDING_PAST_MS, NOW - clean.NEXT_FUNDING_PAST_MS),  # the bound
        (NOW - clean.NEXT_FUNDING_PAST_MS - 1, None),  # stale: "settling now" forever
        (NOW - 3_600_000, None),
        (NOW + clean.NEXT_FUNDING_AHEAD_MS, NOW + clean.NEXT_FUNDING_AHEAD_MS),
        (NOW + clean.NEXT_FUNDING_AHEAD_MS + 1, None),
        (NOW + 10**13, None),  # centuries ahead
        (1_000, None),  # 1970
        (str(NOW + 60_000), NOW + 60_000),
        (0, None),
        ("NaN", None),
        (None, None),
    ],
)
def test_next_funding_time_is_plausible_against_the_reads_time(
    sent: object, kept: int | None
) -> None:
    assert clean.next_funding_time(sent, NOW) == kept


def test_field_falls_back_to_the_raw_text_ccxt_could_not_parse() -> None:
    entry = {"fundingRate": None, "info": {"fundingRate": "abc"}}
    assert clean.field(entry, "fundingRate") == "abc"
    assert clean.field({"x": 1.0, "info": {"x": "2"}}, "x") == 1.0
    assert (
        clean.field({"info": {"nextFundingTime": "5"}}, "fundingTimestamp", "nextFundingTime")
        == "5"
    )
    assert clean.field(None, "x") is None


def test_history_sorts_dedupes_and_drops() -> None:
    rows = [
        {"timestamp": 3_000, "v": "3"},
        {"timestamp": 1_000, "v": "1"},
        {"timestamp": 2_000, "v": "2"},
        {"timestamp": 2_000, "v": "2.5"},  # sent again: the later one wins
        {"timestamp": None, "v": "9"},  # no time: dropped
        {"timestamp": 4_000, "v": "-1", "info": {}},  # the newest, bad: dropped
    ]
    points, dropped, newest_ok = clean.history(rows, "v", clean.amount, "v")
    assert points == ((1_000, 1.0), (2_000, 2.5), (3_000, 3.0))
    assert dropped == 2
    assert newest_ok is False  # the newest sent is not among them: no current value
    points, dropped, newest_ok = clean.history(rows[:4], "v", clean.amount, "v")
    assert (dropped, newest_ok) == (0, True)
    assert clean.history([], "v", clean.amount, "v") == ((), 0, False)
