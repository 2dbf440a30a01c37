"""The batch's series of the QC state: any reading's earlier values and each sensor's latest
ones are those of its sequence (kept values, then its new ones), however they were laid out."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from processor.qc.series import Series


@given(
    st.integers(1, 6),
    st.lists(st.integers(1, 9), min_size=1, max_size=5),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
)
def test_earlier_and_latest_values_are_those_of_each_sensors_sequence(
    depth: int, counts: list[int], n_fields: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    kept = rng.normal(size=(len(counts), depth, n_fields))
    new = rng.normal(size=(sum(counts), n_fields))
    series = Series(kept, new, np.array(counts, dtype=np.int64))
    starts = np.cumsum([0, *counts])
    sequences = [
        np.concatenate((kept[g], new[starts[g] : starts[g + 1]])) for g in range(len(counts))
    ]
    readings = np.arange(new.shape[0])
    lags = np.arange(depth + 1)[:, None]
    earlier = series.earlier(readings, lags)
    for g, sequence in enumerate(sequences):
        for r in range(counts[g]):
            j = starts[g] + r
            assert series.rank[j] == r
            for lag in range(depth + 1):
                assert np.array_equal(earlier[lag, j], sequence[depth + r - lag])
            assert np.array_equal(series.previous()[j], sequence[depth + r - 1])
        assert np.array_equal(series.latest()[g], sequence[-depth:])
    assert np.array_equal(series.earlier(readings, lags, fields=[0])[..., 0], earlier[..., 0])
