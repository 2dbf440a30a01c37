"""The EPA NowCast (``processor.airquality.nowcast``): EPA's published example, the
completeness rule, truncation, the hand-checked edge cases, and the rules that must hold for
any history (within the valid hours' range; a steady series is its own NowCast)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from processor.airquality import HOURS, Pollutant, nowcast

NAN = math.nan

#: EPA, "Computing the NowCast" (the NowCast method presentation AirNow-Tech links from "The
#: NowCast for PM2.5 and PM10"): hours oldest to newest 50 80 75 90 82 53 64 74 21 10 16 13
#: ug/m3; range 80, scaled rate 80/90, weight 1 - 0.89 = 0.11 < 0.5 so 0.5; NowCast 17.4.
EPA_EXAMPLE_NEWEST_FIRST = [13.0, 16.0, 10.0, 21.0, 74.0, 64.0, 53.0, 82.0, 90.0, 75.0, 80.0, 50.0]


def one(hours: list[float], pollutant: Pollutant = "pm25") -> float:
    return float(nowcast(np.array([hours], dtype=np.float64), pollutant)[0])


def test_epa_worked_example_is_17_4() -> None:
    assert one(EPA_EXAMPLE_NEWEST_FIRST) == 17.4


def test_epa_worked_example_as_pm10_is_truncated_to_whole_micrograms() -> None:
    assert one(EPA_EXAMPLE_NEWEST_FIRST, "pm10") == 17.0


def test_the_weight_factor_is_min_over_max_when_above_one_half() -> None:
    # min/max = 8/10 = 0.8; by hand: sum(0.8^i c_i) / sum(0.8^i) with c = 10, 8, 10, 8, ...
    hours = [10.0, 8.0] * 6
    w = 0.8
    expected = sum(w**i * c for i, c in enumerate(hours)) / sum(w**i for i in range(HOURS))
    assert one(hours) == math.floor(expected * 10) / 10 == 9.1


def test_the_hourly_means_go_in_raw_and_only_the_result_is_truncated() -> None:
    # AirNow-Tech, "Clarification on Truncation vs. Rounding": raw hours, truncated result.
    # Raw: a weighted mean of 9.19s and one 9.01 is above 9.1 -> 9.1. Had each hour been
    # truncated first (9.1s and one 9.0), the mean would fall just under 9.1 -> 9.0.
    hours = [9.19] * 11 + [9.01]
    assert one(hours) == 9.1
    assert one([math.floor(h * 10) / 10 for h in hours]) == 9.0
    assert one([9.09] * 12) == 9.0


@pytest.mark.parametrize(
    ("newest_three", "exists"),
    [
        ((1.0, 1.0, 1.0), True),
        ((NAN, 1.0, 1.0), True),
        ((1.0, NAN, 1.0), True),
        ((1.0, 1.0, NAN), True),
        ((NAN, NAN, 1.0), False),
        ((NAN, 1.0, NAN), False),
        ((1.0, NAN, NAN), False),
        ((NAN, NAN, NAN), False),
    ],
)
def test_two_of_the_three_newest_hours_must_be_valid(
    newest_three: tuple[float, float, float], exists: bool
) -> None:
    value = one([*newest_three, *([5.0] * 9)])
    assert math.isnan(value) is not exists


def test_missing_older_hours_are_left_out_of_both_sums() -> None:
    # Valid: c1 = 20, c2 = 10, c12 = 40; w = max(10/40, 0.5) = 0.5.
    hours = [20.0, 10.0, *([NAN] * 9), 40.0]
    expected = (20 + 0.5 * 10 + 0.5**11 * 40) / (1 + 0.5 + 0.5**11)
    assert one(hours) == math.floor(expected * 10) / 10 == 16.6


def test_a_single_very_high_hour_dominates_through_the_floor_of_one_half() -> None:
    # Eleven clean hours (0) and a 71 ug/m3 pulse now: min/max = 0 -> w = 0.5, and the pulse
    # alone carries 1 / (1 + 0.5 + ... + 0.5^11) of the weight: 71 / 1.99951 = 35.508 -> 35.5,
    # the first value of "Unhealthy for Sensitive Groups". An hour later it weighs half.
    assert one([71.0, *([0.0] * 11)]) == 35.5
    assert one([0.0, 71.0, *([0.0] * 10)]) == 17.7


def test_every_hour_zero_is_zero_not_a_division_by_zero() -> None:
    assert one([0.0] * HOURS) == 0.0


def test_negative_hourly_means_count_as_zero() -> None:
    assert one([-2.0, 4.0, *([4.0] * 10)]) == one([0.0, 4.0, *([4.0] * 10)])


def test_the_shape_must_be_n_by_12() -> None:
    with pytest.raises(ValueError, match=r"\(n, 12\)"):
        nowcast(np.zeros((3, 11)), "pm25")


def test_many_sensors_are_computed_independently() -> None:
    rows = np.array(
        [EPA_EXAMPLE_NEWEST_FIRST, [NAN, NAN, *([1.0] * 10)], [7.0] * HOURS], dtype=np.float64
    )
    assert np.array_equal(nowcast(rows, "pm25"), [17.4, NAN, 7.0], equal_nan=True)


histories = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 20), st.just(HOURS)),
    elements=st.one_of(st.just(NAN), st.floats(0.0, 2000.0)),
)


@settings(max_examples=200, deadline=None)
@given(histories)
@example(np.full((1, HOURS), 1.99999999999))
def test_a_nowcast_lies_within_its_valid_hours(hours: np.ndarray) -> None:
    values = nowcast(hours, "pm25")
    low = np.where(np.isnan(hours), np.inf, hours).min(axis=1)
    high = np.where(np.isnan(hours), -np.inf, hours).max(axis=1)
    known = ~np.isnan(values)
    # Truncation may take the mean up to one step (0.1) below the lowest hour. It never takes it
    # above the highest, except that a value within 5e-7 of a step under a boundary (float noise
    # from summing) is read as the boundary: 1.99999999999 reports 2.0.
    assert np.all(values[known] <= high[known] + 1e-7)
    assert np.all(values[known] >= np.floor(low[known] * 10) / 10 - 1e-9)
    recent = (~np.isnan(hours[:, :3])).sum(axis=1) >= 2
    assert np.array_equal(known, recent)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 50_000), st.integers(2, HOURS))
def test_a_steady_series_is_its_own_nowcast(tenths: int, valid_hours: int) -> None:
    level = tenths / 10
    hours = [level] * valid_hours + [NAN] * (HOURS - valid_hours)
    assert one(hours) == level
    assert one(hours, "pm10") == math.floor(level)
