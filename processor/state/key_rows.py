"""A sensor's dedup keys as its changelog row carries them: 8 bytes a key instead of 16.

The keys (event time in µs, input offset of the reading counted) are most of a sensor's row,
and every snapshot rewrites the row of every sensor changed since the last, so their size is
most of the changelog's bytes. In the row, a sensor's keys come in event order (its windows
in start order, each window's keys by event), and two keys in a row differ little: the event
times by the sensor's reporting interval, the offsets by the records of the other sensors of
the partition in between. So a sensor's first key is written whole (two int64) and each next
one as the difference from the key before it (a uint32 of µs, up to 71 minutes, and an int32
of offsets). A sensor with a gap too wide for that (a sensor silent for over an hour within
the windows kept) has its keys written whole, 16 bytes each, and its header says so.

Packing and unpacking are whole-column numpy operations across the snapshot's sensors; the
Python work is a slice of bytes a sensor.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from processor.state.tables import I64, runs

WHOLE = np.dtype([("event_us", "<i8"), ("offset", "<i8")])
STEP = np.dtype([("event_us", "<u4"), ("offset", "<i4")])
_I32 = np.iinfo(np.int32)
_U32_END = 1 << 32
Mask = npt.NDArray[np.bool_]


def region_bytes(n_keys: I64, compact: Mask) -> I64:
    """The bytes of each sensor's keys in its row, given how many and how they are written."""
    steps = np.maximum(n_keys - 1, 0) * STEP.itemsize + (n_keys > 0) * WHOLE.itemsize
    sizes: I64 = np.where(compact, steps, n_keys * WHOLE.itemsize)
    return sizes


def pack_keys(n_keys: I64, event_us: I64, offset: I64) -> tuple[Mask, list[bytes], list[bytes]]:
    """Each sensor's keys as its row carries them: whether they are written as steps
    (``compact``), and the bytes of its keys written whole, then of its steps (its keys'
    region is the one followed by the other); the keys are grouped by sensor (``n_keys``
    each), in event order."""
    first = np.cumsum(n_keys) - n_keys  # each sensor's first key
    starts = np.zeros(event_us.size, dtype=bool)
    starts[first[n_keys > 0]] = True
    event_step = np.diff(event_us, prepend=0)
    offset_step = np.diff(offset, prepend=0)
    fits = (
        starts
        | (event_step >= 0) & (event_step < _U32_END)
        & (offset_step >= _I32.min) & (offset_step <= _I32.max)
    )  # fmt: skip
    sensor = np.repeat(np.arange(n_keys.size), n_keys)
    compact = np.bincount(sensor[~fits], minlength=n_keys.size) == 0
    by_step = compact[sensor]
    whole_rows = starts | ~by_step  # a compact sensor's first key, a wide sensor's every key
    whole = np.empty(int(whole_rows.sum()), dtype=WHOLE)
    whole["event_us"], whole["offset"] = event_us[whole_rows], offset[whole_rows]
    steps = np.empty(event_us.size - whole.size, dtype=STEP)
    steps["event_us"], steps["offset"] = event_step[~whole_rows], offset_step[~whole_rows]
    n_whole = np.where(compact, n_keys > 0, n_keys)
    return (
        compact,
        cut(whole.tobytes(), n_whole * WHOLE.itemsize),
        cut(steps.tobytes(), (n_keys - n_whole) * STEP.itemsize),
    )


def unpack_keys(regions: list[bytes], n_keys: I64, compact: Mask) -> tuple[I64, I64]:
    """The event times and offsets of the keys in ``regions`` (as :func:`pack_keys` wrote
    them, sizes checked by the caller), grouped by sensor."""
    n_whole = np.where(compact, n_keys > 0, n_keys)
    split = (n_whole * WHOLE.itemsize).tolist()
    whole = np.frombuffer(
        b"".join([region[:at] for region, at in zip(regions, split, strict=True)]), WHOLE
    )
    steps = np.frombuffer(
        b"".join([region[at:] for region, at in zip(regions, split, strict=True)]), STEP
    )
    # Where each sensor's written-whole keys and steps go among its keys: the whole ones
    # first (a compact sensor has one), the steps after them.
    first = np.cumsum(n_keys) - n_keys
    whole_at = runs(first, n_whole)
    step_at = runs(first + n_whole, n_keys - n_whole)
    total = int(n_keys.sum())
    event_us, offset = np.zeros(total, dtype=np.int64), np.zeros(total, dtype=np.int64)
    event_us[step_at], offset[step_at] = steps["event_us"], steps["offset"]
    # A key is the whole key at or before it plus the steps after that one, up to itself.
    event_sum, offset_sum = np.cumsum(event_us), np.cumsum(offset)
    is_whole = np.zeros(total, dtype=bool)
    is_whole[whole_at] = True
    base = np.maximum.accumulate(np.where(is_whole, np.arange(total), 0))
    event_us[whole_at], offset[whole_at] = whole["event_us"], whole["offset"]
    event_us = event_us[base] + event_sum - event_sum[base]
    offset = offset[base] + offset_sum - offset_sum[base]
    return event_us, offset


def cut(blob: bytes, sizes: I64) -> list[bytes]:
    """``blob`` cut into consecutive pieces of ``sizes`` bytes (a row's parts, for many
    sensors at once)."""
    end = np.cumsum(sizes)
    return [blob[lo:hi] for lo, hi in zip((end - sizes).tolist(), end.tolist(), strict=True)]
