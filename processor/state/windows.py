"""One input partition's tumbling windows, watermark and dedup keys, applied a batch at a time.

Semantics (issue 17): a reading's window is ``[start, start + length)`` with ``start`` its
event time (its timestamp's instant in microseconds, whatever the spelling) floored to a
multiple of ``length`` from the Unix epoch, per sensor. The partition's watermark is the
largest event time seen minus the allowed lateness; a window is closed once the watermark
is ``>=`` its end, and its aggregate is returned once. A reading whose window is closed when
it arrives is LATE (not counted); with dedup, a reading with the (sensor, event time) of one
counted in a still open window is a DUPLICATE (not counted).

**Batch boundaries do not matter.** Each reading is judged against the watermark as of just
before it (a running maximum through the batch), duplicates against the readings counted
before it, and sums are added in record order (``np.add.at``): any split of the same records
into batches gives the same verdicts, aggregates and state, to the bit. So does a crash that
makes the engine cut its batches differently the second time.

**Exactly once under re-delivery.** Each sensor keeps the highest input offset applied to it
(a sensor's records are on one partition, applied in offset order). A record at or below it
is a REPLAY: it changes nothing and gets the verdict it got the first time, so the engine
republishes the same point or dead letter. With dedup, the windows' keys keep the offset of
the reading that was counted, which tells a re-read original (COUNTED) from a re-read
duplicate (DUPLICATE). A replay whose window has closed since keeps its verdict too: each
closed window keeps the offset of the reading that closed it (a replay before it was judged
while the window was open) and its dedup keys, until :meth:`PartitionWindows.release` is
told the commit point has passed that reading: no replay reaches back further.

**Persisted per sensor.** :meth:`PartitionWindows.take_changes` serializes, right after a
batch, one row per sensor the batch changed and the partition's row (``rows``);
:meth:`PartitionWindows.from_rows` rebuilds the state from the latest row of each key. A row
is not rewritten when its sensor's window closes: the restore drops the windows the
partition's watermark has closed (their aggregates were acknowledged before that watermark
was written) and the dedup keys of windows released since.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from processor.errors import StateError
from processor.state import hourly
from processor.state.aggregates import Aggregates
from processor.state.rows import (
    ChangedRows,
    PartitionState,
    Row,
    SensorState,
    latest,
    pack_partition,
    pack_sensors,
    unpack_partition,
    unpack_sensors,
)
from processor.state.spec import Readings, Verdict, WindowSpec
from processor.state.tables import (
    F64,
    I64,
    U8,
    DedupKeys,
    Keys,
    OpenWindows,
    Sensors,
    by_window,
    dedup_key,
    find,
    in_start_order,
    max_sensors,
    of_sensors,
    renumber,
    unique_keys,
)

Mask = npt.NDArray[np.bool_]
#: QC's flags of a batch's values (readings, fields), given which readings are no duplicates.
Judge = Callable[[Mask], U8 | None]
SUSPECT, FAILED = 3, 4  # QARTOD's flags of values not counted in the statistics
NOTHING_SEEN = int(np.iinfo(np.int64).min)  # the running maximum before any event time


class StateSizes(NamedTuple):
    sensors: int
    sensor_bytes: int
    open_windows: int
    window_bytes: int
    dedup_keys: int
    dedup_bytes: int


class PartitionWindows:
    """The window state of one input partition (see the module docstring)."""

    def __init__(self, spec: WindowSpec) -> None:
        self._spec = spec
        self._max_event = NOTHING_SEEN
        self._sensors = Sensors.empty(len(spec.pollutants))
        # One table per window start (a few: the open starts span length + lateness); a
        # batch touches one or two, so it inserts into tables of one window, not of all.
        self._windows: dict[int, OpenWindows] = {}
        self._dedup: dict[int, DedupKeys] = {}
        # Closed windows whose replays may still come: start -> offset of the closing reading.
        self._closed: dict[int, int] = {}
        self._changed: list[Keys] = []  # the sensors of each batch since take_changes

    @property
    def spec(self) -> WindowSpec:
        return self._spec

    @property
    def watermark_us(self) -> int | None:
        """The largest event time seen minus the lateness (µs); None before any reading."""
        if self._max_event == NOTHING_SEEN:
            return None
        return self._max_event - self._spec.lateness_us

    def apply(
        self, readings: Readings, judge: Judge | None = None
    ) -> tuple[npt.NDArray[np.uint8], Aggregates]:
        """Count a batch: each reading's :class:`Verdict`, and the windows its readings closed.

        Re-read records (offset at or below their sensor's applied offset) change nothing.
        ``judge`` (QC), told which readings are not duplicates once that is known, gives the
        values' flags for the counting (else ``readings.flags``).
        """
        spec = self._spec
        readings.check(len(spec.fields))
        verdicts = np.zeros(readings.offsets.size, dtype=np.uint8)
        if not verdicts.size:
            return verdicts, Aggregates.empty(spec.fields)
        sensor = self._sensor_rows(readings.sensors)
        offsets, event = readings.offsets, readings.event_us
        replay = offsets <= self._sensors.applied[sensor]
        start = event - event % spec.length_us
        seen = np.maximum.accumulate(np.concatenate(([self._max_event], event)))
        late = _late(spec, self._closed, start, offsets, seen)
        counted = ~(replay | late)
        if spec.dedup:
            duplicate = _deduplicate(
                self._dedup,
                spec.length_us,
                sensor,
                event,
                offsets,
                start=start,
                replay=replay,
                late=late,
            )
            counted &= ~duplicate
            verdicts[duplicate] = Verdict.DUPLICATE
        verdicts[late] = Verdict.LATE
        np.maximum.at(self._sensors.applied, sensor, offsets)
        self._changed.append(readings.sensors[~replay])
        flags = readings.flags if judge is None else judge(verdicts != Verdict.DUPLICATE)
        for window, rows in by_window(start, counted):
            self._count(
                window, sensor[rows], readings.values[rows], None if flags is None else flags[rows]
            )
        self._max_event = int(seen[-1])
        return verdicts, self._close(offsets, seen)

    def _sensor_rows(self, keys: Keys) -> I64:
        """Each reading's sensor row, admitting sensors not seen before."""
        unique, inverse = unique_keys(keys)
        self._sensors, inserted_at = self._sensors.admit(unique)
        if self._sensors.keys.size > max_sensors(self._spec.length_us):
            raise StateError(
                f"{self._sensors.keys.size} sensors on one partition: more than windows of "
                f"{self._spec.length_ms} ms can count (use more partitions or shorter windows)"
            )
        if inserted_at.size:
            for window, table in self._windows.items():
                self._windows[window] = replace(table, sensor=renumber(table.sensor, inserted_at))
            for window, keys_ in self._dedup.items():
                self._dedup[window] = replace(keys_, sensor=renumber(keys_.sensor, inserted_at))
        rows: I64 = np.searchsorted(self._sensors.keys, unique)[inverse]
        return rows

    def _count(self, window: int, sensor: I64, values: F64, flags: U8 | None) -> None:
        """Add counted readings to the window starting at ``window``, opening it for the
        sensors it lacks, in record order so the sums do not depend on the batching; values
        QC ``flags`` suspect or failed are counted as such, not in the statistics."""
        n_fields = len(self._spec.fields)
        table = self._windows.get(window) or OpenWindows.empty(n_fields)
        at, found = find(table.sensor, sensor)  # one start a table: its rows by sensor
        missing = np.flatnonzero(~found)
        if missing.size:
            new_sensor, which = np.unique(sensor[missing], return_inverse=True)
            opened_at = np.empty(new_sensor.size, dtype=np.int64)
            opened_at[which] = at[missing]  # a sensor's readings belong at the same row
            start = np.full(new_sensor.size, window, dtype=np.int64)
            opened = OpenWindows.new(new_sensor, start, n_fields)
            table = table.insert(opened_at, opened)
            at = renumber(at, opened_at)  # rows found move down past the inserted ones
            at[missing] = opened_at[which] + which
        finite = np.isfinite(values)
        if flags is not None:
            suspect, failed = flags == SUSPECT, flags == FAILED
            _at(np.add, table.suspect, at, suspect.astype(np.int64))
            _at(np.add, table.failed, at, failed.astype(np.int64))
            finite &= ~(suspect | failed)
        np.add.at(table.count, at, 1)
        _at(np.add, table.field_count, at, finite.astype(np.int64))
        _at(np.add, table.total, at, np.where(finite, values, 0.0))
        _at(np.fmin, table.low, at, np.where(finite, values, np.nan))  # fmin skips NaN
        _at(np.fmax, table.high, at, np.where(finite, values, np.nan))
        self._windows[window] = table

    def _close(self, offsets: I64, seen: I64) -> Aggregates:
        """Take out the windows the watermark has reached (whole tables: every sensor's
        window of one start closes at the same watermark), noting the reading that closed
        each; their dedup keys stay until :meth:`release`."""
        spec = self._spec
        watermark = self._max_event - spec.lateness_us
        ends = [w for w in self._windows if w + spec.length_us <= watermark]
        for window in {*self._windows, *self._dedup} - self._closed.keys():
            due = window + spec.length_us + spec.lateness_us
            if due <= self._max_event:
                self._closed[window] = int(offsets[np.searchsorted(seen[1:], due)])
        if not ends:
            return Aggregates.empty(spec.fields)
        closed = [self._windows.pop(window) for window in sorted(ends)]
        aggregates = Aggregates.closed(
            spec.fields, self._sensors.keys, closed[0].joined(closed[1:]), spec.length_us
        )
        aggregates.flagged = spec.flagged
        if spec.pollutants:  # each start's windows in sensor order: the aggregates' order
            aggregates.nowcast = []
            for windows in closed:
                hourly.fold(self._sensors, windows, spec.pollutants)
                aggregates.nowcast += hourly.nowcasts(
                    self._sensors, windows, spec.fields, spec.pollutants
                )
        return aggregates

    def release(self, commit_offset: int) -> None:
        """The commit point reached ``commit_offset``: forget the closed windows closed by a
        reading before it, and their dedup keys. No replay reaches them any more: a reading
        re-read from the commit point on came after the window closed, so it was late."""
        for window, closer in list(self._closed.items()):
            if closer < commit_offset:
                del self._closed[window]
                self._dedup.pop(window, None)

    def take_changes(self) -> ChangedRows:
        """The rows of the sensors changed since the last call (each sensor's whole state:
        applied offset, open windows, dedup keys), and the partition's row, serialized now."""
        spec = self._spec
        keys = self._sensors.keys
        changed, _ = unique_keys(np.concatenate([keys[:0], *self._changed]))
        self._changed = []
        if changed.size == keys.size:  # every sensor (a busy partition): no rows to pick
            sensors = self._sensors
            windows = in_start_order(self._windows, OpenWindows.empty(len(spec.fields)))
            dedup = in_start_order(self._dedup, DedupKeys.empty())
        else:
            who = np.searchsorted(keys, changed)
            sensors = self._sensors.rows(who)
            windows = in_start_order(
                {w: of_sensors(table, who) for w, table in self._windows.items()},
                OpenWindows.empty(len(spec.fields)),
            )
            dedup = in_start_order(
                {w: of_sensors(table, who) for w, table in self._dedup.items()},
                DedupKeys.empty(),
            )
            windows = replace(windows, sensor=np.searchsorted(who, windows.sensor))
            dedup = replace(dedup, sensor=np.searchsorted(who, dedup.sensor))
        # Rows in start order, each start's by sensor (then event): a stable sort by sensor
        # makes them (sensor, start, event), merging sorted runs (timsort: near linear).
        windows = windows.rows(np.argsort(windows.sensor, kind="stable"))
        dedup = dedup.rows(np.argsort(dedup.sensor, kind="stable"))
        packed = pack_sensors(
            SensorState(sensors.keys, sensors.applied, sensors.hour, sensors.hourly, windows, dedup)
        )
        partition = pack_partition(
            spec.length_ms,
            spec.lateness_ms,
            spec.fields,
            spec.dedup,
            PartitionState(self._max_event, dict(self._closed)),
        )
        return ChangedRows(packed, partition)

    @classmethod
    def from_rows(cls, spec: WindowSpec, rows: Iterable[Row]) -> PartitionWindows:
        """The state the latest row of each key describes (rows in the order written);
        :class:`StateError` if unreadable or written under other settings. Without the
        partition's row (a crash amid the first batch's rows) nothing counts as seen: the
        re-read from the commit point raises the watermark again."""
        state = cls(spec)
        partition, keys, values = latest(rows)
        if partition is not None:
            saved = unpack_partition(
                partition, spec.length_ms, spec.lateness_ms, spec.fields, spec.dedup
            )
            state._max_event, state._closed = saved.max_event, saved.closed
        sensors = unpack_sensors(keys, values, len(spec.fields), len(spec.pollutants))
        state._sensors = Sensors(keys, sensors.applied, sensors.hour, sensors.hourly)
        shut = state._shut(sensors.windows.start)
        hourly.fold_closed(state._sensors, sensors.windows.rows(shut), spec.pollutants)
        windows = sensors.windows.rows(~shut)
        state._windows = {w: windows.rows(rows) for w, rows in by_window(windows.start)}
        dedup = sensors.dedup
        starts = dedup.event_us - dedup.event_us % spec.length_us
        kept = ~state._shut(starts) | np.isin(starts, list(state._closed))
        dedup = dedup.rows(kept)
        starts = starts[kept]
        state._dedup = {w: dedup.rows(rows) for w, rows in by_window(starts)}
        return state

    def _shut(self, start: I64) -> Mask:
        """Which of these window starts the watermark has closed."""
        watermark = self.watermark_us
        if watermark is None:
            return np.zeros(start.size, dtype=bool)
        shut: Mask = start + self._spec.length_us <= watermark
        return shut

    def sizes(self) -> StateSizes:
        """How many rows each table holds and their bytes: for gauges and the memory budget."""
        windows, dedup = self._windows.values(), self._dedup.values()
        return StateSizes(
            self._sensors.size(),
            self._sensors.nbytes(),
            sum(table.size() for table in windows),
            sum(table.nbytes() for table in windows),
            sum(keys.size() for keys in dedup),
            sum(keys.nbytes() for keys in dedup),
        )

    def memory_bytes(self) -> int:
        """The bytes of the state's arrays (the objects around them are a constant ~2 KB)."""
        sizes = self.sizes()
        return sizes.sensor_bytes + sizes.window_bytes + sizes.dedup_bytes


def _at(ufunc: np.ufunc, columns: npt.NDArray[Any], at: I64, values: npt.NDArray[Any]) -> None:
    """``ufunc.at(columns, at, values)`` on ``(rows, fields)`` columns, a field at a time:
    the same operations in the same order, but numpy's fast path for one dimension is ~7x
    quicker than its general one (numpy 2.4)."""
    for field in range(columns.shape[1]):
        ufunc.at(columns[:, field], at, values[:, field])


def _late(spec: WindowSpec, closed: dict[int, int], start: I64, offsets: I64, seen: I64) -> Mask:
    """Readings whose window was closed by a reading before them: judged by the watermark as
    of just before each, and for a window closed already, by the offset of the reading that
    closed it (``closed``; a replay of a reading from before that was not late)."""
    due = start + (spec.length_us + spec.lateness_us)  # the largest event time closing it
    shut = due <= seen[:-1]
    closer = np.full(start.size, -1, dtype=np.int64)
    for window, rows in by_window(start, shut):
        if int(due[rows[0]]) <= seen[0]:  # closed before this batch; -1: released
            closer[rows] = closed.get(window, -1)
        else:
            closer[rows] = offsets[np.searchsorted(seen[1:], due[rows[0]])]
    late: Mask = shut & (closer < offsets)
    return late


def _deduplicate(
    dedup: dict[int, DedupKeys],
    length_us: int,
    sensor: I64,
    event: I64,
    offsets: I64,
    *,
    start: I64,
    replay: Mask,
    late: Mask,
) -> Mask:
    """Readings not late whose (sensor, timestamp) was counted from another record: in an open
    window before this batch (its ``dedup`` keys; a re-read original finds its own offset
    there), or earlier in this batch. The keys of the others, new and counted now, join their
    window's ``dedup`` keys (made here for a window that has none)."""
    found = np.zeros(sensor.size, dtype=bool)
    recorded = np.full(sensor.size, -1, dtype=np.int64)
    again = np.zeros(sensor.size, dtype=bool)
    for window, rows in by_window(start, ~late):
        known = dedup.setdefault(window, DedupKeys.empty())
        wanted = dedup_key(sensor[rows], event[rows], window, length_us)
        at, found[rows] = find(dedup_key(known.sensor, known.event_us, window, length_us), wanted)
        hit = found[rows]
        recorded[rows[hit]] = known.offset[at[hit]]
        new = np.flatnonzero(~(replay[rows] | hit))
        order = new[np.argsort(wanted[new], kind="stable")]  # the first of equal keys counts
        repeat = np.zeros(order.size, dtype=bool)
        repeat[1:] = wanted[order[1:]] == wanted[order[:-1]]
        again[rows[order[repeat]]] = True
        first = order[~repeat]  # in key order
        if first.size:  # else (a batch of replays) the keys stay as they are, not copied
            picked = rows[first]
            dedup[window] = known.insert(
                at[first], DedupKeys(sensor[picked], event[picked], offsets[picked])
            )
    duplicate: Mask = ~late & (((replay | found) & (recorded != offsets)) | again)
    return duplicate
