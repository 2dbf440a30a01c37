"""One input partition's tumbling windows, watermark and dedup keys, applied a batch at a time.

Semantics (issue 17): a reading's window is ``[start, start + length)`` with ``start`` its
event time floored to a multiple of ``length`` from the Unix epoch, per sensor. The
partition's watermark is the largest event time seen minus the allowed lateness; a window is
closed once the watermark is ``>=`` its end, and its aggregate is returned once. A reading
whose window is closed when it arrives is LATE (not counted); with dedup, a reading with the
(sensor, timestamp) of one counted in a still open window is a DUPLICATE (not counted).

**Batch boundaries do not matter.** Each reading is judged against the watermark as of just
before it (a running maximum through the batch), duplicates against the readings counted
before it, and sums are added in record order (``np.add.at``): any split of the same records
into batches gives the same verdicts, aggregates and state, to the bit. So does a crash that
makes the engine cut its batches differently the second time.

**Exactly once under re-delivery.** Each sensor keeps the highest input offset applied to it
(a sensor's records are on one partition, applied in offset order). A record at or below it
is a REPLAY: it changes nothing and gets the verdict it got the first time, so the engine
republishes the same point or dead letter. With dedup, the open windows' keys keep the offset
of the reading that was counted, which tells a re-read original (COUNTED) from a re-read
duplicate (DUPLICATE). Once a re-read reading's window has closed since, it is judged LATE:
for a reading first COUNTED that is harmless (a late reading's point is still published),
but a re-read DUPLICATE then also comes out LATE, so its point is published after its dead
letter was: the keys of closed windows are gone, and keeping them needs the engine's commit
point to know when to let them go.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from processor.errors import StateError
from processor.state.aggregates import Aggregates
from processor.state.tables import (
    F64,
    I64,
    DedupKeys,
    Keys,
    OpenWindows,
    Sensors,
    find,
    locate,
    renumber,
    unique_pairs,
)

Mask = npt.NDArray[np.bool_]
NOTHING_SEEN = int(np.iinfo(np.int64).min)  # the running maximum before any event time


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """The settings state depends on: restoring under other settings is refused."""

    length_ms: int
    lateness_ms: int
    fields: tuple[str, ...]
    dedup: bool

    def __post_init__(self) -> None:
        # A lateness >= 0 is what lets a reading never close its own window.
        if self.length_ms <= 0 or self.lateness_ms < 0:
            raise ValueError(f"window length must be > 0 and lateness >= 0, got {self}")


class Verdict(IntEnum):
    """What a reading did to the state (``apply``'s verdicts are ``uint8`` of these)."""

    COUNTED = 0
    LATE = 1  # its window had closed: not counted, its point is still published
    DUPLICATE = 2  # dedup: its (sensor, timestamp) was counted in an open window


@dataclass(slots=True)
class Readings:
    """One partition's valid readings of one batch, in offset order, as columns.

    ``sensors`` are :func:`processor.state.aggregates.sensor_keys` (fixed-width UTF-8 bytes,
    searched in C; see there); ``values`` is ``(n, len(spec.fields))``, NaN where the field
    was missing or not a finite number.
    """

    offsets: I64
    sensors: Keys
    event_ms: I64
    values: F64

    def check(self, n_fields: int) -> None:
        """Refuse a batch that breaks the contract: it would corrupt the state silently."""
        n = self.offsets.size
        if (
            self.sensors.size != n
            or self.event_ms.size != n
            or self.values.shape
            != (
                n,
                n_fields,
            )
        ):
            raise ValueError("readings' columns differ in length or in number of fields")
        if self.sensors.dtype.kind != "S":
            raise ValueError(f"sensors must be sensor_keys(), got dtype {self.sensors.dtype}")
        if n and (self.offsets[0] < 0 or (np.diff(self.offsets) <= 0).any()):
            raise ValueError("readings' offsets must be >= 0 and increasing")


class PartitionWindows:
    """The window state of one input partition (see the module docstring)."""

    def __init__(self, spec: WindowSpec) -> None:
        self._spec = spec
        self._max_event = NOTHING_SEEN
        self._sensors = Sensors.empty()
        self._windows = OpenWindows.new(*_no_pairs(), len(spec.fields))
        self._dedup = DedupKeys.empty()

    @property
    def spec(self) -> WindowSpec:
        return self._spec

    @property
    def watermark_ms(self) -> int | None:
        """The largest event time seen minus the lateness; None before any reading."""
        if self._max_event == NOTHING_SEEN:
            return None
        return self._max_event - self._spec.lateness_ms

    def apply(self, readings: Readings) -> tuple[npt.NDArray[np.uint8], Aggregates]:
        """Count a batch: each reading's :class:`Verdict`, and the windows its readings closed.

        Re-read records (offset at or below their sensor's applied offset) change nothing.
        """
        spec = self._spec
        readings.check(len(spec.fields))
        verdicts = np.zeros(readings.offsets.size, dtype=np.uint8)
        if not verdicts.size:
            return verdicts, Aggregates.empty(spec.fields)
        sensor = self._sensor_rows(readings.sensors)
        offsets, event = readings.offsets, readings.event_ms
        replay = offsets <= self._sensors.applied[sensor]
        start = event - event % spec.length_ms
        seen = np.maximum.accumulate(np.concatenate(([self._max_event], event)))
        late = start + (spec.length_ms + spec.lateness_ms) <= seen[:-1]
        counted = ~(replay | late)
        if spec.dedup:
            duplicate = self._duplicates(sensor, event, offsets, replay, late)
            counted &= ~duplicate
            verdicts[duplicate] = Verdict.DUPLICATE
            self._dedup = _added(self._dedup, sensor[counted], event[counted], offsets[counted])
        verdicts[late] = Verdict.LATE
        np.maximum.at(self._sensors.applied, sensor, offsets)
        self._count(sensor[counted], start[counted], readings.values[counted])
        self._max_event = int(seen[-1])
        return verdicts, self._close()

    def _sensor_rows(self, keys: Keys) -> I64:
        """Each reading's sensor row, admitting sensors not seen before."""
        unique, inverse = np.unique(keys, return_inverse=True)
        self._sensors, inserted_at = self._sensors.admit(unique)
        if inserted_at.size:
            self._windows = replace(
                self._windows, sensor=renumber(self._windows.sensor, inserted_at)
            )
            self._dedup = replace(self._dedup, sensor=renumber(self._dedup.sensor, inserted_at))
        rows: I64 = np.searchsorted(self._sensors.keys, unique)[inverse]
        return rows

    def _duplicates(self, sensor: I64, event: I64, offsets: I64, replay: Mask, late: Mask) -> Mask:
        """Readings not late whose (sensor, timestamp) was counted from another record: in
        an open window before this batch (a re-read original finds its own offset there), or
        earlier in this batch."""
        dedup = self._dedup
        at, found = find(dedup.sensor, dedup.event_ms, sensor, event)
        recorded = np.full(sensor.size, -1, dtype=np.int64)
        recorded[found] = dedup.offset[at[found]]
        again = np.zeros(sensor.size, dtype=bool)
        new = np.flatnonzero(~(replay | late | found))
        order = new[np.lexsort((new, event[new], sensor[new]))]
        again[order[1:]] = (sensor[order[1:]] == sensor[order[:-1]]) & (
            event[order[1:]] == event[order[:-1]]
        )
        duplicate: Mask = ~late & (((replay | found) & (recorded != offsets)) | again)
        return duplicate

    def _count(self, sensor: I64, start: I64, values: F64) -> None:
        """Add counted readings to their windows, opening the missing ones, in record order so
        the sums do not depend on how the records were batched."""
        if not sensor.size:
            return
        windows = self._windows
        at, found = find(windows.sensor, windows.start, sensor, start)
        if not found.all():
            new_sensor, new_start = unique_pairs(sensor[~found], start[~found])
            new = OpenWindows.new(new_sensor, new_start, len(self._spec.fields))
            windows = windows.insert(
                locate(windows.sensor, windows.start, new_sensor, new_start), new
            )
            at = locate(windows.sensor, windows.start, sensor, start)
        finite = np.isfinite(values)
        np.add.at(windows.count, at, 1)
        np.add.at(windows.field_count, at, finite.astype(np.int64))
        np.add.at(windows.total, at, np.where(finite, values, 0.0))
        np.fmin.at(windows.low, at, np.where(finite, values, np.nan))  # fmin skips NaN
        np.fmax.at(windows.high, at, np.where(finite, values, np.nan))
        self._windows = windows

    def _close(self) -> Aggregates:
        """Take out the windows the watermark has reached, and their dedup keys."""
        spec, windows = self._spec, self._windows
        watermark = self._max_event - spec.lateness_ms
        closing = windows.start + spec.length_ms <= watermark
        if not closing.any():
            return Aggregates.empty(spec.fields)
        self._windows = windows.rows(~closing)
        if spec.dedup:
            event = self._dedup.event_ms
            self._dedup = self._dedup.rows(
                event - event % spec.length_ms + spec.length_ms > watermark
            )
        return Aggregates.closed(
            spec.fields, self._sensors.keys, windows.rows(closing), spec.length_ms
        )

    def memory_bytes(self) -> int:
        """The bytes of the state's arrays (the objects around them are a constant ~2 KB)."""
        return self._sensors.nbytes() + self._windows.nbytes() + self._dedup.nbytes()

    def snapshot(self) -> bytes:
        """The whole state as an uncompressed ``.npz`` (no pickles), for the local store and
        the changelog."""
        spec = self._spec
        arrays: dict[str, npt.NDArray[Any]] = {
            "spec": np.array([spec.length_ms, spec.lateness_ms, spec.dedup], dtype=np.int64),
            "fields": np.array(spec.fields, dtype=np.str_),
            "max_event": np.array(self._max_event, dtype=np.int64),
            **self._sensors.saved("sensors"),
            **self._windows.saved("windows"),
            **self._dedup.saved("dedup"),
        }
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def restore(cls, spec: WindowSpec, data: bytes) -> PartitionWindows:
        """The state :meth:`snapshot` saved; :class:`StateError` if unreadable or saved under
        other settings (it would count differently from what was counted)."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
            state = cls(spec)
            saved_spec = (arrays["spec"].tolist(), tuple(arrays["fields"].tolist()))
            if saved_spec != ([spec.length_ms, spec.lateness_ms, spec.dedup], spec.fields):
                raise StateError(
                    f"the saved window state was written under other settings than {spec}"
                )
            state._max_event = int(arrays["max_event"])
            state._sensors = Sensors.loaded("sensors", arrays)
            state._windows = OpenWindows.loaded("windows", arrays)
            state._dedup = DedupKeys.loaded("dedup", arrays)
        except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as e:
            raise StateError(f"the saved window state cannot be read: {e}") from e
        return state


def _no_pairs() -> tuple[I64, I64]:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)


def _added(dedup: DedupKeys, sensor: I64, event: I64, offsets: I64) -> DedupKeys:
    """The keys of newly counted readings added (they are distinct and not in ``dedup``)."""
    if not sensor.size:
        return dedup
    order = np.lexsort((event, sensor))
    new = DedupKeys(sensor[order], event[order], offsets[order])
    return dedup.insert(locate(dedup.sensor, dedup.event_ms, new.sensor, new.event_ms), new)
