"""The four QARTOD tests on columns: many readings of several fields at once, each reading
with what it needs of its sensor's past (the previous value and time, the values of the flat
line's window), and :class:`Battery`, the tests a spec's fields run, packed into one code.

Each follows ``ioos_qc.qartod``'s function of the same name on a whole series, edge cases
included (docs/qc.md), except where a stream cannot: the spike test's right neighbour does
not exist yet when a reading is flagged, so it is taken to be the left one. Values are
``(readings, fields)``; thresholds are arrays over those fields, an unset one infinite (no
value is beyond it), so one call covers every field that runs the test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from processor.qc.flags import TESTS, U8, WEIGHTS, Flag
from processor.qc.series import Series
from processor.qc.thresholds import FieldThresholds

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U16 = npt.NDArray[np.uint16]
Mask = npt.NDArray[np.bool_]
Window = Callable[[I64, I64], F64]
_TINY = np.finfo(np.float64).tiny
_US_PER_S = 1_000_000
_PASS, _NOT_EVALUATED = np.uint8(Flag.PASS), np.uint8(Flag.NOT_EVALUATED)
_SUSPECT, _FAIL, _MISSING = np.uint8(Flag.SUSPECT), np.uint8(Flag.FAIL), np.uint8(Flag.MISSING)


def _verdict(value: F64, suspect: Mask, fail: Mask) -> U8:
    """FAIL where ``fail``, else SUSPECT where ``suspect``, else PASS; MISSING if no value."""
    flags = np.where(fail, _FAIL, np.where(suspect, _SUSPECT, _PASS))
    out: U8 = np.where(np.isnan(value), _MISSING, flags)
    return out


def gross_range(value: F64, fail: tuple[F64, F64], suspect: tuple[F64, F64]) -> U8:
    """FAIL outside the sensor's span, SUSPECT outside the user's, MISSING if no value."""
    return _verdict(
        value,
        (value < suspect[0]) | (value > suspect[1]),
        (value < fail[0]) | (value > fail[1]),
    )


def spike(value: F64, left: F64, first: Mask, suspect: F64, fail: F64) -> U8:
    """``|value - (left + right) / 2|`` against the thresholds, with right := left (the
    streaming rule). The first reading of a sensor and one after a missing value are NOT
    EVALUATED, as are those whose reference overflows (``ioos_qc`` masks it); ``first`` is
    ``(readings, 1)``."""
    with np.errstate(over="ignore", invalid="ignore"):
        reference = (left + left) / 2
        diff = np.abs(value - reference)
    flags = _verdict(value, diff > suspect, diff > fail)
    out: U8 = np.where((first | ~np.isfinite(reference)) & ~np.isnan(value), _NOT_EVALUATED, flags)
    return out


def rate_of_change(value: F64, left: F64, dt_us: I64, suspect: F64, fail: F64) -> U8:
    """``|Δvalue / Δt|`` per second against the thresholds (``dt_us`` ``(readings, 1)``);
    the first reading passes (give it ``left`` NaN). As ``ioos_qc``: Δt is floored to whole
    seconds, and where the division is not defined (Δt 0, or the rate not finite) the rate
    is ``|Δvalue|``; a missing previous value passes."""
    dt = (dt_us // _US_PER_S).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        delta = value - left
        rate = delta / dt
        undefined = ~np.isfinite(rate) | (np.abs(delta) * _TINY >= np.abs(dt))
        rate = np.abs(np.where(undefined, delta, rate))
    return _verdict(value, rate > suspect, rate > fail)


def flat_line(
    value: F64, left: F64, seen: I64, window: Window, *, suspect: I64, fail: I64, tolerance: F64
) -> U8:
    """SUSPECT (FAIL) when a value and the ``suspect`` (``fail``) readings before it span
    less than ``tolerance``, missing values left out. ``left`` holds the previous values,
    ``window(readings, lags)`` the values ``lags`` readings before those readings; ``seen``
    counts the readings its sensor had before each: a window reaching before the first
    reading does not flag.

    A window spans at least its last two values: a reading that far from the one before it
    passes without its window being read (most readings, unless the sensor is stuck)."""
    flags = np.where(np.isnan(value), _MISSING, _PASS)
    with np.errstate(invalid="ignore", over="ignore"):
        moved = np.abs(value - left) >= tolerance
    rows = np.flatnonzero((~moved & ~np.isnan(value)).any(axis=1))
    if not rows.size:
        return flags
    counts = sorted({*suspect.tolist(), *fail.tolist()})
    lags = np.arange(counts[-1] + 1)
    span = np.empty((len(counts), rows.size, value.shape[1]))  # per count: the extent
    values = window(rows, lags[:, None])  # (lags, rows, fields)
    low, high = values[0].copy(), values[0].copy()
    with np.errstate(invalid="ignore", over="ignore"):
        for lag in lags[1:].tolist():  # ufunc.accumulate is 5-15 times slower
            np.fmin(low, values[lag], out=low)
            np.fmax(high, values[lag], out=high)
            if lag in counts:
                np.subtract(high, low, out=span[counts.index(lag)])
    columns = np.arange(value.shape[1])
    row_seen = seen[rows, None]
    span_suspect = span[np.searchsorted(counts, suspect), :, columns].T
    span_fail = span[np.searchsorted(counts, fail), :, columns].T
    flat_suspect = (span_suspect < tolerance) & (row_seen >= suspect)
    flat_fail = (span_fail < tolerance) & (row_seen >= fail)
    flags[rows] = _verdict(value[rows], flat_suspect, flat_fail)
    return flags


@dataclass(frozen=True, slots=True)
class _Test:
    """The fields that run one test (``None``: all of them) and its thresholds over them."""

    fields: I64 | None
    limits: tuple[F64, ...]


def _limit(values: Sequence[float | None], unset: float) -> F64:
    return np.array([unset if v is None else v for v in values], dtype=np.float64)


class Battery:
    """The tests of a spec's fields, run on a batch at once: :meth:`packed` gives every
    (reading, field)'s test flags as one code (:data:`processor.qc.flags.WEIGHTS`)."""

    def __init__(self, thresholds: Sequence[FieldThresholds]) -> None:
        self._n_fields = len(thresholds)
        tests: list[_Test | None] = []
        for t in range(len(TESTS)):
            runs = [i for i, th in enumerate(thresholds) if th.runs[t]]
            mine = [thresholds[i] for i in runs]
            fields = None if len(runs) == len(thresholds) else np.array(runs, dtype=np.int64)
            tests.append(_Test(fields, _limits(t, mine)) if mine else None)
        self._tests = tests

    def packed(self, values: F64, left: F64, dt_us: I64, seen: I64, series: Series) -> U16:
        """The test flags of readings ``values`` ``(n, fields)``: ``left`` their previous
        values, ``dt_us`` the time since them, ``seen`` how many readings their sensor had
        before them, ``series`` the batch's (the readings grouped by sensor, as ``values``)."""
        packed = np.zeros(values.shape, dtype=np.uint16)
        for t, test in enumerate(self._tests):
            if test is None:
                continue
            pick = slice(None) if test.fields is None else test.fields
            x, lim = values[:, pick], test.limits
            if t == 0:
                code = gross_range(x, (lim[0], lim[1]), (lim[2], lim[3]))
            elif t == 1:
                code = spike(x, left[:, pick], (seen == 0)[:, None], lim[0], lim[1])
            elif t == 2:
                code = rate_of_change(x, left[:, pick], dt_us[:, None], lim[0], lim[1])
            else:
                window = partial(series.earlier, fields=pick)
                code = flat_line(
                    x,
                    left[:, pick],
                    seen,
                    window,
                    suspect=lim[0].astype(np.int64),
                    fail=lim[1].astype(np.int64),
                    tolerance=lim[2],
                )
            packed[:, pick] += code * WEIGHTS[t]
        return packed


def _limits(test: int, ths: Sequence[FieldThresholds]) -> tuple[F64, ...]:
    """One test's thresholds over the fields that run it, in the argument order of its
    function (an unset one infinite)."""
    inf = np.inf
    if test == 0:
        fail = [th.gross_range_fail or (-inf, inf) for th in ths]
        suspect = [th.gross_range_suspect or (-inf, inf) for th in ths]
        return (
            _limit([f[0] for f in fail], -inf),
            _limit([f[1] for f in fail], inf),
            _limit([s[0] for s in suspect], -inf),
            _limit([s[1] for s in suspect], inf),
        )
    if test == 1:
        return _limit([th.spike_suspect for th in ths], inf), _limit(
            [th.spike_fail for th in ths], inf
        )
    if test == 2:
        return (
            _limit([th.rate_of_change_suspect for th in ths], inf),
            _limit([th.rate_of_change_fail for th in ths], inf),
        )
    return (
        _limit([th.flat_line_suspect for th in ths], 0),
        _limit([th.flat_line_fail for th in ths], 0),
        _limit([th.flat_line_tolerance for th in ths], 0),
    )
