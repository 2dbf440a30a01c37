"""The window state's tables: equal-length numpy columns, kept sorted by int64 keys so a batch
finds its rows with binary searches instead of a dict per row.

A million sensors are then a few arrays, not a million Python objects; inserting a batch's
new rows, picking a window's or some sensors' rows and dropping closed ones are whole-column
numpy operations.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Self, TypeVar

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
Keys = npt.NDArray[np.bytes_]


def find(column: I64, query: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Each query's row in a sorted ``column`` (where it belongs, if absent) and whether it
    is there."""
    at = np.searchsorted(column, query)
    if not column.size:
        return at, np.zeros(at.size, dtype=bool)
    found: npt.NDArray[np.bool_] = column[np.minimum(at, column.size - 1)] == query
    return at, found  # past the end, the last row is less than the query: not found


def dedup_key(sensor: I64, event_us: I64, window: int, length_us: int) -> I64:
    """The (sensor row, event time) pairs of one window as one int64 each, in the same order:
    an event time is less than ``length_us`` past its window's start, so the pairs sort (and
    are searched) as ``sensor * length_us + (event_us - window)``, one searchsorted instead
    of a search within each sensor's run. Fits while the sensors times the length are below
    2**63 (:func:`max_sensors`)."""
    key: I64 = sensor * length_us + (event_us - window)
    return key


def max_sensors(length_us: int) -> int:
    """The most sensors a partition's :func:`dedup_key` holds with windows of ``length_us``:
    2.5 billion with hourly windows, 15 million with weekly ones."""
    return int(np.iinfo(np.int64).max) // length_us


@dataclass(slots=True)
class Table:
    """Columns of equal length on axis 0. Rows are inserted and dropped by making new arrays
    (numpy's insert and masks copy anyway); counts are added in place."""

    def columns(self) -> dict[str, npt.NDArray[Any]]:
        return {name: getattr(self, name) for name in _column_names(type(self))}

    def rows(self, index: npt.NDArray[Any]) -> Self:
        """The rows a boolean mask or an index array picks, in its order (``np.take``: twice
        as fast as ``column[index]`` on the ``(n, fields)`` columns)."""
        if index.dtype == np.bool_:
            index = np.flatnonzero(index)
        return replace(
            self,
            **{name: np.take(column, index, axis=0) for name, column in self.columns().items()},
        )

    def insert(self, at: I64, rows: Self) -> Self:
        """``rows`` inserted before the rows ``at`` (``np.insert`` positions, nondecreasing)."""
        mine = self.columns()
        return replace(
            self,
            **{name: _insert(mine[name], at, column) for name, column in rows.columns().items()},
        )

    def nbytes(self) -> int:
        return sum(column.nbytes for column in self.columns().values())

    def size(self) -> int:
        return int(next(iter(self.columns().values())).shape[0])

    def joined(self, others: list[Self]) -> Self:
        """This table's rows followed by the others'."""
        parts = [self, *others]
        return replace(
            self,
            **{
                name: np.concatenate([part.columns()[name] for part in parts])
                for name in self.columns()
            },
        )


#: Each table class's column names: ``dataclasses.fields`` builds its answer on every call,
#: and a state step asks thousands of times a second.
_COLUMNS: dict[type[Table], tuple[str, ...]] = {}


def _column_names(table: type[Table]) -> tuple[str, ...]:
    names = _COLUMNS.get(table)
    if names is None:
        names = _COLUMNS[table] = tuple(f.name for f in fields(table))
    return names


def _insert(column: npt.NDArray[Any], at: I64, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``np.insert`` that widens a bytes column first: it would truncate longer values."""
    dtype = np.promote_types(column.dtype, values.dtype)
    return np.insert(column.astype(dtype, copy=False), at, values, axis=0)


#: The hours of means a sensor keeps for the NowCast (processor.state.hourly).
RECENT_HOURS = 12
NO_HOUR = int(np.iinfo(np.int64).min)  # ``Sensors.hour`` of a sensor with no closed hour


@dataclass(slots=True)
class Sensors(Table):
    """Every sensor seen on the partition, sorted by key; a sensor's row number is its index
    in the other tables. ``applied``: the highest input offset applied to its state (-1 when
    none yet), which tells a re-read record from a new one. With hourly windows of NowCast
    pollutants, ``hourly[row, p]`` holds the sensor's means of pollutant ``p`` for the hours
    starting at ``hour[row]`` (µs), an hour before it, ... (NaN: no value that hour);
    otherwise it has no pollutant (shape ``(n, 0, RECENT_HOURS)``)."""

    keys: Keys
    applied: I64
    hour: I64
    hourly: F64

    @classmethod
    def new(cls, keys: Keys, applied: I64, pollutants: int) -> Sensors:
        """Sensors with no closed hour yet."""
        return cls(
            keys,
            applied,
            np.full(keys.size, NO_HOUR, dtype=np.int64),
            np.full((keys.size, pollutants, RECENT_HOURS), np.nan),
        )

    @classmethod
    def empty(cls, pollutants: int = 0) -> Sensors:
        return cls.new(np.empty(0, dtype="S1"), np.empty(0, dtype=np.int64), pollutants)

    def admit(self, keys: Keys) -> tuple[Sensors, I64]:
        """The table with the sorted, distinct ``keys`` it lacked, and where they went in the
        old rows (``np.insert`` positions): an old row ``r`` is now ``r + searchsorted(at, r,
        "right")`` (:func:`renumber`)."""
        at = np.searchsorted(self.keys, keys)
        known = np.zeros(keys.size, dtype=bool)
        if self.keys.size:
            known = (at < self.keys.size) & (self.keys[np.minimum(at, self.keys.size - 1)] == keys)
        new, at = keys[~known], at[~known]
        if not new.size:
            return self, at
        added = Sensors.new(new, np.full(new.size, -1, dtype=np.int64), self.hourly.shape[1])
        return self.insert(at, added), at


def renumber(rows: I64, inserted_at: I64) -> I64:
    """Where old rows of a table are after ``np.insert`` put rows before ``inserted_at``."""
    if not inserted_at.size:
        return rows
    return rows + np.searchsorted(inserted_at, rows, "right")


#: An odd 64-bit multiplier that mixes a key's words into its hash (any would be exact).
_MIX = np.uint64(0x9E3779B97F4A7C15)


def unique_keys(keys: Keys) -> tuple[Keys, I64]:
    """``np.unique(keys, return_inverse=True)`` of a batch's keys, several times faster:
    sorting one uint64 hash a key, then only the distinct keys' words, is cheaper than
    sorting every key's bytes. Exact: every key is checked equal to its hash's first key,
    and a collision falls back to sorting the bytes."""
    n, width = keys.size, keys.itemsize
    if not n or not width:
        unique, inverse = np.unique(keys, return_inverse=True)
        return unique, inverse.astype(np.int64, copy=False)
    raw = np.zeros((n, -(-width // 8) * 8), dtype=np.uint8)  # zero-padded to whole words
    raw[:, :width] = np.ascontiguousarray(keys).view(np.uint8).reshape(n, width)
    words = raw.view(np.uint64)
    hashes = np.zeros(n, dtype=np.uint64)
    for word in words.T:  # ~width / 8 passes over the batch
        hashes = (hashes ^ word) * _MIX
        hashes ^= hashes >> np.uint64(29)
    order = np.argsort(hashes)
    starts = np.empty(n, dtype=bool)  # in hash order: a hash unlike the one before
    starts[0] = True
    np.not_equal(hashes[order[1:]], hashes[order[:-1]], out=starts[1:])
    group = np.empty(n, dtype=np.int64)  # each key's hash, numbered
    group[order] = np.cumsum(starts) - 1
    first = order[starts]  # a key of each hash
    if not (np.take(np.take(words, first, axis=0), group, axis=0) == words).all():
        unique, inverse = np.unique(keys, return_inverse=True)
        return unique, inverse.astype(np.int64, copy=False)
    # Bytes order is the order of the words read big-endian, the first the most significant.
    distinct = np.take(words, first, axis=0).byteswap()
    by_bytes = np.lexsort(distinct[:, ::-1].T)
    rank = np.empty(first.size, dtype=np.int64)
    rank[by_bytes] = np.arange(first.size)
    return keys[first[by_bytes]], rank[group]


@dataclass(slots=True)
class OpenWindows(Table):
    """Windows not closed yet, sorted by (sensor row, start): the running aggregates. Per
    field ``(n, fields)`` columns: values counted, their sum, min (+inf when none) and max,
    and the values quality control flagged suspect or failed (not counted)."""

    sensor: I64
    start: I64
    count: I64
    field_count: I64
    total: F64
    low: F64
    high: F64
    suspect: I64
    failed: I64

    @classmethod
    def new(cls, sensor: I64, start: I64, n_fields: int) -> OpenWindows:
        """Empty windows, ready to count into."""
        shape = (sensor.size, n_fields)
        return cls(
            sensor,
            start,
            np.zeros(sensor.size, dtype=np.int64),
            np.zeros(shape, dtype=np.int64),
            np.zeros(shape),
            np.full(shape, np.inf),
            np.full(shape, -np.inf),
            np.zeros(shape, dtype=np.int64),
            np.zeros(shape, dtype=np.int64),
        )

    @classmethod
    def empty(cls, n_fields: int) -> OpenWindows:
        return cls.new(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), n_fields)


@dataclass(slots=True)
class DedupKeys(Table):
    """The (sensor row, event time) of every reading counted in an open window, sorted, with
    the input offset of the reading that was counted (so a re-read original is told from a
    duplicate of it)."""

    sensor: I64
    event_us: I64
    offset: I64

    @classmethod
    def empty(cls) -> DedupKeys:
        return cls(*(np.empty(0, dtype=np.int64) for _ in range(3)))


TableT = TypeVar("TableT", bound=Table)


def by_window(start: I64, mask: npt.NDArray[np.bool_] | None = None) -> list[tuple[int, I64]]:
    """The distinct window starts of the rows ``mask`` picks, and their rows, in order."""
    rows = np.flatnonzero(mask) if mask is not None else np.arange(start.size)
    if not rows.size:
        return []
    picked = start[rows]
    if picked.min() == picked.max():  # the usual batch: its readings in one window
        return [(int(picked[0]), rows)]
    rows = rows[np.argsort(picked, kind="stable")]
    windows, first = np.unique(start[rows], return_index=True)
    return list(zip(windows.tolist(), np.split(rows, first[1:]), strict=True))


def in_start_order(tables: dict[int, TableT], empty: TableT) -> TableT:
    """Tables by window start as one, in start order."""
    return empty.joined([tables[w] for w in sorted(tables)])


def of_sensors(table: TableT, who: I64) -> TableT:
    """The rows of the sensors ``who`` (sorted) in a table sorted by sensor row."""
    sensor = table.columns()["sensor"]
    lo = np.searchsorted(sensor, who, "left")
    return table.rows(runs(lo, np.searchsorted(sensor, who, "right") - lo))


def runs(start: I64, count: I64) -> I64:
    """The indices ``start[i], start[i] + 1, ..., start[i] + count[i] - 1`` for every ``i``,
    in one array."""
    before = np.cumsum(count) - count
    indices: I64 = np.repeat(start - before, count) + np.arange(int(count.sum()), dtype=np.int64)
    return indices
