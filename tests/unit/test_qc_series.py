"""The batch's series of the QC state: any reading's earlier values and each sensor's latest
ones are those of its sequence (its ring's values oldest first, then its new ones), however
they were laid out, and storing a batch touches only its sensors' rings."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from processor.qc.series import Series, unrolled


@given(
    st.integers(1, 6),
    st.lists(st.integers(1, 9), min_size=1, max_size=5),
    st.integers(0, 3),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
)
def test_earlier_and_latest_values_are_those_of_each_sensors_sequence(
    depth: int, counts: list[int], others: int, n_fields: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    sensors = len(counts) + others
    history = rng.normal(size=(sensors, depth, n_fields))
    head = rng.integers(0, depth, sensors)
    who = np.sort(rng.permutation(sensors)[: len(counts)])
    kept = unrolled(history, head)
    before_history, before_head = history.copy(), head.copy()
    new = rng.normal(size=(sum(counts), n_fields))
    series = Series(history, head, who, new, np.array(counts, dtype=np.int64))
    starts = np.cumsum([0, *counts])
    sequences = [
        np.concatenate((kept[s], new[starts[g] : starts[g + 1]])) for g, s in enumerate(who)
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
    assert np.array_equal(series.earlier(readings, lags, fields=[0])[..., 0], earlier[..., 0])
    series.store()
    after = unrolled(history, head)
    for g, s in enumerate(who):
        assert np.array_equal(after[s], sequences[g][-depth:])
    untouched = np.setdiff1d(np.arange(sensors), who)
    assert np.array_equal(history[untouched], before_history[untouched])
    assert np.array_equal(head[untouched], before_head[untouched])


def test_a_ring_unrolls_from_its_head() -> None:
    history = np.arange(6, dtype=np.float64).reshape(2, 3, 1)
    assert unrolled(history, np.array([0, 2]))[..., 0].tolist() == [[0, 1, 2], [5, 3, 4]]
