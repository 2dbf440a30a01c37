"""The QC state as changelog rows: one value per sensor, and the settings' row.

Keys live beside the window state's in one changelog, so they must never meet theirs: a
window sensor key is the sensor key (which ends with ``KEY_END``, 0x01) and the window
partition's is empty; a QC sensor key is the sensor key followed by :data:`QC_KEY_END`
(0x02), and the settings' row is :data:`SETTINGS_KEY` alone (shorter than any QC sensor
key). A sensor's value holds all its QC state (so whatever is persisted of it is consistent
in itself): a 40-byte header, its last ``depth`` values, then its flags kept for replays,
little-endian; packed for all the batch's sensors by a structured array's ``tobytes``.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from processor.errors import StateError
from processor.qc.thresholds import QcSpec, history_fingerprint
from processor.state.aggregates import KEY_END

Row = tuple[bytes, bytes]
Keys = npt.NDArray[np.bytes_]
QC_KEY_END = b"\x02"
SETTINGS_KEY = QC_KEY_END
#: 2: the settings' row and each sensor's fingerprint name the history (fields and depth),
#: not the thresholds (1), so that thresholds may change over a saved state.
_FORMAT = 2
_HEADER = np.dtype(
    [
        ("applied", "<i8"),
        ("format", "<i4"),
        ("entries", "<i4"),
        ("settings", "<u8"),
        ("seen", "<i8"),
        ("last_us", "<i8"),
    ]
)


def _entry_dtype(n_fields: int) -> np.dtype[np.void]:
    return np.dtype([("offset", "<i8"), ("flag", "u1", (n_fields,)), ("failed", "u1", (n_fields,))])


class Kept(NamedTuple):
    """Flags kept for replays, per (reading, field): flag and failed-tests bitmask."""

    sensor: npt.NDArray[np.int64]
    offset: npt.NDArray[np.int64]
    flag: npt.NDArray[np.uint8]
    failed: npt.NDArray[np.uint8]

    @classmethod
    def empty(cls, n_fields: int) -> Kept:
        no_flags = np.empty((0, n_fields), dtype=np.uint8)
        return cls(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), no_flags, no_flags)

    def rows(self, index: npt.NDArray[np.int64] | slice) -> Kept:
        return Kept(self.sensor[index], self.offset[index], self.flag[index], self.failed[index])

    def copy(self) -> Kept:
        return Kept(self.sensor.copy(), self.offset.copy(), self.flag.copy(), self.failed.copy())

    def joined(self, other: Kept) -> Kept:
        return Kept(
            np.concatenate((self.sensor, other.sensor)),
            np.concatenate((self.offset, other.offset)),
            np.concatenate((self.flag, other.flag)),
            np.concatenate((self.failed, other.failed)),
        )

    def nbytes(self) -> int:
        return sum(column.nbytes for column in self)


class SensorRows(NamedTuple):
    """Sensors' QC state as columns: ``history`` ``(n, depth, fields)``, oldest first;
    ``kept.sensor`` indexes ``keys``."""

    keys: Keys
    applied: npt.NDArray[np.int64]
    seen: npt.NDArray[np.int64]
    last_us: npt.NDArray[np.int64]
    history: npt.NDArray[np.float64]
    kept: Kept


def qc_key(sensor_key: bytes) -> bytes:
    return sensor_key + QC_KEY_END


def settings_row(spec: QcSpec) -> Row:
    return SETTINGS_KEY, spec.history().encode()


def pack(spec: QcSpec, state: SensorRows) -> list[Row]:
    """One row per sensor; entries sorted by sensor. Every row's bytes are laid out in one
    buffer by numpy (the headers and values as one structured array, then each sensor's
    entries after its own), so each row is one slice of it."""
    n, n_fields = state.keys.size, len(spec.fields)
    kept = state.kept
    entries = np.bincount(kept.sensor, minlength=n)
    fixed = np.empty(n, dtype=_fixed_dtype(spec.depth * n_fields))
    fixed["applied"], fixed["format"], fixed["entries"] = state.applied, _FORMAT, entries
    fixed["settings"], fixed["seen"], fixed["last_us"] = (
        _fingerprint(spec),
        state.seen,
        state.last_us,
    )
    fixed["values"] = state.history.reshape(n, spec.depth * n_fields)
    log = np.empty(kept.sensor.size, dtype=_entry_dtype(n_fields))
    log["offset"], log["flag"], log["failed"] = kept.offset, kept.flag, kept.failed
    # Both sizes are multiples of the word: the buffer is filled a word, not a byte, at a time.
    word = np.dtype(f"<u{math.gcd(fixed.itemsize, log.itemsize, 8)}")
    sizes = np.stack((np.full(n, fixed.itemsize), entries * log.itemsize), axis=1).ravel()
    is_fixed = np.repeat(np.tile([True, False], n), sizes // word.itemsize)
    words = np.empty(is_fixed.size, dtype=word)
    words[is_fixed], words[~is_fixed] = fixed.view(word), log.view(word)
    blob = words.tobytes()
    ends = np.cumsum(sizes.reshape(n, 2).sum(axis=1)).tolist()
    return [
        (key + QC_KEY_END, blob[lo:hi])
        for key, lo, hi in zip(state.keys.tolist(), [0, *ends][:n], ends, strict=True)
    ]


def _check_history(spec: QcSpec, saved: bytes) -> None:
    """The saved settings' row (the history as last saved) against ``spec``'s: the same
    fields, and at least as many values kept (a longer history is restored shortened)."""
    try:
        history = json.loads(saved)
        same = history["fields"] == list(spec.fields) and history["depth"] >= spec.depth
    except (ValueError, TypeError, KeyError):
        same = False
    if not same:
        raise StateError(
            f"the saved QC state keeps the history {saved.decode(errors='replace')}, not "
            f"{spec.history()}: QC's fields or its longest flat line changed (thresholds may "
            "change and the flat line may shorten; the fields may not change, nor the flat "
            "line grow). Go back to them, or start the state over (delete the changelog "
            "topic and PROCESSOR_STATE_DIR)"
        )


def _fixed_dtype(values: int) -> np.dtype[np.void]:
    """A row's header then its ``depth * fields`` values."""
    return np.dtype([*_HEADER.descr, ("values", "<f8", (values,))])


@functools.lru_cache(maxsize=16)
def _fingerprint(spec: QcSpec) -> int:
    """:meth:`QcSpec.fingerprint`, hashed once per spec (its JSON costs ~0.7 ms)."""
    return spec.fingerprint()


def unpack(spec: QcSpec, rows: Iterable[Row]) -> SensorRows:
    """The latest row of each key (rows in the order written), sensors sorted by key, each
    keeping its latest ``spec.depth`` values (a row may keep more: saved under a longer flat
    line); :class:`StateError` if a row is unreadable or was written under other settings."""
    last = dict(rows)
    saved = last.pop(SETTINGS_KEY, None)
    if saved is not None:
        _check_history(spec, saved)
    if any(not key.endswith(KEY_END + QC_KEY_END) for key in last):
        raise StateError("a saved QC state row's key is not a QC sensor key")
    keys = np.array([key[:-1] for key in last], dtype=np.bytes_)
    order = np.argsort(keys, kind="stable")
    values = list(last.values())
    values = [values[i] for i in order.tolist()]
    keys = keys[order]
    n_fields, depth = len(spec.fields), spec.depth
    entry = _entry_dtype(n_fields)
    size = np.array([len(value) for value in values], dtype=np.int64)
    if (size < _HEADER.itemsize).any():
        raise StateError("a sensor's saved QC state is shorter than its header")
    header = np.frombuffer(b"".join(v[: _HEADER.itemsize] for v in values), dtype=_HEADER)
    entries = header["entries"].astype(np.int64)
    # Each row's depth, from its size: a header, depth * fields values, then its entries.
    kept, rest = np.divmod(size - _HEADER.itemsize - entries * entry.itemsize, n_fields * 8)
    if (rest != 0).any() or (kept < 0).any():
        raise StateError(f"a sensor's saved QC state does not hold {n_fields} fields")
    prints = {d: history_fingerprint(spec.fields, d) for d in np.unique(kept).tolist()}
    expected = np.array([prints[d] for d in kept.tolist()], dtype=np.uint64)
    if (header["format"] != _FORMAT).any() or (header["settings"] != expected).any():
        raise StateError(
            "a sensor's saved QC state keeps another history (QC's fields or longest flat "
            "line) or was saved by another build: start the state over (delete the changelog "
            "topic and PROCESSOR_STATE_DIR)"
        )
    if (kept < depth).any():
        raise StateError(
            f"a sensor's saved QC state keeps {int(kept.min())} values a field, the longest "
            f"flat line needs {depth}: start the state over (delete the changelog topic and "
            "PROCESSOR_STATE_DIR)"
        )
    end = _HEADER.itemsize + kept * n_fields * 8
    start = end - depth * n_fields * 8  # the latest depth values: a history is oldest first
    history = np.frombuffer(
        b"".join(v[lo:hi] for v, lo, hi in zip(values, start.tolist(), end.tolist(), strict=True)),
        dtype="<f8",
    ).reshape(keys.size, depth, n_fields)
    log = np.frombuffer(
        b"".join(v[hi:] for v, hi in zip(values, end.tolist(), strict=True)), dtype=entry
    )
    return SensorRows(
        keys,
        header["applied"].astype(np.int64),
        header["seen"].astype(np.int64),
        header["last_us"].astype(np.int64),
        history.astype(np.float64),
        Kept(
            np.repeat(np.arange(keys.size, dtype=np.int64), entries),
            log["offset"].astype(np.int64),
            log["flag"].astype(np.uint8).reshape(-1, n_fields),
            log["failed"].astype(np.uint8).reshape(-1, n_fields),
        ),
    )
