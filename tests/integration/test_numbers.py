"""Numbers and times a trader can trust (issue 15, items 8 and 9), tested alone under
node: frontend/src/numbers.js reads a typed number for the user's locale or refuses it
with the reason (parseNumber) and writes magnitudes compactly (formatMagnitude);
frontend/src/clock.js writes every time in one time zone (formatZoned, zoneLabel,
chartTickLabel), daylight-saving changes included."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.frontend_modules import INF, NAN, call_module

ROOT = Path(__file__).resolve().parents[2]


def parse(cases: list[tuple[str, str]], **options: bool) -> list[dict]:
    return call_module(
        "numbers.js", [["parseNumber", text, locale, options] for text, locale in cases]
    )


# --- parseNumber: accepted ----------------------------------------------------------

NNBSP = "\u202f"  # fr-FR groups with a narrow no-break space
ACCEPTED = [
    # (text, locale, value)
    ("86459.5", "en-US", 86459.5),
    ("86,459.5", "en-US", 86459.5),
    ("1,234", "en-US", 1234),  # the locale's own grouping: one thousand two hundred …
    ("1,234,567.25", "en-US", 1234567.25),
    ("1 234.5", "en-US", 1234.5),  # a space groups in any locale
    (".5", "en-US", 0.5),
    ("5.", "en-US", 5),
    ("+3", "en-US", 3),
    ("  42  ", "en-US", 42),
    ("0", "en-US", 0),
    ("1,5", "de-DE", 1.5),
    ("86459,5", "de-DE", 86459.5),
    ("86.459,5", "de-DE", 86459.5),
    ("1.234,5", "de-DE", 1234.5),
    ("1.234.567", "de-DE", 1234567),
    ("1.5", "de-DE", 1.5),  # "." as the decimal point: it cannot be grouping here
    ("0.001", "de-DE", 0.001),
    ("1.2345", "de-DE", 1.2345),
    ("1234.5", "de-DE", 1234.5),
    (f"1{NNBSP}234,5", "fr-FR", 1234.5),
    ("1\u00a0234,5", "fr-FR", 1234.5),  # the older no-break space
    ("1 234,5", "fr-FR", 1234.5),  # the space a keyboard types
    ("0,5", "fr-FR", 0.5),
    ("12.5", "fr-FR", 12.5),
    ("12,34,567.5", "hi-IN", 1234567.5),  # lakh grouping
    ("1,23,45,678", "hi-IN", 12345678),
    ("1,234,567", "hi-IN", 1234567),  # groups of 3 are understood too
    ("86459.5", "ja-JP", 86459.5),
    ("86,459.5", "ja-JP", 86459.5),
    ("８６４５９．５", "ja-JP", 86459.5),  # full-width, as a Japanese IME types it
    ("1'234.5", "de-CH", 1234.5),  # de-CH groups with ’, an apostrophe is taken for it
    ("١٬٢٣٤٫٥", "ar-EG", 1234.5),  # the locale's own digits and separators
    ("123456789012345", "en-US", 123456789012345),  # 15 significant digits
    ("0.000000000000001", "en-US", 1e-15),
]


def test_numbers_are_read_for_the_locale() -> None:
    got = parse([(text, locale) for text, locale, _ in ACCEPTED])
    for (text, locale, value), result in zip(ACCEPTED, got, strict=True):
        assert result == {"value": value, "error": None}, (text, locale, result)


def test_a_leading_minus_only_where_negatives_are_allowed() -> None:
    cases = [("-5", "en-US"), ("−2,5", "de-DE"), ("-0", "en-US"), ("- 1.5", "en-US")]
    allowed = parse(cases, negative=True)
    assert [r["value"] for r in allowed] == [-5, -2.5, 0, -1.5]
    refused = parse(cases)
    assert all(r["value"] is None and "negative" in r["error"] for r in refused), refused


def test_whole_numbers_only_when_asked() -> None:
    got = parse(
        [("300", "en-US"), ("1,000", "en-US"), ("30.5", "en-US"), ("30,0", "de-DE")], integer=True
    )
    assert [r["value"] for r in got] == [300, 1000, None, 30]
    assert got[2]["error"] == "whole numbers only"


def test_empty_input_is_neither_a_value_nor_an_error() -> None:
    assert parse([("", "en-US"), ("   ", "de-DE")]) == [{"value": None, "error": None}] * 2


# --- parseNumber: refused, with the reason --------------------------------------------

REFUSED = [
    # (text, locale, words the message holds)
    ("86459,5", "en-US", ["“,”", "groups of 3 digits", "for decimals use “.”"]),
    (
        "86.459,5",
        "en-US",
        ["“,” after the decimal separator", "use “.” for decimals", "no grouping"],
    ),
    ("1,2,3", "en-US", ["groups of 3 digits"]),
    ("1,2,3", "de-DE", ["more than one decimal separator"]),
    ("0,123", "en-US", ["groups of 3 digits"]),
    ("1,234.5", "de-DE", ["“.” after the decimal separator", "use “,” for decimals"]),
    ("1.234", "de-DE", ["ambiguous", "1234 or 1,234"]),
    ("12.345", "de-DE", ["ambiguous"]),
    ("1.234", "fr-FR", ["ambiguous"]),
    ("1.234.567", "fr-FR", ["“.” is not a separator in fr-FR"]),
    ("1 23", "fr-FR", ["a space must separate groups of 3 digits"]),
    ("1,2345", "hi-IN", ["groups of 3 digits", "12,34,567"]),
    ("1,5", "de-CH", ["“,” is not a separator in de-CH"]),
    ("1e5", "en-US", ["no exponent"]),
    ("2E-3", "de-DE", ["no exponent"]),
    ("12345678901234567", "en-US", ["at most 15 significant digits"]),
    ("0.1234567890123456", "en-US", ["at most 15 significant digits"]),
    ("abc", "en-US", ["unexpected “a”"]),
    ("5$", "en-US", ["unexpected “$”"]),
    ("5-", "en-US", ["“-” only at the start"]),
    ("1..5", "en-US", ["more than one decimal separator"]),
    (".", "en-US", ["no digits"]),
    ("+", "ja-JP", ["no digits"]),
    ("Infinity", "en-US", ["unexpected"]),
]


def test_malformed_or_ambiguous_numbers_are_refused_with_the_reason() -> None:
    got = parse([(text, locale) for text, locale, _ in REFUSED], negative=True)
    for (text, locale, words), result in zip(REFUSED, got, strict=True):
        assert result["value"] is None, (text, locale, result)
        for word in words:
            assert word in result["error"], (text, locale, result["error"])


ZEROS_400 = "0" * 400
# Numbers with few significant digits whose magnitude a double cannot hold as typed.
BEYOND_A_DOUBLE = [
    # (text, locale, words the message holds)
    ("1" + ZEROS_400, "en-US", ["too large"]),  # Infinity
    ("-1" + ZEROS_400, "en-US", ["too large"]),
    ("5" + ZEROS_400 + ",0", "de-DE", ["too large"]),
    ("1" + "0" * 309, "en-US", ["too large"]),  # just past the largest double
    ("0." + ZEROS_400 + "1", "en-US", ["too small"]),  # 0
    ("-0." + ZEROS_400 + "1", "en-US", ["too small"]),
    ("0." + "0" * 320 + "5", "en-US", ["too small"]),  # a subnormal: digits lost
]


def test_a_magnitude_a_double_cannot_hold_is_refused() -> None:
    got = parse([(text, locale) for text, locale, _ in BEYOND_A_DOUBLE], negative=True)
    for (text, locale, words), result in zip(BEYOND_A_DOUBLE, got, strict=True):
        assert result["value"] is None, (text[:12], locale, result)
        for word in words:
            assert word in result["error"], (text[:12], locale, result["error"])


def test_the_largest_and_smallest_doubles_typed_out_are_read() -> None:
    got = parse(
        [("1" + "0" * 308, "en-US"), ("0." + "0" * 306 + "1", "en-US"), ("0." + ZEROS_400, "en-US")]
    )
    assert got == [
        {"value": 1e308, "error": None},
        {"value": 1e-307, "error": None},
        {"value": 0, "error": None},  # zero typed with many zeros is still zero
    ]


def test_separators_come_from_the_locale() -> None:
    got = call_module(
        "numbers.js",
        [["separatorsOf", locale] for locale in ("en-US", "de-DE", "fr-FR", "hi-IN", "ja-JP")],
    )
    seps = [(s["decimal"], s["group"], s["primary"], s["secondary"]) for s in got]
    assert seps == [
        (".", ",", 3, 3),
        (",", ".", 3, 3),
        (",", " ", 3, 3),  # the narrow no-break space, read as a space
        (".", ",", 3, 2),
        (".", ",", 3, 3),
    ]


def test_values_are_shown_as_the_locale_writes_them() -> None:
    calls = [
        ["formatForLocale", 86459.5, "en-US"],
        ["formatForLocale", 86459.5, "de-DE"],
        ["formatForLocale", 86459.5, "fr-FR"],
        ["formatForLocale", 1234567.5, "hi-IN"],
        ["formatForLocale", 0.1, "ja-JP"],
    ]
    assert call_module("numbers.js", calls) == [
        "86,459.5",
        "86.459,5",
        f"86{NNBSP}459,5",
        "12,34,567.5",
        "0.1",
    ]


def test_what_is_shown_reads_back_as_the_same_value() -> None:
    """The preview's text, typed again, is the value it showed (every locale)."""
    values = [86459.5, 0.001, 1234567.25, 12.5, 100]
    locales = ["en-US", "de-DE", "fr-FR", "hi-IN", "ja-JP"]
    pairs = [(v, loc) for v in values for loc in locales]
    shown = call_module("numbers.js", [["formatForLocale", v, loc] for v, loc in pairs])
    got = parse([(text, loc) for text, (_, loc) in zip(shown, pairs, strict=True)])
    assert [r["value"] for r in got] == [v for v, _ in pairs]


# --- formatMagnitude ----------------------------------------------------------------

MAGNITUDES = {
    0: "0",
    1e-8: "0.0₇1",
    1.234e-8: "0.0₇123",
    0.00123456: "0.00123",
    0.5: "0.5",
    0.9996: "1.00",  # rounds up into the next rule
    1: "1.00",
    999: "999.00",
    999.995: "1.00K",  # rounds up to the next unit, never "1000.00"
    1e3: "1.00K",
    12345.678: "12.35K",
    999_995: "1.00M",
    1e6: "1.00M",
    1e9: "1.00B",
    334_013.43e9: "334.01T",  # was "334013.43B"
    1e12: "1.00T",
    999.995e12: "1.00×10¹⁵",
    1e15: "1.00×10¹⁵",
    3.34e17: "3.34×10¹⁷",
    9.999e17: "1.00×10¹⁸",
    1.5e21: "1.50×10²¹",
    -1234567: "-1.23M",
    -999.995: "-1.00K",
    -1e-8: "-0.0₇1",
    -0.5: "-0.5",
}


def test_magnitudes_are_compact_from_tiny_to_beyond_trillions() -> None:
    values = list(MAGNITUDES)
    got = call_module("numbers.js", [["formatMagnitude", v] for v in values])
    assert got == [MAGNITUDES[v] for v in values]


def test_missing_magnitudes_are_a_dash() -> None:
    got = call_module(
        "numbers.js", [["formatMagnitude", v] for v in (None, NAN, INF, "@-Infinity")]
    )
    assert got == ["—"] * 4
    # the table's formatVolume is the same function
    got = call_module("dom.js", [["formatVolume", 334_013.43e9], ["formatVolume", None]])
    assert got == ["334.01T", "—"]


# --- times --------------------------------------------------------------------------


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


AT = ms(2026, 9, 21, 5, 5, 3)


@pytest.mark.parametrize(
    ("zone", "stamp"),
    [
        ("Asia/Tokyo", "21 Sep 2026 14:05:03"),
        ("America/New_York", "21 Sep 2026 01:05:03"),
        ("UTC", "21 Sep 2026 05:05:03"),
        ("Asia/Kolkata", "21 Sep 2026 10:35:03"),
        ("Pacific/Auckland", "21 Sep 2026 17:05:03"),
    ],
)
def test_times_are_written_in_the_zone(zone: str, stamp: str) -> None:
    styles = ["stamp", "time", "minutes", "daytime", "datetime", "day", "month", "year"]
    got = call_module("clock.js", [["formatZoned", AT, style, zone] for style in styles])
    date, time = stamp[:11], stamp[12:]
    assert got == [
        stamp,
        time,
        time[:5],
        f"{date[:6]} {time}",
        stamp[:-3],
        date[:2],
        date[3:6],
        date[7:],
    ]


def test_daylight_saving_changes_are_followed() -> None:
    """New York: 2026-03-08 02:00 EST → 03:00 EDT; 2026-11-01 02:00 EDT → 01:00 EST."""
    zone = "America/New_York"
    instants = [
        ms(2026, 3, 8, 6, 30),  # 01:30 EST
        ms(2026, 3, 8, 7, 30),  # 03:30 EDT: 02:30 never happened
        ms(2026, 11, 1, 5, 30),  # 01:30 EDT
        ms(2026, 11, 1, 6, 30),  # 01:30 EST, an hour later
        ms(2026, 11, 1, 7, 30),  # 02:30 EST
    ]
    got = call_module("clock.js", [["formatZoned", t, "minutes", zone] for t in instants])
    assert got == ["01:30", "03:30", "01:30", "01:30", "02:30"]
    labels = call_module("clock.js", [["zoneLabel", zone, t] for t in (instants[0], instants[1])])
    assert labels == [
        "times in America/New_York (UTC-5)",
        "times in America/New_York (UTC-4)",
    ]


def test_the_zone_label_names_the_zone_and_its_offset() -> None:
    calls = [
        ["zoneLabel", "Asia/Tokyo", AT],
        ["zoneLabel", "Asia/Kolkata", AT],
        ["zoneLabel", "UTC", AT],
        ["zoneLabel", "Etc/UTC", AT],
        ["zoneLabel", "Europe/London", ms(2026, 1, 15)],
    ]
    assert call_module("clock.js", calls) == [
        "times in Asia/Tokyo (UTC+9)",
        "times in Asia/Kolkata (UTC+5:30)",
        "times in UTC",
        "times in UTC",
        "times in Europe/London (UTC+0)",
    ]


def test_chart_tick_labels_are_the_ticks_instant_in_the_zone() -> None:
    """lightweight-charts' TickMarkType: 0 year, 1 month, 2 day, 3 time, 4 with seconds."""
    midnight_utc = ms(2026, 1, 1)  # 09:00 on 1 Jan in Tokyo, 19:00 on 31 Dec in New York
    calls = [
        ["chartTickLabel", midnight_utc, kind, zone]
        for zone in ("Asia/Tokyo", "America/New_York")
        for kind in range(5)
    ]
    assert call_module("clock.js", calls) == [
        "2026", "Jan", "01", "09:00", "09:00:00",
        "2025", "Dec", "31", "19:00", "19:00:00",
    ]  # fmt: skip


def test_missing_times_are_a_dash() -> None:
    got = call_module("clock.js", [["formatZoned", v, "time", "UTC"] for v in (None, NAN, INF)])
    assert got == ["—"] * 3


def test_alert_times_carry_the_date_when_not_today() -> None:
    at = 1_789_967_103_000  # Date.UTC(2026, 8, 21, 5, 5, 3)
    calls = [["formatTime", at, at + 3_600_000], ["formatTime", at, at + 86_400_000]]
    got = call_module("dom.js", calls, time_zone="Asia/Tokyo")
    assert got == ["14:05:03", "21 Sep 14:05:03"]


# --- funding rates and ratios (issue 19) ----------------------------------------------

FUNDING_TEXTS = [
    (0.0001, "+0.0100%"),
    (-0.00028908, "-0.0289%"),
    (0.0075, "+0.7500%"),
    (-0.0075, "-0.7500%"),
    (6.76e-06, "+0.0007%"),
    (-4e-07, "0.0000%"),  # rounds to nothing: no sign
    (0, "0.0000%"),
    (None, "—"),
    (NAN, "—"),
    (INF, "—"),
]
# rate → heat level: |rate − 0.0001| from 0.00005, 0.0001, 0.0002, 0.0004, 0.0008 → 1…5
FUNDING_HEAT = [
    (0.0001, 0),
    (0.00014, 0),
    (0.00015, 1),  # 0.005 % above neutral
    (0.0002, 2),
    (0.0003, 3),
    (0.0005, 4),
    (0.0009, 5),
    (0.0075, 5),
    (0.00005, -1),
    (0, -2),  # nothing paid is 0.01 % below neutral
    (-0.0001, -3),
    (-0.0003, -4),
    (-0.0075, -5),
    (None, None),
    (NAN, None),
]


def test_funding_rates_are_written_in_percent_per_interval() -> None:
    calls = [["formatFundingRate", rate] for rate, _ in FUNDING_TEXTS]
    assert call_module("numbers.js", calls) == [text for _, text in FUNDING_TEXTS]


def test_funding_heat_diverges_around_the_neutral_rate() -> None:
    calls = [["fundingHeat", rate] for rate, _ in FUNDING_HEAT]
    assert call_module("numbers.js", calls) == [level for _, level in FUNDING_HEAT]


def test_ratios_have_two_decimals() -> None:
    calls = [["formatRatio", v] for v in (0.8309, 1.125, 2, None, NAN)]
    assert call_module("numbers.js", calls) == ["0.83", "1.13", "2.00", "—", "—"]
