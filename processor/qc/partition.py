"""One input partition's QC history, applied a batch at a time (the guarantees of
:class:`processor.state.windows.PartitionWindows`, docs/state.md).

**Batch boundaries do not matter.** A reading is flagged from its sensor's readings before
it in offset order (its previous value and time, the flat line's window), whatever batch
they came in: any split of the same records gives the same flags and state, to the bit.
Within a batch the work is vectorized across sensors: readings sorted by (sensor, offset),
each sensor's kept values laid before its new ones in one array, and every reading's
previous values gathered from it at once.

**Exactly once under re-delivery.** Each sensor keeps the highest input offset applied to
it; a record at or below it is a replay: it changes nothing and gets the flags it got the
first time, kept per (sensor, offset) until :meth:`PartitionQc.release` says the commit
point passed it.

**Persisted per sensor.** :meth:`PartitionQc.take_changes` serializes the rows of the
sensors a batch changed (their whole QC state) and the settings' row;
:meth:`PartitionQc.from_rows` rebuilds the state from the latest row of each key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from processor.qc.checks import flat_line, gross_range, rate_of_change, spike
from processor.qc.flags import NOT_RUN, TESTS, U8, field_flags
from processor.qc.rows import Kept, Keys, Row, SensorRows, pack, settings_row, unpack
from processor.qc.thresholds import QcSpec
from processor.state.rows import ChangedRows
from processor.state.tables import Sensors, renumber

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class Flags(NamedTuple):
    """Per (reading, field): the QARTOD flag and the failed-tests bitmask."""

    flag: U8
    failed: U8


class PartitionQc:
    """The QC state of one input partition (see the module docstring)."""

    def __init__(self, spec: QcSpec) -> None:
        self._spec = spec
        n_fields = len(spec.fields)
        self._sensors = Sensors.empty()
        self._seen = np.empty(0, dtype=np.int64)  # readings applied per sensor
        self._last_us = np.empty(0, dtype=np.int64)  # event time of the latest
        self._history = np.empty((0, spec.depth, n_fields))  # latest values, oldest first
        self._kept = Kept.empty(n_fields)  # flags for replays, until released
        self._changed: list[Keys] = []

    @property
    def spec(self) -> QcSpec:
        return self._spec

    @property
    def sensors(self) -> int:
        return self._sensors.size()

    def apply(self, offsets: I64, sensors: Keys, event_us: I64, values: F64) -> Flags:
        """Flag one batch of this partition's readings, in offset order: ``sensors`` are
        state keys, ``values`` ``(n, len(spec.fields))`` (NaN, or any non-finite number:
        missing). Replays (offset at or below their sensor's applied one) change nothing."""
        n, n_fields = offsets.size, len(self._spec.fields)
        if sensors.size != n or event_us.size != n or values.shape != (n, n_fields):
            raise ValueError("QC readings' columns differ in length or in number of fields")
        if n and (offsets[0] < 0 or (np.diff(offsets) <= 0).any()):
            raise ValueError("QC readings' offsets must be >= 0 and increasing")
        flag = np.empty((n, n_fields), dtype=np.uint8)
        failed = np.empty((n, n_fields), dtype=np.uint8)
        if not n:
            return Flags(flag, failed)
        row = self._sensor_rows(sensors)
        replay = offsets <= self._sensors.applied[row]
        if replay.any():
            flag[replay], failed[replay] = self._first_flags(offsets[replay])
        new = np.flatnonzero(~replay)
        if new.size:
            clean = np.where(np.isfinite(values[new]), values[new], np.nan)
            flag[new], failed[new] = self._flag_new(row[new], offsets[new], event_us[new], clean)
            self._changed.append(sensors[new])
        return Flags(flag, failed)

    def _sensor_rows(self, keys: Keys) -> I64:
        """Each reading's sensor row, admitting sensors not seen before."""
        unique, inverse = np.unique(keys, return_inverse=True)
        self._sensors, at = self._sensors.admit(unique)
        if at.size:
            self._seen = np.insert(self._seen, at, 0)
            self._last_us = np.insert(self._last_us, at, 0)
            self._history = np.insert(self._history, at, np.nan, axis=0)
            self._kept = self._kept._replace(sensor=renumber(self._kept.sensor, at))
        rows: I64 = np.searchsorted(self._sensors.keys, unique)[inverse]
        return rows

    def _first_flags(self, offsets: I64) -> tuple[U8, U8]:
        """The flags replayed records got the first time (offsets are unique on a
        partition, and the kept ones in order)."""
        kept = self._kept
        at = np.minimum(np.searchsorted(kept.offset, offsets), max(kept.offset.size - 1, 0))
        if not kept.offset.size or (kept.offset[at] != offsets).any():
            raise ValueError(
                "a re-read record's flags were released: it is before the commit point"
            )
        return kept.flag[at], kept.failed[at]

    def _flag_new(self, row: I64, offsets: I64, event_us: I64, values: F64) -> tuple[U8, U8]:
        """Flag readings new to their sensors and move the state past them."""
        spec, depth = self._spec, self._spec.depth
        order = np.argsort(row, kind="stable")  # by sensor, then offset
        row, offsets, event_us, values = row[order], offsets[order], event_us[order], values[order]
        m = row.size
        first = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        group = np.repeat(np.arange(first.size), np.diff(np.r_[first, m]))
        rank = np.arange(m) - first[group]
        who = row[first]  # the batch's sensors
        counts = np.diff(np.r_[first, m])
        # Each sensor's kept values, then its new ones, in one array per field: a
        # reading's k-th earlier value is at ``at - k``.
        n_fields = len(spec.fields)
        base = first + np.arange(first.size) * depth
        series = np.empty((n_fields, m + first.size * depth))
        slots = (base[:, None] + np.arange(depth)).ravel()
        series[:, slots] = self._history[who].reshape(-1, n_fields).T
        at = base[group] + depth + rank
        series[:, at] = values.T
        seen = self._seen[who][group] + rank
        previous_us = np.where(rank == 0, self._last_us[who][group], np.r_[0, event_us[:-1]])
        left = np.where(seen > 0, series[:, at - 1], np.nan)
        tests = np.full((m, n_fields, len(TESTS)), NOT_RUN, dtype=np.uint8)
        for f, th in enumerate(spec.thresholds):
            x = values[:, f]
            if th.gross_range_fail is not None:
                tests[:, f, 0] = gross_range(x, th.gross_range_fail, th.gross_range_suspect)
            if th.runs[1]:
                tests[:, f, 1] = spike(x, left[f], seen == 0, th.spike_suspect, th.spike_fail)
            if th.rate_of_change_suspect is not None:
                tests[:, f, 2] = rate_of_change(
                    x, left[f], event_us - previous_us, th.rate_of_change_suspect,
                    th.rate_of_change_fail,
                )  # fmt: skip
            if th.flat_line_suspect and th.flat_line_fail and th.flat_line_tolerance:
                tests[:, f, 3] = flat_line(
                    series[f],
                    at,
                    seen,
                    suspect=th.flat_line_suspect,
                    fail=th.flat_line_fail,
                    tolerance=th.flat_line_tolerance,
                )
        flag, failed = field_flags(tests)
        last = np.r_[first[1:], m] - 1
        keep = (base + counts)[:, None] + np.arange(depth)
        self._history[who] = series[:, keep.ravel()].T.reshape(first.size, depth, n_fields)
        self._seen[who] += counts
        self._last_us[who] = event_us[last]
        self._sensors.applied[who] = offsets[last]
        self._record(row, offsets, flag, failed)
        unsorted = np.empty_like(order)
        unsorted[order] = np.arange(m)
        return flag[unsorted], failed[unsorted]

    def _record(self, row: I64, offsets: I64, flag: U8, failed: U8) -> None:
        """Keep new readings' flags for their replays, in offset order (after a restore,
        a sensor whose row was not persisted re-applies offsets below others' kept ones)."""
        order = np.argsort(offsets)
        kept = self._kept
        at = np.searchsorted(kept.offset, offsets[order])
        self._kept = Kept(
            np.insert(kept.sensor, at, row[order]),
            np.insert(kept.offset, at, offsets[order]),
            np.insert(kept.flag, at, flag[order], axis=0),
            np.insert(kept.failed, at, failed[order], axis=0),
        )

    def release(self, commit_offset: int) -> None:
        """The commit point reached ``commit_offset``: no record before it is read again, so
        its flags are no longer kept."""
        released = int(np.searchsorted(self._kept.offset, commit_offset))
        if released:
            self._kept = self._kept.rows(np.arange(released, self._kept.offset.size))

    def take_changes(self) -> ChangedRows:
        """The rows of the sensors changed since the last call (each one's whole QC state),
        and the settings' row (as ``partition``: any order with the sensors' is safe)."""
        keys = self._sensors.keys
        changed = np.unique(np.concatenate([keys[:0], *self._changed]))
        self._changed = []
        who = np.searchsorted(keys, changed)
        mine = self._kept.rows(np.flatnonzero(np.isin(self._kept.sensor, who)))
        mine = mine.rows(np.argsort(mine.sensor, kind="stable"))
        state = SensorRows(
            keys[who],
            self._sensors.applied[who],
            self._seen[who],
            self._last_us[who],
            self._history[who],
            mine._replace(sensor=np.searchsorted(who, mine.sensor)),
        )
        return ChangedRows(pack(self._spec, state), settings_row(self._spec))

    @classmethod
    def from_rows(cls, spec: QcSpec, rows: Iterable[Row]) -> PartitionQc:
        """The state the latest row of each key describes (rows in the order written);
        :class:`processor.errors.StateError` if unreadable or saved under other settings."""
        state = cls(spec)
        saved = unpack(spec, rows)
        state._sensors = Sensors.new(saved.keys, saved.applied, 0)
        state._seen, state._last_us, state._history = saved.seen, saved.last_us, saved.history
        state._kept = saved.kept.rows(np.argsort(saved.kept.offset))
        return state

    def memory_bytes(self) -> int:
        """The bytes of the state's arrays (the objects around them are a constant ~2 KB)."""
        return (
            self._sensors.nbytes()
            + self._seen.nbytes
            + self._last_us.nbytes
            + self._history.nbytes
            + self._kept.nbytes()
        )
