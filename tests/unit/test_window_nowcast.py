"""The NowCast on hourly windows: each sensor's recent hourly means kept as state, the
aggregate of an hourly pm25/pm10 window carrying the NowCast and AQI, and the same NowCast
after a restore from the rows at any point (windows closed since a row was written are
folded in on restore, as they were live)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.state.aggregates import sensor_keys
from processor.state.rows import Row
from processor.state.spec import Readings, WindowSpec
from processor.state.windows import PartitionWindows

HOUR = 3_600_000  # ms
HOUR_US = HOUR * 1000
T0 = 1_796_083_200 * 1_000_000  # 2026-12-01T00:00:00Z in µs
FIELDS = ("pm25", "pm10", "temp")
#: EPA's worked example of the NowCast ("Computing the NowCast", AirNow): hourly PM2.5 means,
#: newest first, whose NowCast is 17.4 µg/m³ (AQI 66, Moderate, under the 2024 breakpoints).
EPA_NEWEST_FIRST = [13, 16, 10, 21, 74, 64, 53, 82, 90, 75, 80, 50]


def _readings(rows: list[tuple[int, str, int, float]]) -> Readings:
    """(offset, sensor, hour, pm25) rows, pm10 twice pm25, temp 20: one reading mid-hour."""
    return Readings(
        np.array([r[0] for r in rows], dtype=np.int64),
        sensor_keys([r[1] for r in rows]),
        np.array([T0 + r[2] * HOUR_US + HOUR_US // 2 for r in rows], dtype=np.int64),
        np.array([[r[3], 2 * r[3], 20.0] for r in rows], dtype=np.float64).reshape(-1, 3),
    )


def _hourly(values: list[float], sensor: str = "s1") -> list[tuple[int, str, int, float]]:
    """One reading an hour (NaN: none that hour), then one two hours on to close the last."""
    rows = [(h, sensor, h, v) for h, v in enumerate(values) if not math.isnan(v)]
    return [*rows, (len(values), sensor, len(values) + 1, 1.0)]


def _aggregates(state: PartitionWindows, rows: list[tuple[int, str, int, float]]) -> list[Any]:
    _, closed = state.apply(_readings(rows))
    return closed.rows()


SPEC = WindowSpec(HOUR, 0, FIELDS, dedup=False)


def test_the_epa_example_gives_its_nowcast_in_the_twelfth_hours_aggregate() -> None:
    published = _aggregates(PartitionWindows(SPEC), _hourly(EPA_NEWEST_FIRST[::-1]))
    last = published[11]
    assert last["window_start"] == "2026-12-01T11:00:00Z"
    assert last["nowcast"]["pm25"] == {"value": 17.4, "aqi": 66, "category": "Moderate"}
    assert last["nowcast"]["pm10"]["value"] == 34.0  # PM10 truncated to whole µg/m³
    assert "temp" not in last["nowcast"]


def test_the_first_hour_has_no_nowcast_and_the_second_has_one() -> None:
    published = _aggregates(PartitionWindows(SPEC), _hourly([10.0, 10.0]))
    assert "nowcast" not in published[0]  # 2 of the 3 newest hours must have a value
    assert published[1]["nowcast"]["pm25"]["value"] == 10.0


def test_a_missing_hour_is_a_gap_in_the_ring_not_a_shift() -> None:
    # Hours 0, 1 and 3 have means; hour 2 none: at hour 3, two of the three newest are valid.
    published = _aggregates(PartitionWindows(SPEC), _hourly([30.0, 30.0, math.nan, 6.0]))
    assert [a["window_start"][11:13] for a in published] == ["00", "01", "03"]
    # weight = 6/30 -> 0.5: (6 + 0.25*30 + 0.125*30) / (1 + 0.25 + 0.125)
    assert published[2]["nowcast"]["pm25"]["value"] == math.floor(10 * 17.25 / 1.375) / 10


def test_windows_other_than_hourly_carry_no_nowcast() -> None:
    spec = WindowSpec(HOUR // 2, 0, FIELDS, dedup=False)
    assert all("nowcast" not in a for a in _aggregates(PartitionWindows(spec), _hourly([9.0] * 4)))


def test_each_sensor_has_its_own_ring() -> None:
    rows = sorted(_hourly([50.0] * 3, "a") + _hourly([5.0] * 3, "b"), key=lambda r: (r[2], r[1]))
    rows = [(i, sensor, hour, value) for i, (_, sensor, hour, value) in enumerate(rows)]
    published = _aggregates(PartitionWindows(SPEC), rows)
    last = {a["sensor_id"]: a["nowcast"]["pm25"]["value"] for a in published[-2:]}
    assert last == {"a": 50.0, "b": 5.0}


def _run(
    rows: list[tuple[int, str, int, float]], cuts: list[int], restore_after: set[int]
) -> list[Any]:
    """The aggregates of ``rows`` in batches cut at ``cuts``, restored from the rows written
    so far after each batch in ``restore_after``."""
    state, written, published = PartitionWindows(SPEC), list[Row](), list[Any]()
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(rows)}), len(rows)]
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        published += _aggregates(state, rows[lo:hi])
        written += state.take_changes().pairs()
        if i in restore_after:
            state = PartitionWindows.from_rows(SPEC, written)
    return published


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.just(math.nan), st.floats(0, 500)), min_size=2, max_size=20),
    st.lists(st.floats(0, 500), min_size=2, max_size=20),
    st.lists(st.integers(0, 45), max_size=8),
    st.sets(st.integers(0, 8)),
)
def test_a_restore_at_any_batch_gives_the_same_nowcasts(
    first: list[float], second: list[float], cuts: list[int], restore_after: set[int]
) -> None:
    merged = sorted(_hourly(first, "a") + _hourly(second, "b"), key=lambda r: (r[2], r[1]))
    rows = [(i, sensor, hour, value) for i, (_, sensor, hour, value) in enumerate(merged)]
    assert _run(rows, cuts, restore_after) == _run(rows, [], set())


def test_a_window_closed_by_another_sensor_after_its_row_was_written_is_folded_on_restore() -> None:
    # a's hour-1 window is closed by b's hour-2 reading (a has none in hour 2), after a's row
    # was last written: the row holds it open; the restore must fold it into a's ring, or
    # a's hour-3 NowCast lacks hour 1 (and with it, two of the three newest hours).
    merged = sorted(
        _hourly([30.0, 30.0, math.nan, 6.0], "a") + _hourly([10.0] * 5, "b"),
        key=lambda r: (r[2], r[1]),
    )
    rows = [(i, sensor, hour, value) for i, (_, sensor, hour, value) in enumerate(merged)]
    a_hour_1 = next(i for i, r in enumerate(rows) if r[1:3] == ("a", 1))
    b_hour_2 = next(i for i, r in enumerate(rows) if r[1:3] == ("b", 2))
    whole = _run(rows, [], set())
    # a's last row: after the first batch; b's hour 2 closes a's hour 1 in the second.
    assert _run(rows, [a_hour_1 + 1, b_hour_2 + 1], {1}) == whole
    a_hour_3 = next(a for a in whole if a["sensor_id"] == "a" and "T03" in a["window_start"])
    assert a_hour_3["nowcast"]["pm25"]["value"] == math.floor(10 * 17.25 / 1.375) / 10
