"""The QC state across crashes, replays and restores (the window state's guarantees), its
rows' keys beside the window state's, and the flag combination rules."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.errors import StateError
from processor.qc import (
    SETTINGS_KEY,
    FieldThresholds,
    Flag,
    PartitionQc,
    QcSpec,
    failed_names,
    field_flags,
    qc_key,
    reading_flags,
)
from processor.state.aggregates import sensor_keys
from processor.state.rows import PARTITION_KEY
from tests.unit.test_qc_oracle import T0, Record, batches, columns, records, specs


def offset_at(readings: list[Record], index: int) -> int:
    """The commit offset of a commit point: the offset of the first record not finished."""
    return readings[index][0] if index < len(readings) else readings[-1][0] + 1


def run(state: PartitionQc, readings: list[Record], cuts: list[int]) -> tuple[Any, Any]:
    out = [state.apply(*columns(batch)) for batch in batches(readings, cuts)]
    return np.concatenate([f.flag for f in out]), np.concatenate([f.failed for f in out])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_crash_with_any_rows_persisted_then_a_reread_gives_the_same_flags(
    data: st.DataObject,
) -> None:
    """Batches up to ``j`` persisted, any of batch ``j + 1``'s rows too, the commit point
    ``c`` at most the start of batch ``j + 1``; re-read from ``c`` with other batches."""
    spec = data.draw(specs)
    readings = data.draw(records(len(spec.fields)))
    cuts = data.draw(st.lists(st.integers(0, len(readings)), max_size=8))
    again = data.draw(st.lists(st.integers(0, len(readings)), max_size=8))
    whole_flag, whole_failed = run(PartitionQc(spec), readings, cuts)
    parts = batches(readings, cuts)
    starts = list(itertools.accumulate([0, *(len(b) for b in parts)]))
    j = data.draw(st.integers(-1, len(parts) - 2))
    c = data.draw(st.integers(0, starts[j + 1]))
    first, persisted = PartitionQc(spec), []
    for i, batch in enumerate(parts[: j + 2]):
        first.apply(*columns(batch))
        changes = first.take_changes()
        if i <= j:
            persisted += changes.pairs()
            if data.draw(st.booleans()):
                first.release(offset_at(readings, min(c, starts[i + 1])))
        else:
            persisted += [row for row in changes.pairs() if data.draw(st.booleans())]
    state = PartitionQc.from_rows(spec, persisted)
    state.release(offset_at(readings, c))
    flag, failed = run(state, readings[c:], again) if c < len(readings) else (None, None)
    if flag is not None:
        assert np.array_equal(flag, whole_flag[c:])
        assert np.array_equal(failed, whole_failed[c:])
    uninterrupted = PartitionQc(spec)
    run(uninterrupted, readings, cuts)
    assert state.sensors == uninterrupted.sensors
    assert state.memory_bytes() <= uninterrupted.memory_bytes()  # released, at most as much


SPEC = QcSpec(("pm25",), (FieldThresholds(gross_range_fail=(0.0, 100.0), spike_suspect=5.0),))


def test_a_replay_changes_nothing_and_gets_its_first_flags_until_released() -> None:
    readings = [(0, "s1", T0, (1.0,)), (1, "s1", T0 + 1, (50.0,)), (2, "s1", T0 + 2, (50.0,))]
    state = PartitionQc(SPEC)
    first = state.apply(*columns(readings))
    assert first.flag[:, 0].tolist() == [Flag.PASS, Flag.SUSPECT, Flag.PASS]  # 1 beats 2
    assert [failed_names(m) for m in first.failed[:, 0].tolist()] == [(), ("spike",), ()]
    before = state.take_changes().pairs()
    again = state.apply(*columns(readings[1:]))
    assert again.flag.tolist() == first.flag[1:].tolist()
    assert state.take_changes().sensors == []  # replays change no row
    assert PartitionQc.from_rows(SPEC, before).memory_bytes() == state.memory_bytes()
    state.release(2)
    with pytest.raises(ValueError, match="released"):
        state.apply(*columns(readings[1:2]))
    assert state.apply(*columns(readings[2:])).flag.tolist() == [[Flag.PASS]]


@given(st.lists(st.text(min_size=1, max_size=4, alphabet="ab\x00\x01\x02"), min_size=1))
def test_qc_keys_never_meet_the_window_states_keys(ids: list[str]) -> None:
    windows = {*sensor_keys(ids).tolist(), PARTITION_KEY}
    qc = {qc_key(key) for key in sensor_keys(ids).tolist()} | {SETTINGS_KEY}
    assert not windows & qc
    assert len(qc) == len(set(ids)) + 1


def test_thresholds_may_change_over_a_saved_history() -> None:
    """New thresholds judge the readings after the restore, from the saved history; a
    re-read record keeps the flags it got under the old ones. A longer flat line needs a
    longer history than was kept: refused."""
    state = PartitionQc(SPEC)
    first = state.apply(*columns([(0, "s1", T0, (1.0,)), (1, "s1", T0 + 1, (50.0,))]))
    assert first.flag.tolist() == [[Flag.PASS], [Flag.SUSPECT]]
    changes = state.take_changes()
    looser = FieldThresholds(gross_range_fail=(0.0, 100.0), spike_suspect=100.0)
    restored = PartitionQc.from_rows(QcSpec(("pm25",), (looser,)), changes.pairs())
    replayed_and_new = restored.apply(
        *columns([(1, "s1", T0 + 1, (50.0,)), (2, "s1", T0 + 2, (60.0,))])
    )
    assert replayed_and_new.flag.tolist() == [[Flag.SUSPECT], [Flag.PASS]]
    flat = FieldThresholds(flat_line_suspect=3, flat_line_fail=5, flat_line_tolerance=0.01)
    with pytest.raises(StateError, match="longest flat line changed"):
        PartitionQc.from_rows(QcSpec(("pm25",), (flat,)), changes.pairs())


def test_rows_of_another_history_or_damaged_are_refused() -> None:
    state = PartitionQc(SPEC)
    state.apply(*columns([(0, "s1", T0, (1.0,))]))
    changes = state.take_changes()
    (sensor,), settings_row = changes.sensors, changes.partition
    other = QcSpec(("pm10",), SPEC.thresholds)
    with pytest.raises(StateError, match="QC's fields or its longest flat line changed"):
        PartitionQc.from_rows(other, [sensor, settings_row])
    with pytest.raises(StateError, match="keeps another history"):
        PartitionQc.from_rows(other, [sensor])
    with pytest.raises(StateError, match="fields"):
        PartitionQc.from_rows(SPEC, [(sensor[0], sensor[1] + b"\x00")])
    with pytest.raises(StateError, match="not a QC sensor key"):
        PartitionQc.from_rows(SPEC, [(b"s1\x01", sensor[1])])
    assert PartitionQc.from_rows(SPEC, [sensor]).sensors == 1


def test_a_field_is_its_worst_test_and_a_reading_its_worst_field() -> None:
    tests = np.array([[[1, 2, 3, 0], [9, 9, 9, 9], [2, 1, 0, 0]]], dtype=np.uint8)
    flag, failed = field_flags(tests)
    assert flag.tolist() == [[Flag.SUSPECT, Flag.MISSING, Flag.PASS]]
    assert [failed_names(m) for m in failed[0].tolist()] == [("rate_of_change",), (), ()]
    assert reading_flags(np.array([[9, 2], [9, 9], [2, 1], [4, 3]], dtype=np.uint8)).tolist() == [
        Flag.NOT_EVALUATED,
        Flag.MISSING,
        Flag.PASS,
        Flag.FAIL,
    ]
    assert reading_flags(np.empty((2, 0), dtype=np.uint8)).tolist() == [2, 2]  # no tests


def test_new_sensors_between_known_ones_keep_every_sensors_history() -> None:
    state = PartitionQc(SPEC)
    state.apply(*columns([(0, "b", T0, (10.0,)), (1, "d", T0, (10.0,))]))
    got = state.apply(*columns([(2, "a", T0, (10.0,)), (3, "c", T0, (10.0,)),
                                (4, "b", T0, (30.0,)), (5, "d", T0, (10.0,))]))  # fmt: skip
    assert got.flag[:, 0].tolist() == [Flag.PASS, Flag.PASS, Flag.SUSPECT, Flag.PASS]
    assert state.sensors == 4


def _flat(count: int) -> QcSpec:
    """A flat line of ``count`` readings (the state keeps that many values) and a spike."""
    thresholds = FieldThresholds(
        spike_suspect=50.0,
        flat_line_suspect=count - 1,
        flat_line_fail=count,
        flat_line_tolerance=0.01,
    )
    return QcSpec(("pm25",), (thresholds,))


def _readings(first: int, count: int) -> list[Record]:
    """Two sensors, a value repeated in runs (so the flat line flags), in offset order."""
    return [
        (offset, f"s{offset % 2}", T0 + offset * 1_000_000, (float((offset // 20) % 3),))
        for offset in range(first, first + count)
    ]


def test_a_history_saved_longer_is_restored_shortened_and_judges_as_if_always_short() -> None:
    # A shorter flat line (or none: a profile that drops it) needs no reset: each sensor's
    # latest values are the history a state of the shorter one would have kept all along.
    long_spec, short_spec = _flat(8), _flat(4)
    before, after = _readings(0, 40), _readings(40, 30)
    kept_long = PartitionQc(long_spec)
    kept_long.apply(*columns(before))
    rows = kept_long.take_changes().pairs()
    always_short = PartitionQc(short_spec)
    always_short.apply(*columns(before))
    restored = PartitionQc.from_rows(short_spec, rows)
    expected = always_short.apply(*columns(after))
    found = restored.apply(*columns(after))
    assert found.flag.tolist() == expected.flag.tolist()
    assert found.failed.tolist() == expected.failed.tolist()
    assert {Flag.PASS, Flag.SUSPECT, Flag.FAIL} <= set(found.flag.ravel().tolist())
    # Rows of both lengths in one changelog (a sensor not seen since keeps its long row):
    # readable at the shorter length, refused at the longer one.
    mixed = [*rows, *restored.take_changes().pairs()]
    PartitionQc.from_rows(short_spec, mixed)
    with pytest.raises(StateError, match="longest flat line changed"):
        PartitionQc.from_rows(long_spec, mixed)
    newer_only = [row for row in mixed if row[0] != SETTINGS_KEY]
    with pytest.raises(StateError, match="keeps 4 values a field, the longest flat line needs 8"):
        PartitionQc.from_rows(long_spec, newer_only)
