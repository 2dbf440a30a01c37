"""One input partition's QC history, applied a batch at a time (the guarantees of
:class:`processor.state.windows.PartitionWindows`, docs/state.md).

**Batch boundaries do not matter.** A reading is flagged from its sensor's readings before
it in offset order (its previous value and time, the flat line's window), whatever batch
they came in: any split of the same records gives the same flags and state, to the bit.
Within a batch the work is vectorized across sensors: readings sorted by (sensor, offset),
each sensor's kept values (a ring of its latest ``depth``, :mod:`processor.qc.series`) read
before its new ones, every reading's previous values gathered at once, and only the new
values written back.

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

from processor.qc.checks import Battery
from processor.qc.flags import U8, packed_flags
from processor.qc.rows import Kept, Keys, Row, SensorRows, pack, settings_row, unpack
from processor.qc.series import Series, unrolled
from processor.qc.thresholds import QcSpec
from processor.state.rows import ChangedRows
from processor.state.tables import Sensors, renumber, unique_keys

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
        self._history = np.empty((0, spec.depth, n_fields))  # latest values, a ring each
        self._head = np.empty(0, dtype=np.int64)  # each ring's next slot (its oldest value)
        self._kept = Kept.empty(n_fields)  # flags for replays, until released
        self._changed = np.empty(0, dtype=bool)  # per sensor: since take_changes
        self._battery = Battery(spec.thresholds)
        self._settings = settings_row(spec)

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
        return Flags(flag, failed)

    def _sensor_rows(self, keys: Keys) -> I64:
        """Each reading's sensor row, admitting sensors not seen before."""
        unique, inverse = unique_keys(keys)
        self._sensors, at = self._sensors.admit(unique)
        if at.size:
            self._seen = np.insert(self._seen, at, 0)
            self._last_us = np.insert(self._last_us, at, 0)
            self._history = np.insert(self._history, at, np.nan, axis=0)
            self._head = np.insert(self._head, at, 0)
            self._changed = np.insert(self._changed, at, False)
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
        n_fields = len(self._spec.fields)
        order = _by_sensor(row, self._sensors.size())
        s_row, s_us, s_values = row[order], event_us[order], values[order]
        m = s_row.size
        first = np.flatnonzero(np.concatenate(([True], s_row[1:] != s_row[:-1])))
        counts = np.diff(np.append(first, m))
        who = s_row[first]  # the batch's sensors
        series = Series(self._history, self._head, who, s_values, counts)
        seen = self._seen[s_row] + series.rank
        previous_us = np.where(
            series.rank == 0, self._last_us[s_row], np.concatenate((s_us[:1], s_us[:-1]))
        )
        left = np.where((seen > 0)[:, None], series.previous(), np.nan)
        packed = self._battery.packed(s_values, left, s_us - previous_us, seen, series)
        last = first + counts - 1
        series.store()
        self._seen[who] += counts
        self._last_us[who] = s_us[last]
        self._sensors.applied[who] = offsets[order][last]
        self._changed[who] = True
        flag, failed = np.empty((m, n_fields), np.uint8), np.empty((m, n_fields), np.uint8)
        flag[order], failed[order] = packed_flags(packed)
        self._record(row, offsets, flag, failed)
        return flag, failed

    def _record(self, row: I64, offsets: I64, flag: U8, failed: U8) -> None:
        """Keep new readings' flags (``offsets`` increasing) for their replays, in offset
        order: after the kept ones, unless a restore made a sensor whose row was not
        persisted re-apply offsets below others' kept ones."""
        kept = self._kept
        if not kept.offset.size or offsets[0] > kept.offset[-1]:
            self._kept = kept.joined(Kept(row, offsets, flag, failed))
            return
        at = np.searchsorted(kept.offset, offsets)
        self._kept = Kept(
            np.insert(kept.sensor, at, row),
            np.insert(kept.offset, at, offsets),
            np.insert(kept.flag, at, flag, axis=0),
            np.insert(kept.failed, at, failed, axis=0),
        )

    def release(self, commit_offset: int) -> None:
        """The commit point reached ``commit_offset``: no record before it is read again, so
        its flags are no longer kept."""
        released = int(np.searchsorted(self._kept.offset, commit_offset))
        if released:
            self._kept = self._kept.rows(slice(released, None)).copy()

    def take_changes(self) -> ChangedRows:
        """The rows of the sensors changed since the last call (each one's whole QC state),
        and the settings' row (as ``partition``: any order with the sensors' is safe)."""
        changed, self._changed = self._changed, np.zeros(self._changed.size, dtype=bool)
        who = np.flatnonzero(changed)
        mine = self._kept.rows(np.flatnonzero(changed[self._kept.sensor]))
        local = (np.cumsum(changed) - 1)[mine.sensor]  # the index in ``who``
        order = _by_sensor(local, who.size)
        state = SensorRows(
            self._sensors.keys[who],
            self._sensors.applied[who],
            self._seen[who],
            self._last_us[who],
            unrolled(self._history[who], self._head[who]),
            mine.rows(order)._replace(sensor=local[order]),
        )
        return ChangedRows(pack(self._spec, state), self._settings)

    @classmethod
    def from_rows(cls, spec: QcSpec, rows: Iterable[Row]) -> PartitionQc:
        """The state the latest row of each key describes (rows in the order written);
        :class:`processor.errors.StateError` if unreadable or saved under other settings."""
        state = cls(spec)
        saved = unpack(spec, rows)
        state._sensors = Sensors.new(saved.keys, saved.applied, 0)
        state._seen, state._last_us, state._history = saved.seen, saved.last_us, saved.history
        state._head = np.zeros(saved.keys.size, dtype=np.int64)
        state._kept = saved.kept.rows(np.argsort(saved.kept.offset))
        state._changed = np.zeros(saved.keys.size, dtype=bool)
        return state

    def memory_bytes(self) -> int:
        """The bytes of the state's arrays (the objects around them are a constant ~2 KB)."""
        return (
            self._sensors.nbytes()
            + self._seen.nbytes
            + self._last_us.nbytes
            + self._history.nbytes
            + self._head.nbytes
            + self._changed.nbytes
            + self._kept.nbytes()
        )


def _by_sensor(row: I64, sensors: int) -> I64:
    """The order that groups readings by sensor row, keeping their order within each (a
    stable sort: numpy's is a radix sort on 16-bit integers, 4 times faster than on int64)."""
    if sensors <= 1 << 16:
        row = row.astype(np.uint16)
    order: I64 = np.argsort(row, kind="stable")
    return order
