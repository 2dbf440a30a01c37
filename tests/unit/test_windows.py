"""The window state against a plain per-record oracle: any batching, re-reads after a restore,
and hand-checked cases of the contract (issue 17)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.errors import StateError
from processor.state.aggregates import Aggregates, sensor_ids, sensor_keys
from processor.state.rows import Row as StateRow
from processor.state.spec import Readings, Verdict, WindowSpec
from processor.state.tables import DedupKeys, OpenWindows, in_start_order
from processor.state.windows import PartitionWindows

COUNTED, LATE, DUPLICATE = Verdict.COUNTED, Verdict.LATE, Verdict.DUPLICATE
FIELDS = ("pm25", "temp")
MINUTE = 60_000  # ms, as WindowSpec takes it
MINUTE_US = 60_000_000
T0 = 1_700_000_040_000_000  # µs: 2023-11-14T22:14:00Z, a whole minute

Record = tuple[int, str, int, tuple[float, ...]]  # offset, sensor id, event µs, values
Row = tuple[Any, ...]


@dataclass
class Oracle:
    """The contract read literally, one record at a time, with dicts; times in µs."""

    spec: WindowSpec
    max_event: int | None = None
    applied: dict[str, int] = field(default_factory=dict)
    windows: dict[tuple[str, int], list[Any]] = field(default_factory=dict)
    counted: dict[tuple[str, int], int] = field(default_factory=dict)
    closers: dict[int, int] = field(default_factory=dict)  # closed start -> closing offset

    def watermark(self) -> int | None:
        return None if self.max_event is None else self.max_event - self.spec.lateness_ms * 1000

    def closed(self, event: int) -> bool:
        length = self.spec.length_ms * 1000
        end = event - event % length + length
        watermark = self.watermark()
        return watermark is not None and end <= watermark

    def apply(self, record: Record) -> tuple[Verdict, list[Row]]:
        offset, sensor, event, values = record
        if offset <= self.applied.get(sensor, -1):
            start = event - event % (self.spec.length_ms * 1000)
            if self.closed(event) and self.closers.get(start, -1) < offset:
                return LATE, []
            if self.spec.dedup and self.counted[sensor, event] != offset:
                return DUPLICATE, []
            return COUNTED, []
        self.applied[sensor] = offset
        if self.closed(event):
            verdict = LATE
        elif self.spec.dedup and (sensor, event) in self.counted:
            verdict = DUPLICATE
        else:
            verdict = COUNTED
            self.count(sensor, event, values)
        self.max_event = event if self.max_event is None else max(self.max_event, event)
        return verdict, self.close()

    def count(self, sensor: str, event: int, values: tuple[float, ...]) -> None:
        start = event - event % (self.spec.length_ms * 1000)
        n = len(self.spec.fields)
        window = self.windows.setdefault(
            (sensor, start), [0, [0] * n, [0.0] * n, [math.inf] * n, [-math.inf] * n]
        )
        window[0] += 1
        for f, value in enumerate(values):
            if math.isfinite(value):
                window[1][f] += 1
                window[2][f] += value
                window[3][f] = min(window[3][f], value)
                window[4][f] = max(window[4][f], value)
        if self.spec.dedup:
            self.counted[sensor, event] = self.applied[sensor]

    def close(self) -> list[Row]:
        done = sorted(
            (start, sensor.encode() + b"\x01", sensor)
            for sensor, start in self.windows
            if self.closed(start)
        )
        rows = []
        for start, _, sensor in done:
            count, counts, totals, lows, highs = self.windows.pop((sensor, start))
            stats = tuple(
                (c, t / c, lo, hi) if c else (0, None, None, None)
                for c, t, lo, hi in zip(counts, totals, lows, highs, strict=True)
            )
            rows.append((sensor, start, start + self.spec.length_ms * 1000, count, stats))
        return rows

    def release(self, commit: int) -> None:
        """Forget closed windows closed before the commit point, and their keys."""
        self.closers = {start: o for start, o in self.closers.items() if o >= commit}
        self.counted = {
            (sensor, event): o
            for (sensor, event), o in self.counted.items()
            if not self.closed(event)
            or event - event % (self.spec.length_ms * 1000) in self.closers
        }


def readings(records: list[Record]) -> Readings:
    return Readings(
        np.array([r[0] for r in records], dtype=np.int64),
        sensor_keys([r[1] for r in records]),
        np.array([r[2] for r in records], dtype=np.int64),
        np.array([r[3] for r in records], dtype=np.float64).reshape(len(records), len(FIELDS)),
    )


def as_rows(aggregates: Aggregates) -> list[Row]:
    rows = []
    for i, sensor in enumerate(sensor_ids(aggregates.sensors)):
        stats = tuple(
            (int(c), float(m), float(lo), float(hi)) if c else (0, None, None, None)
            for c, m, lo, hi in zip(
                aggregates.field_count[i],
                aggregates.mean[i],
                aggregates.minimum[i],
                aggregates.maximum[i],
                strict=True,
            )
        )
        start, end = int(aggregates.start_us[i]), int(aggregates.end_us[i])
        rows.append((sensor, start, end, int(aggregates.count[i]), stats))
    return rows


def run(
    state: PartitionWindows,
    records: list[Record],
    cuts: list[int],
    written: list[StateRow] | None = None,
) -> tuple[list[int], list[Row]]:
    """Apply ``records`` in the batches ``cuts`` cut them into; with ``written``, append each
    batch's rows (``take_changes``) to it."""
    verdicts: list[int] = []
    rows: list[Row] = []
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(records)), len(records)]
    for lo, hi in itertools.pairwise(bounds):
        batch_verdicts, closed = state.apply(readings(records[lo:hi]))
        if written is not None:
            written += state.take_changes().pairs()
        verdicts += batch_verdicts.tolist()
        rows += as_rows(closed)
    return verdicts, rows


def run_oracle(oracle: Oracle, records: list[Record]) -> tuple[list[int], list[Row]]:
    verdicts: list[int] = []
    rows: list[Row] = []
    for record in records:
        verdict, closed = oracle.apply(record)
        verdicts.append(verdict)
        for _, start, *_ in closed:
            oracle.closers.setdefault(start, record[0])
        rows += closed
    return verdicts, rows


def state_arrays(state: PartitionWindows) -> dict[str, Any]:
    """All the state holds, as lists: the largest event time seen, the closed windows kept for
    replays, and the tables of sensors (key, applied offset), open windows and dedup keys.
    Read from its attributes: its rows (``take_changes``) hold only what a batch changed."""
    tables = {
        "sensors": state._sensors,
        "windows": in_start_order(state._windows, OpenWindows.empty(len(state.spec.fields))),
        "dedup": in_start_order(state._dedup, DedupKeys.empty()),
    }
    return {
        "max_event": state._max_event,
        "closed": sorted(state._closed.items()),
        **{
            f"{table}.{name}": column.tolist()
            for table, columns in tables.items()
            for name, column in columns.columns().items()
        },
    }


specs = st.builds(
    WindowSpec,
    length_ms=st.sampled_from([7, 10]),
    lateness_ms=st.sampled_from([0, 5, 13, 30]),
    fields=st.just(FIELDS),
    dedup=st.booleans(),
)
SUB_MS = [0, 1, 999]
value = st.one_of(st.just(math.nan), st.floats(-1e6, 1e6, allow_nan=False))
record_lists = st.lists(
    st.tuples(
        st.integers(1, 3),  # offset gap
        st.sampled_from(["a", "b", "a\x00", "é"]),
        # µs, out of order: many late readings, many repeated timestamps, and some a µs or
        # a ms less one apart (the windows are 7 or 10 ms long)
        st.builds(lambda ms, us: ms * 1000 + us, st.integers(-25, 90), st.sampled_from(SUB_MS)),
        st.tuples(value, value),
    ),
    max_size=60,
).map(
    lambda drawn: [
        (sum(d[0] for d in drawn[: i + 1]), sensor, event, values)
        for i, (_, sensor, event, values) in enumerate(drawn)
    ]
)
cut_lists = st.lists(st.integers(0, 60), max_size=8)


@given(specs, record_lists, cut_lists)
def test_any_batching_gives_the_per_record_verdicts_and_aggregates(
    spec: WindowSpec, records: list[Record], cuts: list[int]
) -> None:
    assert run(PartitionWindows(spec), records, cuts) == run_oracle(Oracle(spec), records)


@given(specs, record_lists, cut_lists, cut_lists)
def test_two_batchings_leave_the_same_state(
    spec: WindowSpec, records: list[Record], cuts: list[int], other: list[int]
) -> None:
    one, two = PartitionWindows(spec), PartitionWindows(spec)
    oracle = Oracle(spec)
    run(one, records, cuts)
    run(two, records, other)
    run_oracle(oracle, records)
    assert state_arrays(one) == state_arrays(two)
    assert one.watermark_us == two.watermark_us == oracle.watermark()


@settings(max_examples=200)
@given(specs, record_lists, cut_lists, cut_lists, st.data())
def test_re_reading_after_a_restore_at_any_batch_changes_nothing_twice(
    spec: WindowSpec, records: list[Record], cuts: list[int], again: list[int], data: st.DataObject
) -> None:
    """A crash after ``k`` records: the state is restored from the rows of every batch so far,
    and the engine re-reads from an earlier commit point ``c``, batching differently."""
    k = data.draw(st.integers(0, len(records)))
    c = data.draw(st.integers(0, k))
    restore = data.draw(st.booleans())
    whole_verdicts, whole_rows = run(PartitionWindows(spec), records, cuts)
    first = PartitionWindows(spec)
    written: list[StateRow] = []
    _, rows_before = run(first, records[:k], cuts, written)
    state = PartitionWindows.from_rows(spec, written) if restore else first

    saved = state_arrays(state)
    replay_verdicts, replay_rows = run(state, records[c:k], again)
    assert state_arrays(state) == saved
    assert replay_rows == []
    assert replay_verdicts == whole_verdicts[c:k]  # closed windows are kept: none released

    verdicts, rows = run(state, records[c:], again)
    assert verdicts[k - c :] == whole_verdicts[k:]
    assert rows_before + rows == whole_rows


def test_windows_align_to_the_epoch_and_a_reading_at_the_end_opens_the_next() -> None:
    state = PartitionWindows(WindowSpec(MINUTE, 0, FIELDS, dedup=False))
    at = [T0 + 1, T0 + MINUTE_US - 1, T0 + MINUTE_US, T0 + 2 * MINUTE_US]
    verdicts, closed = state.apply(
        readings([(i, "s1", t, (float(i), 1.0)) for i, t in enumerate(at)])
    )
    assert verdicts.tolist() == [COUNTED] * 4
    assert [(r["window_start"], r["window_end"], r["count"]) for r in closed.rows()] == [
        ("2023-11-14T22:14:00Z", "2023-11-14T22:15:00Z", 2),
        ("2023-11-14T22:15:00Z", "2023-11-14T22:16:00Z", 1),
    ]
    assert closed.rows()[0]["fields"]["pm25"] == {"count": 2, "mean": 0.5, "min": 0.0, "max": 1.0}


def test_a_watermark_equal_to_the_end_closes_the_window_and_not_before() -> None:
    state = PartitionWindows(WindowSpec(MINUTE, 10_000, FIELDS, dedup=False))
    _, closed = state.apply(readings([(0, "s1", T0, (1.0, 1.0))]))
    _, closed = state.apply(readings([(1, "s2", T0 + MINUTE_US + 9_999_999, (1.0, 1.0))]))
    assert len(closed) == 0
    assert state.watermark_us == T0 + MINUTE_US - 1
    _, closed = state.apply(readings([(2, "s2", T0 + MINUTE_US + 10_000_000, (1.0, 1.0))]))
    assert state.watermark_us == T0 + MINUTE_US
    assert [(r["sensor_id"], r["count"]) for r in closed.rows()] == [("s1", 1)]


def test_a_reading_within_the_lateness_counts_and_one_after_the_close_is_late() -> None:
    state = PartitionWindows(WindowSpec(MINUTE, 10_000, FIELDS, dedup=False))
    records = [
        (0, "s1", T0 + MINUTE_US + 5_000_000, (1.0, 1.0)),  # watermark now T0 + 55 s
        (1, "s1", T0 + 30_000_000, (2.0, 2.0)),  # its window is still open: counted
        (2, "s1", T0 + MINUTE_US + 10_000_000, (3.0, 3.0)),  # watermark T0 + 60 s: closes it
        (3, "s1", T0 + MINUTE_US - 1, (4.0, 4.0)),  # late
    ]
    verdicts, closed = state.apply(readings(records))
    assert verdicts.tolist() == [COUNTED, COUNTED, COUNTED, LATE]
    assert [r["fields"]["pm25"]["max"] for r in closed.rows()] == [2.0]


def test_dedup_refuses_a_repeated_timestamp_while_its_window_is_open_only() -> None:
    records = [
        (0, "s1", T0, (1.0, 1.0)),
        (1, "s1", T0, (9.0, 9.0)),  # duplicate
        (2, "s2", T0, (1.0, 1.0)),  # another sensor: counted
        (3, "s1", T0 + MINUTE_US, (1.0, 1.0)),  # closes s1's and s2's first windows
        (4, "s1", T0, (1.0, 1.0)),  # its window closed: late, not duplicate
    ]
    deduped, closed = PartitionWindows(WindowSpec(MINUTE, 0, FIELDS, dedup=True)).apply(
        readings(records)
    )
    assert deduped.tolist() == [COUNTED, DUPLICATE, COUNTED, COUNTED, LATE]
    assert [(r["sensor_id"], r["count"]) for r in closed.rows()] == [("s1", 1), ("s2", 1)]
    plain, _ = PartitionWindows(WindowSpec(MINUTE, 0, FIELDS, dedup=False)).apply(readings(records))
    assert plain.tolist() == [COUNTED, COUNTED, COUNTED, COUNTED, LATE]


def test_a_missing_value_is_not_counted_for_its_field_but_the_reading_is() -> None:
    state = PartitionWindows(WindowSpec(MINUTE, 0, FIELDS, dedup=False))
    records = [(0, "s1", T0, (math.nan, 1.0)), (1, "s1", T0 + MINUTE_US, (1.0, 1.0))]
    _, closed = state.apply(readings(records))
    (row,) = closed.rows()
    assert row["count"] == 1
    assert row["fields"] == {"temp": {"count": 1, "mean": 1.0, "min": 1.0, "max": 1.0}}


def test_sensor_ids_are_kept_apart_byte_for_byte() -> None:
    state = PartitionWindows(WindowSpec(MINUTE, 0, FIELDS, dedup=False))
    ids = ["a", "a\x00", "é", "a" * 128]
    records = [(i, s, T0, (1.0, 1.0)) for i, s in enumerate(ids)]
    _, closed = state.apply(readings([*records, (9, "b", T0 + MINUTE_US, (1.0, 1.0))]))
    assert sorted(r["sensor_id"] for r in closed.rows()) == sorted(ids)


def test_dedup_keys_are_instants_to_the_microsecond() -> None:
    records = [
        (0, "s1", T0 + 100, (1.0, 1.0)),
        (1, "s1", T0 + 200, (2.0, 2.0)),  # within the same millisecond: another reading
        (2, "s1", T0 + 100, (9.0, 9.0)),  # the first one's instant again: a duplicate
        (3, "s1", T0 + MINUTE_US, (1.0, 1.0)),
    ]
    state = PartitionWindows(WindowSpec(MINUTE, 0, FIELDS, dedup=True))
    verdicts, closed = state.apply(readings(records))
    assert verdicts.tolist() == [COUNTED, COUNTED, DUPLICATE, COUNTED]
    assert [(r["count"], r["fields"]["pm25"]["max"]) for r in closed.rows()] == [(2, 2.0)]


def test_bounds_that_are_not_whole_seconds_are_written_to_the_millisecond() -> None:
    state = PartitionWindows(WindowSpec(1_500, 0, FIELDS, dedup=False))
    records = [(0, "s1", 999, (1.0, 1.0)), (1, "s1", 1_500_000, (1.0, 1.0))]
    _, closed = state.apply(readings(records))
    (row,) = closed.rows()
    assert (row["window_start"], row["window_end"]) == (
        "1970-01-01T00:00:00.000Z",
        "1970-01-01T00:00:01.500Z",
    )


def test_bounds_that_are_not_whole_milliseconds_are_written_to_the_microsecond() -> None:
    windows = OpenWindows.new(np.zeros(2, np.int64), np.array([0, 1_500_000]), len(FIELDS))
    windows.count[:] = 1
    closed = Aggregates.closed(FIELDS, sensor_keys(["s1"]), windows, 2_000_250)
    assert [(r["window_start"], r["window_end"]) for r in closed.rows()] == [
        ("1970-01-01T00:00:00.000000Z", "1970-01-01T00:00:02.000250Z"),
        ("1970-01-01T00:00:01.500000Z", "1970-01-01T00:00:03.500250Z"),
    ]


def test_a_batch_out_of_offset_order_is_refused() -> None:
    state = PartitionWindows(WindowSpec(MINUTE, 0, FIELDS, dedup=False))
    with pytest.raises(ValueError, match="increasing"):
        state.apply(readings([(1, "s1", T0, (1.0, 1.0)), (1, "s2", T0, (1.0, 1.0))]))


def test_dedup_tells_apart_readings_as_far_into_two_windows() -> None:
    # Each window's keys are one int64 a reading (its sensor's row, then its time into the
    # window): the same time into two windows, in one batch, is two readings, not one.
    records = [
        (0, "s1", T0 + 5, (1.0, 1.0)),
        (1, "s1", T0 + MINUTE_US + 5, (2.0, 2.0)),
        (2, "s1", T0 + 5, (9.0, 9.0)),  # the first again: the only duplicate
        (3, "s1", T0 + 4 * MINUTE_US, (3.0, 3.0)),  # closes the first two windows
    ]
    state = PartitionWindows(WindowSpec(MINUTE, 2 * MINUTE, FIELDS, dedup=True))
    verdicts, closed = state.apply(readings(records))
    assert verdicts.tolist() == [COUNTED, COUNTED, DUPLICATE, COUNTED]
    assert [r["count"] for r in closed.rows()] == [1, 1]


def test_more_sensors_than_the_dedup_keys_hold_is_an_error_not_a_wrong_count() -> None:
    # max_sensors(length) sensors fit in an int64 key each: two with this (absurd) length.
    length_ms = (2**63 - 1) // 2 // 1000
    state = PartitionWindows(WindowSpec(length_ms, 0, FIELDS, dedup=True))
    state.apply(readings([(0, "a", T0, (1.0, 1.0)), (1, "b", T0, (1.0, 1.0))]))
    with pytest.raises(StateError, match="3 sensors on one partition"):
        state.apply(readings([(2, "c", T0, (1.0, 1.0))]))


def test_no_window_closed_is_the_aggregates_of_no_windows() -> None:
    # Made directly (most batches close none): the same columns as closing an empty table.
    built = Aggregates.empty(FIELDS)
    closed = Aggregates.closed(FIELDS, sensor_keys([]), OpenWindows.empty(len(FIELDS)), 60)
    columns = ("sensors", "start_us", "end_us", "count", "field_count", "mean", "minimum")
    for name in (*columns, "maximum", "suspect", "failed"):
        mine, theirs = getattr(built, name), getattr(closed, name)
        assert (mine.shape, mine.dtype.kind) == (theirs.shape, theirs.dtype.kind), name
    assert len(built) == 0
    assert built.rows() == []
