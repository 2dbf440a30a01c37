"""The EPA NowCast for PM2.5 and PM10: a weighted mean of the 12 latest hourly means that
leans on the newest hours when the air is changing (a smoke plume) and tends to the 12-hour
mean when it is steady.

Method (EPA, "PM NowCast" fact sheet and "The NowCast Method" as AirNow-Tech publishes it in
"The NowCast for PM2.5 and PM10"; EPA-454/B-24-002, "How the NowCast is calculated"):

1. c1..c12 are the hourly means, c1 the newest. A NowCast exists only if at least two of c1,
   c2, c3 are valid; missing hours elsewhere are left out of both sums.
2. w* = min / max over the valid hours; w = max(w*, 0.5) for PM.
3. NowCast = sum(w^(i-1) c_i) / sum(w^(i-1)) over the valid hours.
4. The hourly means go in raw (not truncated or rounded); the result is truncated to 0.1
   ug/m3 for PM2.5 and 1 ug/m3 for PM10 (AirNow-Tech, "Completeness Criteria for the NowCast
   and Clarification on Truncation vs. Rounding").

Two rules EPA's text leaves open, decided here: a negative hourly mean (instrument noise in
clean air) counts as 0, since min/max means nothing across zero and the AQI tables start at 0;
and when every valid hour is 0, w is 1 (the NowCast is 0 whatever w is, and 0/0 is avoided).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from processor.airquality.tables import TABLES, Pollutant, truncated_steps

#: Hourly means per history, newest first.
HOURS: Final = 12
#: PM's floor on the weight factor: at 0.5 the NowCast approximates a 3-hour mean.
_MIN_WEIGHT: Final = 0.5
#: Of the newest three hours, how many must be valid.
_RECENT: Final = 3
_RECENT_NEEDED: Final = 2
_EXPONENTS: Final = np.arange(HOURS, dtype=np.float64)


def nowcast(hourly: NDArray[np.float64], pollutant: Pollutant) -> NDArray[np.float64]:
    """NowCasts of ``n`` sensors from their ``(n, 12)`` hourly means (ug/m3, newest first,
    NaN for a missing hour), truncated as EPA reports them: ``(n,)`` float64, NaN where fewer
    than two of the newest three hours are valid."""
    hours = np.asarray(hourly, dtype=np.float64)
    if hours.ndim != 2 or hours.shape[1] != HOURS:
        raise ValueError(f"hourly means must have shape (n, {HOURS}), got {hours.shape}")
    valid = ~np.isnan(hours)
    values = np.where(valid, np.maximum(hours, 0.0), 0.0)
    enough = valid[:, :_RECENT].sum(axis=1) >= _RECENT_NEEDED
    low = np.where(valid, values, np.inf).min(axis=1)
    high = np.where(valid, values, 0.0).max(axis=1)
    ratio = np.divide(low, high, out=np.ones_like(high), where=high > 0.0)
    weight = np.maximum(ratio, _MIN_WEIGHT)
    weights = np.where(valid, weight[:, None] ** _EXPONENTS, 0.0)
    raw = np.divide(
        (weights * values).sum(axis=1),
        weights.sum(axis=1),
        out=np.full(len(hours), np.nan),
        where=enough,
    )
    table = TABLES[pollutant]
    return np.where(enough, truncated_steps(raw, table) / table.scale, np.nan)
