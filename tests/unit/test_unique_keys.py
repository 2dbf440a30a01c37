"""A batch's distinct sensor keys through their hashes: for any keys (NUL bytes inside or at
the end, high bytes, any width, hashes that collide) the same as ``np.unique``'s."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.state import tables
from processor.state.tables import unique_keys

#: Batches drawn from a pool of keys, so that keys repeat.
_KEYS = st.lists(st.binary(max_size=19), min_size=1, max_size=30).flatmap(
    lambda pool: st.lists(st.sampled_from(pool), max_size=80)
)


def _assert_like_np_unique(keys: list[bytes]) -> None:
    array = np.array(keys, dtype=np.bytes_)
    expected, expected_inverse = np.unique(array, return_inverse=True)
    unique, inverse = unique_keys(array)
    assert unique.dtype == expected.dtype
    assert unique.tolist() == expected.tolist()
    assert inverse.dtype == np.int64
    assert inverse.tolist() == expected_inverse.tolist()


@given(_KEYS)
def test_equals_np_unique_for_any_keys(keys: list[bytes]) -> None:
    _assert_like_np_unique(keys)


def test_keys_that_differ_only_by_nul_bytes_or_high_bytes() -> None:
    _assert_like_np_unique([b"a\x00b", b"a", b"a\x00", b"\xff", b"\x80a", b"a\x00b", b""])


def test_colliding_hashes_fall_back_to_sorting_the_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tables, "_MIX", np.uint64(0))  # every key hashes to 0
    _assert_like_np_unique([b"s2\x01", b"s10\x01", b"s2\x01", b"\x00x", b"s1\x01"])
