"""The four QARTOD tests on columns: one field, many readings, each with what it needs of
its sensor's past (the previous value and time, the values of the flat line's window).

Each follows ``ioos_qc.qartod``'s function of the same name on a whole series, edge cases
included (docs/qc.md), except where a stream cannot: the spike test's right neighbour does
not exist yet when a reading is flagged, so it is taken to be the left one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from processor.qc.flags import U8, Flag

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
_TINY = np.finfo(np.float64).tiny
_US_PER_S = 1_000_000


def gross_range(value: F64, fail: tuple[float, float], suspect: tuple[float, float] | None) -> U8:
    """FAIL outside the sensor's span, SUSPECT outside the user's, MISSING if no value."""
    flags = np.full(value.size, Flag.PASS, dtype=np.uint8)
    if suspect is not None:
        flags[(value < suspect[0]) | (value > suspect[1])] = Flag.SUSPECT
    flags[(value < fail[0]) | (value > fail[1])] = Flag.FAIL
    flags[np.isnan(value)] = Flag.MISSING
    return flags


def spike(value: F64, left: F64, first: Mask, suspect: float | None, fail: float | None) -> U8:
    """``|value - (left + right) / 2|`` against the thresholds, with right := left (the
    streaming rule). The first reading of a sensor and one after a missing value are NOT
    EVALUATED, as are those whose reference overflows (``ioos_qc`` masks it)."""
    with np.errstate(over="ignore", invalid="ignore"):
        reference = (left + left) / 2
        diff = np.abs(value - reference)
    flags = np.full(value.size, Flag.PASS, dtype=np.uint8)
    if suspect is not None:
        flags[diff > suspect] = Flag.SUSPECT
    if fail is not None:
        flags[diff > fail] = Flag.FAIL
    flags[first | ~np.isfinite(reference)] = Flag.NOT_EVALUATED
    flags[np.isnan(value)] = Flag.MISSING
    return flags


def rate_of_change(value: F64, left: F64, dt_us: I64, suspect: float, fail: float | None) -> U8:
    """``|Δvalue / Δt|`` per second against the thresholds; the first reading passes (give
    it ``left`` NaN). As ``ioos_qc``: Δt is floored to whole seconds, and where the division
    is not defined (Δt 0, or the rate not finite) the rate is ``|Δvalue|``; a missing
    previous value passes."""
    dt = (dt_us // _US_PER_S).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        delta = value - left
        rate = delta / dt
        undefined = ~np.isfinite(rate) | (np.abs(delta) * _TINY >= np.abs(dt))
        rate = np.abs(np.where(undefined, delta, rate))
    flags = np.full(value.size, Flag.PASS, dtype=np.uint8)
    flags[rate > suspect] = Flag.SUSPECT
    if fail is not None:
        flags[rate > fail] = Flag.FAIL
    flags[np.isnan(value)] = Flag.MISSING
    return flags


def flat_line(series: F64, at: I64, seen: I64, *, suspect: int, fail: int, tolerance: float) -> U8:
    """SUSPECT (FAIL) when a value and the ``suspect`` (``fail``) readings before it span
    less than ``tolerance``, missing values left out. The values are ``series[at]``, the
    ``k``-th reading before each ``series[at - k]``; ``seen`` counts the readings its sensor
    had before it: a window reaching before the first reading does not flag."""
    value = series[at]
    flags = np.full(at.size, Flag.PASS, dtype=np.uint8)
    low, high, k = value, value, 0
    with np.errstate(invalid="ignore", over="ignore"):
        for count, flag in sorted(((suspect, Flag.SUSPECT), (fail, Flag.FAIL))):
            while k < count:  # the shorter window's extremes start the longer's
                k += 1
                low, high = np.fmin(low, series[at - k]), np.fmax(high, series[at - k])
            flat = (high - low < tolerance) & (seen >= count)
            flags[flat & (flags != Flag.FAIL)] = flag
    flags[np.isnan(value)] = Flag.MISSING
    return flags
