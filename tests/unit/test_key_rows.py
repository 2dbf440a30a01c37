"""Dedup keys as a sensor's changelog row carries them (``processor.state.key_rows``): a
first key whole and steps after it, or every key whole when a step does not fit; what is
unpacked is what was packed, to the bit, whatever the gaps."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from processor.state.key_rows import STEP, WHOLE, pack_keys, region_bytes, unpack_keys

T0_US = 1_796_083_200_000_000
I64 = st.integers(-(2**58), 2**58)  # eight of them stay within int64
# Steps that fit and steps just past what fits: event steps of 0..2^32, offset steps
# around the int32 bounds, and anything at all.
event_steps = st.one_of(st.integers(0, 120_000_000), st.sampled_from([2**32 - 1, 2**32]), I64)
offset_steps = st.one_of(st.integers(-1_000, 1_000), st.sampled_from([-(2**31) - 1, 2**31]), I64)
sensor_keys = st.lists(st.lists(st.tuples(event_steps, offset_steps), max_size=8), max_size=6)


def _columns(sensors: list[list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys from steps, each sensor's from its own start."""
    n_keys = np.array([len(keys) for keys in sensors], dtype=np.int64)
    event, offset = [], []
    for keys in sensors:
        at, where = T0_US, 0
        for event_step, offset_step in keys:
            at, where = at + event_step, where + offset_step
            event.append(at)
            offset.append(where)
    return n_keys, np.array(event, dtype=np.int64), np.array(offset, dtype=np.int64)


@given(sensor_keys)
def test_keys_unpack_as_they_were_packed(sensors: list[list[tuple[int, int]]]) -> None:
    n_keys, event, offset = _columns(sensors)
    compact, whole, steps = pack_keys(n_keys, event, offset)
    regions = [head + rest for head, rest in zip(whole, steps, strict=True)]
    assert [len(region) for region in regions] == region_bytes(n_keys, compact).tolist()
    got_event, got_offset = unpack_keys(regions, n_keys, compact)
    assert got_event.tolist() == event.tolist()
    assert got_offset.tolist() == offset.tolist()


def test_close_keys_take_8_bytes_and_a_gap_too_wide_writes_that_sensor_whole() -> None:
    hour_and_more = 2**32  # µs: 71.6 minutes, one past what a step holds
    n_keys = np.array([3, 2, 0], dtype=np.int64)
    event = np.array([T0_US, T0_US + 60_000_000, T0_US + 120_000_000, T0_US, T0_US + hour_and_more])
    offset = np.array([7, 3, 900, 8, 9])  # steps may go back: records out of event order
    compact, whole, steps = pack_keys(n_keys, event, offset)
    regions = [head + rest for head, rest in zip(whole, steps, strict=True)]
    assert compact.tolist() == [True, False, True]
    assert [len(r) for r in regions] == [WHOLE.itemsize + 2 * STEP.itemsize, 2 * WHOLE.itemsize, 0]
    assert np.frombuffer(regions[0][WHOLE.itemsize :], STEP).tolist() == [
        (60_000_000, -4),
        (60_000_000, 897),
    ]
