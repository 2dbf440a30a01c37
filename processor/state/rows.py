"""The window state as changelog rows: one value per sensor (key = its sensor key) and one for
the partition (key :data:`PARTITION_KEY`), packed and unpacked for many sensors at once.

A sensor's value holds all of its state, so whatever is persisted about it is consistent in
itself (docs/state.md): a 24-byte header (applied offset, format, open windows, dedup keys,
whether the keys are written as steps), with hourly windows of NowCast pollutants its recent
hourly means, then its windows' records, then its dedup keys (:mod:`~processor.state.key_rows`:
8 bytes a key), little-endian; window starts and event times in microseconds.
Each kind of record is packed for all the batch's sensors by one structured array's
``tobytes``, and cut per sensor: the Python work is a few slices a sensor, none per window,
key or field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from processor.durations import format_ms
from processor.errors import StateError
from processor.state.key_rows import cut, pack_keys, region_bytes, unpack_keys
from processor.state.tables import (
    F64,
    I64,
    NO_HOUR,
    RECENT_HOURS,
    DedupKeys,
    Keys,
    OpenWindows,
)

# Sensor keys end with KEY_END (aggregates.sensor_keys), so no sensor key is empty.
PARTITION_KEY = b""
Row = tuple[bytes, bytes]

#: The rows' format, first in the partition's row and after the applied offset in a
#: sensor's: -4, dedup keys written as steps from the key before (-3: windows count the
#: values quality control flagged and sensors keep hourly means; -2: event times in
#: microseconds). Negative, where rows of the first builds (times in milliseconds, no format)
#: had the window length or a count: theirs are refused, not misread.
_FORMAT = -4
_FORMAT_ERROR = (
    "the saved window state is not in this build's format (it was saved by an earlier "
    "build): start the state over (delete the changelog topic and PROCESSOR_STATE_DIR)"
)
_HEADER = np.dtype(
    [("applied", "<i8"), ("format", "<i4"), ("windows", "<i4"), ("keys", "<i4"), ("steps", "<i4")]
)
#: Format, length, lateness (ms, as configured), dedup, max event, closed windows; pairs.
_PARTITION = np.dtype("<i8")
_PARTITION_HEAD = 6


def _window_dtype(n_fields: int) -> np.dtype[np.void]:
    per_field = (n_fields,)
    return np.dtype(
        [
            ("start", "<i8"),
            ("count", "<i8"),
            ("field_count", "<i8", per_field),
            ("total", "<f8", per_field),
            ("low", "<f8", per_field),
            ("high", "<f8", per_field),
            ("suspect", "<i8", per_field),
            ("failed", "<i8", per_field),
        ]
    )


def _recent_dtype(pollutants: int) -> np.dtype[np.void]:
    """A sensor's recent hourly means (none without NowCast pollutants)."""
    if not pollutants:
        return np.dtype([])
    return np.dtype([("hour", "<i8"), ("hourly", "<f8", (pollutants, RECENT_HOURS))])


@dataclass(frozen=True, slots=True)
class ChangedRows:
    """The rows a batch changed, serialized when it was applied. ``partition`` must be
    persisted after ``sensors``: restore trusts the partition's watermark only as far as the
    sensor rows written with it (one changelog partition keeps the order)."""

    sensors: list[Row]
    partition: Row

    def pairs(self) -> list[Row]:
        """All rows, in the order they must be written."""
        return [*self.sensors, self.partition]

    def nbytes(self) -> int:
        return sum(len(key) + len(value) for key, value in self.pairs())


class SensorState(NamedTuple):
    """Sensors' state unpacked: ``windows.sensor`` and ``dedup.sensor`` index ``keys``;
    ``hour`` and ``hourly`` as :class:`~processor.state.tables.Sensors` has them."""

    keys: Keys
    applied: I64
    hour: I64
    hourly: F64
    windows: OpenWindows
    dedup: DedupKeys


class PartitionState(NamedTuple):
    max_event: int  # the largest event time seen, µs
    closed: dict[int, int]  # closed window start (µs) -> offset of the reading that closed it


def pack_sensors(state: SensorState) -> list[Row]:
    """One row per key; ``windows`` and ``dedup`` sorted by sensor (then start, event)."""
    n = state.keys.size
    window_dtype = _window_dtype(state.windows.field_count.shape[1])
    recent_dtype = _recent_dtype(state.hourly.shape[1])
    recent = np.empty(n, dtype=recent_dtype)
    if recent_dtype.itemsize:
        recent["hour"], recent["hourly"] = state.hour, state.hourly
    n_windows = np.bincount(state.windows.sensor, minlength=n)
    n_keys = np.bincount(state.dedup.sensor, minlength=n)
    compact, whole_keys, key_steps = pack_keys(n_keys, state.dedup.event_us, state.dedup.offset)
    header = np.empty(n, dtype=_HEADER)
    header["applied"], header["format"] = state.applied, _FORMAT
    header["windows"], header["keys"], header["steps"] = n_windows, n_keys, compact
    windows = np.empty(state.windows.sensor.size, dtype=window_dtype)
    for name in window_dtype.names or ():
        windows[name] = getattr(state.windows, name)
    one = np.ones(n, dtype=np.int64)
    headers, recents, window_ends = (
        cut(header.tobytes(), one * _HEADER.itemsize),
        cut(recent.tobytes(), one * recent_dtype.itemsize),
        cut(windows.tobytes(), n_windows * window_dtype.itemsize),
    )
    values = [
        b"".join(parts)
        for parts in zip(headers, recents, window_ends, whole_keys, key_steps, strict=True)
    ]
    return list(zip(state.keys.tolist(), values, strict=True))


def unpack_sensors(
    keys: Keys, values: list[bytes], n_fields: int, pollutants: int = 0
) -> SensorState:
    """The state of sensors from their values (in ``keys`` order); :class:`StateError` if a
    value is not what :func:`pack_sensors` writes for ``n_fields`` fields and ``pollutants``
    NowCast pollutants."""
    window_dtype, recent_dtype = _window_dtype(n_fields), _recent_dtype(pollutants)
    size = np.array([len(value) for value in values], dtype=np.int64)
    if (size < _HEADER.itemsize).any():
        raise StateError("a sensor's saved window state is shorter than its header")
    start = _HEADER.itemsize
    header = np.frombuffer(b"".join([value[:start] for value in values]), dtype=_HEADER)
    if (header["format"] != _FORMAT).any():
        raise StateError(_FORMAT_ERROR)
    head = start + recent_dtype.itemsize
    n_windows, n_keys = header["windows"].astype(np.int64), header["keys"].astype(np.int64)
    steps = header["steps"]
    expected = head + n_windows * window_dtype.itemsize + region_bytes(n_keys, steps == 1)
    malformed = (n_windows < 0) | (n_keys < 0) | ((steps != 0) & (steps != 1))
    if malformed.any() or (expected != size).any():
        raise StateError(
            f"a sensor's saved window state does not hold {n_fields} fields and "
            f"{pollutants} NowCast pollutants"
        )
    split = (head + n_windows * window_dtype.itemsize).tolist()
    windows = np.frombuffer(
        b"".join([value[head:at] for value, at in zip(values, split, strict=True)]),
        dtype=window_dtype,
    )
    event_us, offset = unpack_keys(
        [value[at:] for value, at in zip(values, split, strict=True)], n_keys, steps == 1
    )
    sensor = np.arange(keys.size, dtype=np.int64)
    hour = np.full(keys.size, NO_HOUR, dtype=np.int64)
    hourly = np.empty((keys.size, 0, RECENT_HOURS))
    if pollutants:
        recent = np.frombuffer(b"".join([v[start:head] for v in values]), dtype=recent_dtype)
        hour, hourly = recent["hour"].astype(np.int64), recent["hourly"].astype(np.float64)
    return SensorState(
        keys,
        header["applied"].astype(np.int64),
        hour,
        hourly,
        OpenWindows(
            np.repeat(sensor, n_windows),
            windows["start"].astype(np.int64),
            windows["count"].astype(np.int64),
            windows["field_count"].astype(np.int64).reshape(-1, n_fields),
            windows["total"].astype(np.float64).reshape(-1, n_fields),
            windows["low"].astype(np.float64).reshape(-1, n_fields),
            windows["high"].astype(np.float64).reshape(-1, n_fields),
            windows["suspect"].astype(np.int64).reshape(-1, n_fields),
            windows["failed"].astype(np.int64).reshape(-1, n_fields),
        ),
        DedupKeys(np.repeat(sensor, n_keys), event_us, offset),
    )


def pack_partition(
    length_ms: int, lateness_ms: int, fields: tuple[str, ...], dedup: bool, state: PartitionState
) -> Row:
    """The partition's row: the settings it was counted under, its largest event time and
    the closed windows whose closing offset replays still need."""
    closed = sorted(state.closed.items())
    numbers = [_FORMAT, length_ms, lateness_ms, int(dedup), state.max_event, len(closed)]
    numbers += [number for pair in closed for number in pair]
    value = np.array(numbers, dtype=_PARTITION).tobytes() + json.dumps(list(fields)).encode()
    return PARTITION_KEY, value


def unpack_partition(
    value: bytes, length_ms: int, lateness_ms: int, fields: tuple[str, ...], dedup: bool
) -> PartitionState:
    """The partition's row; :class:`StateError` if unreadable or saved under other settings."""
    item, head = _PARTITION.itemsize, _PARTITION_HEAD
    if value[:item] != np.array(_FORMAT, dtype=_PARTITION).tobytes():
        raise StateError(_FORMAT_ERROR)
    try:
        numbers = np.frombuffer(value[item : head * item], dtype=_PARTITION).tolist()
        saved_length, saved_lateness, saved_dedup, max_event, n_closed = numbers
        end = (head + 2 * n_closed) * item
        pairs = np.frombuffer(value[head * item : end], dtype=_PARTITION)
        saved_fields = tuple(json.loads(value[end:]))
        closed = dict(zip(pairs[0::2].tolist(), pairs[1::2].tolist(), strict=True))
    except (ValueError, TypeError) as e:  # short buffers, bad JSON, odd pairs
        raise StateError(f"the saved window state cannot be read: {e}") from e
    saved = _settings(saved_length, saved_lateness, fields=saved_fields, dedup=bool(saved_dedup))
    now = _settings(length_ms, lateness_ms, fields=fields, dedup=dedup)
    if saved != now:
        raise StateError(
            f"the saved window state was written with {saved}, not {now}: it would count "
            "differently. Go back to those settings, or start the state over (delete the "
            "changelog topic and PROCESSOR_STATE_DIR)"
        )
    return PartitionState(int(max_event), closed)


def _settings(length_ms: int, lateness_ms: int, *, fields: tuple[str, ...], dedup: bool) -> str:
    """The window settings as their variables spell them."""
    return (
        f"PROCESSOR_WINDOW={format_ms(length_ms)} "
        f"PROCESSOR_ALLOWED_LATENESS={format_ms(lateness_ms)} "
        f"PROCESSOR_AGGREGATE_FIELDS={','.join(fields)} PROCESSOR_DEDUP={str(dedup).lower()}"
    )


def latest(rows: Iterable[Row]) -> tuple[bytes | None, Keys, list[bytes]]:
    """The last value of each key: the partition's (None if absent), and the sensors' keys,
    sorted, with their values."""
    last = dict(rows)
    partition = last.pop(PARTITION_KEY, None)
    keys = np.array(list(last), dtype=np.bytes_)
    order = np.argsort(keys, kind="stable")
    values = list(last.values())
    return partition, keys[order], [values[i] for i in order.tolist()]
