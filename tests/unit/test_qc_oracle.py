"""Streaming QC flags against ``ioos_qc`` on whole series: records of several sensors in
batches of any size, restarted from the changelog rows between any two batches, flag each
reading as ``ioos_qc.qartod`` flags it on its sensor's whole series with the same thresholds
(the spike test under the streaming rule: right neighbour := left neighbour)."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from ioos_qc import qartod

from processor.qc import TESTS, FieldThresholds, PartitionQc, QcSpec
from processor.state.aggregates import sensor_keys

T0 = 1_700_000_000_000_000  # µs
Record = tuple[int, str, int, tuple[float, ...]]  # offset, sensor, event µs, values
VALUES = st.one_of(
    st.sampled_from([float("nan"), 0.0, 1.0, 1.25, 50.0, 99.0]),
    st.floats(-20, 130, allow_nan=False),
)
# Steps between a sensor's readings: equal, sub-second, backwards, whole and odd seconds.
STEPS = st.one_of(
    st.sampled_from([0, 1, 999_999, 1_000_000, -1, -500_000, 60_000_000]),
    st.integers(-3_000_000, 10_000_000),
)


@st.composite
def thresholds(draw: st.DrawFn) -> FieldThresholds:
    fail = draw(st.sampled_from([None, (0.0, 100.0), (-10.0, 50.0)]))
    suspect = (fail[0] + 5.0, fail[1] - 5.0) if fail and draw(st.booleans()) else None
    spike = draw(st.sampled_from([(None, None), (5.0, None), (None, 20.0), (5.0, 20.0)]))
    rate = draw(st.sampled_from([(None, None), (0.5, None), (1.0, 3.0)]))
    flat = draw(st.sampled_from([(None, None, None), (2, 4, 0.5), (3, 1, 0.3), (1, 6, 2.0)]))
    return FieldThresholds(
        gross_range_fail=fail,
        gross_range_suspect=suspect,
        spike_suspect=spike[0],
        spike_fail=spike[1],
        rate_of_change_suspect=rate[0],
        rate_of_change_fail=rate[1],
        flat_line_suspect=flat[0],
        flat_line_fail=flat[1],
        flat_line_tolerance=flat[2],
    )


specs = st.lists(thresholds().filter(lambda th: any(th.runs)), min_size=1, max_size=3).map(
    lambda ths: QcSpec(tuple(f"f{i}" for i in range(len(ths))), tuple(ths))
)


@st.composite
def records(draw: st.DrawFn, n_fields: int) -> list[Record]:
    """Several sensors' series (3+ readings each: ``ioos_qc``'s flat line passes everything
    in a shorter series, even a missing value), interleaved in a random order."""
    series = draw(st.lists(st.integers(3, 25), min_size=1, max_size=4))
    order = draw(st.permutations([s for s, n in enumerate(series) for _ in range(n)]))
    times = [T0] * len(series)
    out: list[Record] = []
    for offset, s in enumerate(order):
        times[s] += draw(STEPS)
        values = tuple(draw(VALUES) for _ in range(n_fields))
        out.append((offset * 2 + 3, f"s{s}", times[s], values))  # offsets with gaps
    return out


def columns(batch: list[Record]) -> tuple[Any, ...]:
    return (
        np.array([r[0] for r in batch], dtype=np.int64),
        sensor_keys([r[1] for r in batch]),
        np.array([r[2] for r in batch], dtype=np.int64),
        np.array([r[3] for r in batch], dtype=np.float64).reshape(len(batch), -1),
    )


def oracle_flags(th: FieldThresholds, x: npt.NDArray[Any], t_us: npt.NDArray[Any]) -> Any:
    """``ioos_qc``'s flag and failed-tests bitmask of each reading of one series."""
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if th.gross_range_fail is not None:
            results.append(
                (0, qartod.gross_range_test(x, th.gross_range_fail, th.gross_range_suspect))
            )
        if th.runs[1]:
            first = qartod.spike_test(x[:1], th.spike_suspect, th.spike_fail)[0]
            mirrored = [
                qartod.spike_test([x[i - 1], x[i], x[i - 1]], th.spike_suspect, th.spike_fail)[1]
                for i in range(1, x.size)
            ]
            results.append((1, np.array([first, *mirrored])))
        if th.rate_of_change_suspect is not None:
            times = t_us.astype("datetime64[us]")
            rate = qartod.rate_of_change_test(
                x, times, th.rate_of_change_suspect, th.rate_of_change_fail
            )
            results.append((2, rate))
        if th.flat_line_tolerance is not None:
            # Counts of readings: one reading a second makes ioos_qc's seconds counts.
            flat = qartod.flat_line_test(
                x, np.arange(x.size), th.flat_line_suspect, th.flat_line_fail,
                th.flat_line_tolerance,
            )  # fmt: skip
            results.append((3, flat))
    flag = qartod.qartod_compare([np.asarray(r) for _, r in results])
    failed = sum(((np.asarray(r) == 3) | (np.asarray(r) == 4)) << bit for bit, r in results)
    return np.asarray(flag), np.asarray(failed, dtype=np.uint8)


def expected(spec: QcSpec, records: list[Record]) -> tuple[Any, Any]:
    n = len(records)
    flag = np.zeros((n, len(spec.fields)), dtype=np.uint8)
    failed = np.zeros((n, len(spec.fields)), dtype=np.uint8)
    for sensor in {r[1] for r in records}:
        mine = [i for i, r in enumerate(records) if r[1] == sensor]
        t = np.array([records[i][2] for i in mine], dtype=np.int64)
        for f, th in enumerate(spec.thresholds):
            x = np.array([records[i][3][f] for i in mine])
            flag[mine, f], failed[mine, f] = oracle_flags(th, x, t)
    return flag, failed


def batches(records: list[Record], cuts: list[int]) -> list[list[Record]]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(records)}), len(records)]
    return [records[lo:hi] for lo, hi in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_streaming_flags_are_ioos_qc_flags_of_whole_series_whatever_the_batches(
    data: st.DataObject,
) -> None:
    spec = data.draw(specs)
    readings = data.draw(records(len(spec.fields)))
    cuts = data.draw(st.lists(st.integers(0, len(readings)), max_size=8))
    restarts = data.draw(st.lists(st.booleans(), min_size=10, max_size=10))
    state, rows = PartitionQc(spec), []
    flags, failed = [], []
    for batch, restart in zip(batches(readings, cuts), itertools.cycle(restarts), strict=False):
        got = state.apply(*columns(batch))
        flags.append(got.flag)
        failed.append(got.failed)
        rows += state.take_changes().pairs()
        if restart:
            state = PartitionQc.from_rows(spec, rows)
    want_flag, want_failed = expected(spec, readings)
    assert np.array_equal(np.concatenate(flags), want_flag)
    assert np.array_equal(np.concatenate(failed), want_failed)


def test_the_failed_mask_names_tests_in_order() -> None:
    assert TESTS == ("gross_range", "spike", "rate_of_change", "flat_line")
