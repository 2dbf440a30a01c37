"""The AQI (``processor.airquality.aqi``) against the 2024 breakpoint tables: every category
boundary of PM2.5 and PM10, truncation before the table is read, rounding, values above the
table, missing values; and the aggregate's NowCast entries (``report``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.airquality import (
    CATEGORIES,
    TABLES,
    TABLES_VERSION,
    Pollutant,
    aqi,
    nowcast_entries,
)
from processor.airquality.aqi import NO_VALUE

NAN = math.nan


def score(value: float, pollutant: Pollutant) -> tuple[int, str]:
    result = aqi(np.array([value]), pollutant)
    return int(result.aqi[0]), CATEGORIES[result.category[0]]


#: 40 CFR 58 App. G Table 2 (2024) / EPA-454/B-24-002 Table 6: each row's ends.
PM25_BOUNDARIES = [
    (0.0, 0, "Good"),
    (9.0, 50, "Good"),
    (9.1, 51, "Moderate"),
    (35.4, 100, "Moderate"),
    (35.5, 101, "Unhealthy for Sensitive Groups"),
    (55.4, 150, "Unhealthy for Sensitive Groups"),
    (55.5, 151, "Unhealthy"),
    (125.4, 200, "Unhealthy"),
    (125.5, 201, "Very Unhealthy"),
    (225.4, 300, "Very Unhealthy"),
    (225.5, 301, "Hazardous"),
    (325.4, 500, "Hazardous"),
]
PM10_BOUNDARIES = [
    (0, 0, "Good"),
    (54, 50, "Good"),
    (55, 51, "Moderate"),
    (154, 100, "Moderate"),
    (155, 101, "Unhealthy for Sensitive Groups"),
    (254, 150, "Unhealthy for Sensitive Groups"),
    (255, 151, "Unhealthy"),
    (354, 200, "Unhealthy"),
    (355, 201, "Very Unhealthy"),
    (424, 300, "Very Unhealthy"),
    (425, 301, "Hazardous"),
    (604, 500, "Hazardous"),
]


@pytest.mark.parametrize(("value", "index", "category"), PM25_BOUNDARIES)
def test_pm25_boundaries(value: float, index: int, category: str) -> None:
    assert score(value, "pm25") == (index, category)


@pytest.mark.parametrize(("value", "index", "category"), PM10_BOUNDARIES)
def test_pm10_boundaries(value: float, index: int, category: str) -> None:
    assert score(value, "pm10") == (index, category)


def test_the_category_names_are_epas() -> None:
    assert CATEGORIES == (
        "Good",
        "Moderate",
        "Unhealthy for Sensitive Groups",
        "Unhealthy",
        "Very Unhealthy",
        "Hazardous",
    )
    assert "2024" in TABLES_VERSION


@pytest.mark.parametrize(
    ("value", "pollutant", "expected"),
    [
        (9.04, "pm25", (50, "Good")),  # truncated to 9.0, not rounded to 9.0 or read as 9.04
        (9.09, "pm25", (50, "Good")),  # 9.09 would round to 9.1 (Moderate); truncation keeps 9.0
        (35.49, "pm25", (100, "Moderate")),
        (54.9, "pm10", (50, "Good")),  # PM10 truncates to whole ug/m3
        (154.99, "pm10", (100, "Moderate")),
    ],
)
def test_the_concentration_is_truncated_before_the_table(
    value: float, pollutant: Pollutant, expected: tuple[int, str]
) -> None:
    assert score(value, pollutant) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # By hand from Equation 1 and the 2024 rows, rounded to the nearest integer:
        (17.4, 66),  # 49/26.3 * 8.3 + 51 = 66.46 (the EPA NowCast example's 17.4)
        (35.9, 102),  # 49/19.9 * 0.4 + 101 = 101.98
        (4.5, 25),  # 50/9.0 * 4.5 = 25.0
        (12.0, 56),  # 49/26.3 * 2.9 + 51 = 56.40
        (100.0, 182),  # 49/69.9 * 44.5 + 151 = 182.19
        (150.0, 225),  # 99/99.9 * 24.5 + 201 = 225.28
    ],
)
def test_pm25_values_inside_rows_follow_equation_1(value: float, expected: int) -> None:
    assert score(value, "pm25")[0] == expected


@pytest.mark.parametrize(
    ("value", "pollutant", "expected"),
    [
        # App. G 12(ii): above the top breakpoint, the last row's line is extended.
        (325.5, "pm25", 500),  # 199/99.9 * 100.0 + 301 = 500.20
        (400.0, "pm25", 649),  # 199/99.9 * 174.5 + 301 = 648.60
        (500.0, "pm25", 848),  # 199/99.9 * 274.5 + 301 = 847.80
        (605, "pm10", 501),  # 199/179 * 180 + 301 = 501.11
        (1000, "pm10", 940),  # 199/179 * 575 + 301 = 940.25
    ],
)
def test_above_the_table_the_top_row_is_extended_and_hazardous(
    value: float, pollutant: Pollutant, expected: int
) -> None:
    assert score(value, pollutant) == (expected, "Hazardous")


def test_missing_values_have_no_aqi_and_negatives_count_as_zero() -> None:
    result = aqi(np.array([NAN, math.inf, -math.inf, -0.4, 0.0]), "pm25")
    assert result.aqi.tolist() == [NO_VALUE, NO_VALUE, NO_VALUE, 0, 0]
    assert result.category.tolist() == [NO_VALUE, NO_VALUE, NO_VALUE, 0, 0]
    assert result.aqi.dtype == np.int64
    assert result.category.dtype == np.int8


def test_the_shape_must_be_n() -> None:
    with pytest.raises(ValueError, match=r"\(n,\)"):
        aqi(np.zeros((2, 2)), "pm25")


def equation_1(value: float, pollutant: Pollutant) -> tuple[int, int]:
    """A plain float reading of EPA's procedure, one value at a time: the reference."""
    t = TABLES[pollutant]
    c = math.floor(round(max(value, 0.0) * t.scale, 6)) / t.scale
    row = max(i for i, low in enumerate(t.low) if low <= c)
    slope = (t.aqi_high[row] - t.aqi_low[row]) / (t.high[row] - t.low[row])
    return math.floor(slope * (c - t.low[row]) + t.aqi_low[row] + 0.5), row


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-5.0, 1500.0), min_size=1, max_size=30),
    st.sampled_from(["pm25", "pm10"]),
)
def test_the_vectorized_aqi_equals_equation_1_read_one_value_at_a_time(
    values: list[float], pollutant: Pollutant
) -> None:
    result = aqi(np.array(values), pollutant)
    expected = [equation_1(v, pollutant) for v in values]
    assert list(zip(result.aqi.tolist(), result.category.tolist(), strict=True)) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 1500.0), min_size=2, max_size=50))
def test_the_aqi_never_falls_as_the_concentration_rises(values: list[float]) -> None:
    ordered = np.sort(np.array(values))
    result = aqi(ordered, "pm25")
    assert np.all(np.diff(result.aqi) >= 0)
    assert np.all(np.diff(result.category) >= 0)


def test_entries_carry_value_aqi_and_category_for_the_pollutants_that_have_one() -> None:
    epa_example = [13, 16, 10, 21, 74, 64, 53, 82, 90, 75, 80, 50]
    pm25 = np.array([epa_example, [NAN] * 12, [40.0] * 12], dtype=np.float64)
    pm10 = np.array([[NAN] * 12, [NAN] * 12, [160.0] * 12], dtype=np.float64)
    entries = nowcast_entries({"pm25": pm25, "pm10": pm10})
    assert entries == [
        {"pm25": {"value": 17.4, "aqi": 66, "category": "Moderate"}},
        {},
        {
            "pm25": {"value": 40.0, "aqi": 112, "category": "Unhealthy for Sensitive Groups"},
            "pm10": {"value": 160.0, "aqi": 103, "category": "Unhealthy for Sensitive Groups"},
        },
    ]
    value = entries[0]["pm25"]
    assert type(value["value"]) is float
    assert type(value["aqi"]) is int


def test_entries_need_the_same_sensors_for_every_pollutant() -> None:
    with pytest.raises(ValueError, match="same sensors"):
        nowcast_entries({"pm25": np.zeros((2, 12)), "pm10": np.zeros((3, 12))})


def test_no_histories_no_entries() -> None:
    assert nowcast_entries({}) == []
