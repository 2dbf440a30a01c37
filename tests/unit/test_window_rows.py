"""The window state persisted per sensor (``take_changes`` / ``from_rows``) and the closed
windows kept until ``release``: restores from any crash point, with any part of a batch's rows
persisted, against the uninterrupted run and the plain oracle of test_windows."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.errors import StateError
from processor.state.rows import PARTITION_KEY, Row
from processor.state.spec import WindowSpec
from processor.state.windows import PartitionWindows
from tests.unit.test_windows import (
    COUNTED,
    DUPLICATE,
    FIELDS,
    LATE,
    MINUTE,
    MINUTE_US,
    T0,
    Oracle,
    Record,
    as_rows,
    cut_lists,
    readings,
    record_lists,
    run,
    run_oracle,
    specs,
    state_arrays,
)


def batches(records: list[Record], cuts: list[int]) -> list[list[Record]]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(records)}), len(records)]
    return [records[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def offset_at(records: list[Record], index: int) -> int:
    """The commit offset of a commit point: the offset of the first record not finished."""
    return records[index][0] if index < len(records) else records[-1][0] + 1 if records else 0


def without_kept_keys(arrays: dict[str, Any]) -> dict[str, Any]:
    """The state but the closed windows kept for replays (what releases may differ in)."""
    return {name: v for name, v in arrays.items() if not name.startswith(("dedup", "closed"))}


@given(specs, record_lists, cut_lists, st.lists(st.integers(0, 60), max_size=60))
def test_the_latest_row_of_each_key_restores_the_live_state(
    spec: WindowSpec, records: list[Record], cuts: list[int], commits: list[int]
) -> None:
    state = PartitionWindows(spec)
    written: list[Row] = []
    done = 0
    for i, batch in enumerate(batches(records, cuts)):
        state.apply(readings(batch))
        if i < len(commits):  # the commit point of batches finished before this one
            state.release(offset_at(records, min(commits[i], done)))
        written += state.take_changes().pairs()
        done += len(batch)
        restored = PartitionWindows.from_rows(spec, written)
        assert state_arrays(restored) == state_arrays(state)
        assert restored.watermark_us == state.watermark_us


@settings(max_examples=300)
@given(specs, record_lists, cut_lists, cut_lists, st.data())
def test_a_crash_with_any_rows_persisted_repeats_verdicts_and_aggregates_only(
    spec: WindowSpec, records: list[Record], cuts: list[int], again: list[int], data: st.DataObject
) -> None:
    """Batches up to ``j`` persisted, any of batch ``j + 1``'s sensor rows too (not its
    partition row: it is written after them), commit point ``c`` at most the start of batch
    ``j + 1``. (With the partition row persisted before a sensor's row, a window could close
    on restore before that sensor's readings in it were counted again.)"""
    whole_verdicts, whole_rows = run(PartitionWindows(spec), records, cuts)
    parts = batches(records, cuts)
    starts = list(itertools.accumulate([0, *(len(b) for b in parts)]))
    j = data.draw(st.integers(-1, len(parts) - 1))
    c = data.draw(st.integers(0, starts[j + 1]))
    first = PartitionWindows(spec)
    persisted: list[Row] = []
    acknowledged: list[Any] = []
    for i, batch in enumerate(parts[: j + 2]):
        _, closed = first.apply(readings(batch))
        changes = first.take_changes()
        if i <= j:
            persisted += changes.pairs()
            acknowledged += as_rows(closed)
            if data.draw(st.booleans()):
                first.release(offset_at(records, min(c, starts[i + 1])))
        else:
            some = [row for row in changes.sensors if data.draw(st.booleans())]
            persisted += some
            acknowledged += as_rows(closed) if some else []

    state = PartitionWindows.from_rows(spec, persisted)
    state.release(offset_at(records, c))
    verdicts: list[int] = []
    rows: list[Any] = []
    done = c
    for batch in batches(records[c:], again):
        batch_verdicts, closed = state.apply(readings(batch))
        state.take_changes()
        verdicts += batch_verdicts.tolist()
        rows += as_rows(closed)
        done += len(batch)
        if data.draw(st.booleans()):
            state.release(offset_at(records, done))

    assert verdicts == whole_verdicts[c:]
    assert all(row in whole_rows for row in rows)  # repeated only with the same content
    assert all(row in rows or row in acknowledged for row in whole_rows)  # none missed
    uninterrupted = PartitionWindows(spec)
    run(uninterrupted, records, cuts)
    assert without_kept_keys(state_arrays(state)) == without_kept_keys(state_arrays(uninterrupted))


@given(specs, record_lists, cut_lists, st.integers(0, 200))
def test_release_drops_the_closed_windows_closed_before_the_commit_point_only(
    spec: WindowSpec, records: list[Record], cuts: list[int], commit: int
) -> None:
    state, oracle = PartitionWindows(spec), Oracle(spec)
    run(state, records, cuts)
    run_oracle(oracle, records)
    state.release(commit)
    oracle.release(commit)
    arrays = state_arrays(state)
    assert dict(map(tuple, arrays["closed"])) == oracle.closers
    ids = [key[:-1].decode() for key in arrays["sensors.keys"]]
    kept = zip(
        arrays["dedup.sensor"], arrays["dedup.event_us"], arrays["dedup.offset"], strict=True
    )
    assert {(ids[s], event): o for s, event, o in kept} == (oracle.counted if spec.dedup else {})


def test_a_replayed_duplicate_of_a_closed_window_stays_a_duplicate_until_released() -> None:
    spec = WindowSpec(MINUTE, 0, FIELDS, dedup=True)
    records = [
        (0, "s1", T0, (1.0, 1.0)),
        (1, "s1", T0, (9.0, 9.0)),  # duplicate
        (2, "s1", T0 + MINUTE_US, (1.0, 1.0)),  # closes [T0, T0 + 1 min)
    ]
    state = PartitionWindows(spec)
    assert state.apply(readings(records))[0].tolist() == [COUNTED, DUPLICATE, COUNTED]
    rows = state.take_changes().pairs()
    restored = PartitionWindows.from_rows(spec, rows)
    assert restored.apply(readings(records))[0].tolist() == [COUNTED, DUPLICATE, COUNTED]
    assert restored.sizes().dedup_keys == 2
    restored.release(2)  # the closing reading is not committed yet: kept
    assert restored.sizes().dedup_keys == 2
    restored.release(3)
    assert restored.sizes().dedup_keys == 1
    assert restored.apply(readings(records[1:]))[0].tolist() == [LATE, COUNTED]


def test_a_sensor_with_only_a_late_reading_gets_a_row_and_the_partition_row_comes_last() -> None:
    spec = WindowSpec(MINUTE, 0, FIELDS, dedup=False)
    state = PartitionWindows(spec)
    state.apply(readings([(0, "s1", T0 + MINUTE_US, (1.0, 1.0))]))
    state.take_changes()
    state.apply(readings([(1, "s2", T0, (1.0, 1.0))]))  # late: only its offset changed
    changes = state.take_changes()
    assert [key for key, _ in changes.pairs()] == [b"s2\x01", PARTITION_KEY]
    restored = PartitionWindows.from_rows(spec, changes.pairs())
    assert restored.apply(readings([(1, "s2", T0, (1.0, 1.0))]))[0].tolist() == [LATE]
    assert state.take_changes().sensors == []  # nothing changed since


def test_rows_written_under_other_settings_or_damaged_are_refused() -> None:
    spec = WindowSpec(MINUTE, 0, FIELDS, dedup=True)
    state = PartitionWindows(spec)
    state.apply(readings([(0, "s1", T0, (1.0, 1.0))]))
    (sensor, partition) = state.take_changes().pairs()
    for other in (
        WindowSpec(2 * MINUTE, 0, FIELDS, dedup=True),
        WindowSpec(MINUTE, 1, FIELDS, dedup=True),
        WindowSpec(MINUTE, 0, ("pm25",), dedup=True),
        WindowSpec(MINUTE, 0, FIELDS, dedup=False),
    ):
        with pytest.raises(StateError, match="it would count differently"):
            PartitionWindows.from_rows(other, [sensor, partition])
    with pytest.raises(StateError, match="cannot be read"):
        PartitionWindows.from_rows(spec, [sensor, (PARTITION_KEY, partition[1][:10])])
    with pytest.raises(StateError, match="fields"):
        PartitionWindows.from_rows(spec, [(sensor[0], sensor[1][:-1]), partition])
    assert PartitionWindows.from_rows(spec, [sensor]).watermark_us is None
    assert PartitionWindows.from_rows(spec, []).sizes().sensors == 0


def test_a_sensor_row_packs_its_windows_and_keys_without_padding() -> None:
    spec = WindowSpec(MINUTE, 10 * MINUTE, FIELDS, dedup=True)
    state = PartitionWindows(spec)
    state.apply(readings([(i, "s1", T0 + i * MINUTE_US, (1.0, 1.0)) for i in range(3)]))
    (_, value), _ = state.take_changes().pairs()
    header, window, first_key, next_key = 24, 16 + 6 * 8 * len(FIELDS), 16, 8
    assert len(value) == header + 3 * window + first_key + 2 * next_key
    assert np.frombuffer(value[:8], "<i8").tolist() == [2]
    keys = value[-(first_key + 2 * next_key) :]
    assert np.frombuffer(keys[:first_key], "<i8").tolist() == [T0, 0]  # µs, offset
    steps = np.frombuffer(keys[first_key:], np.dtype([("us", "<u4"), ("offset", "<i4")]))
    assert steps.tolist() == [(MINUTE_US, 1), (MINUTE_US, 1)]  # from the key before


def test_rows_of_earlier_builds_with_times_in_milliseconds_are_refused() -> None:
    """Rows as builds before event times in µs wrote them (no format: a 16-byte sensor header,
    the partition's row starting with the window length): read as µs they would put every
    window and watermark 1,000 times too early, so a restore must stop instead."""
    spec = WindowSpec(MINUTE, 0, FIELDS, dedup=True)
    t0_ms = T0 // 1000
    window = np.zeros(1, np.dtype([("start", "<i8"), ("count", "<i8"), ("rest", "V64")]))
    window["start"], window["count"] = t0_ms, 1
    sensor = (
        np.array([(0, 1, 1)], np.dtype([("a", "<i8"), ("w", "<i4"), ("k", "<i4")])).tobytes()
        + window.tobytes()
        + np.array([t0_ms, 0], "<i8").tobytes()
    )
    partition = np.array([MINUTE, 0, 1, t0_ms, 0], "<i8").tobytes() + b'["pm25", "temp"]'
    only_late = sensor[:16].replace(b"\x01", b"\x00")  # no window, no key: a header alone
    for rows, reason in (
        ([(b"s1\x01", sensor), (PARTITION_KEY, partition)], "not in this build's format"),
        ([(PARTITION_KEY, partition)], "not in this build's format"),
        ([(b"s1\x01", sensor)], "not in this build's format"),  # no partition row yet
        ([(b"s1\x01", only_late)], "shorter than its header"),
    ):
        with pytest.raises(StateError, match=reason):
            PartitionWindows.from_rows(spec, rows)
