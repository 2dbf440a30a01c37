"""The AQI of a concentration: EPA's Equation 1, linear between the breakpoints of the row
that holds the truncated concentration, rounded to the nearest whole number.

    I = (I_hi - I_lo) / (BP_hi - BP_lo) * (C - BP_lo) + I_lo

(40 CFR Part 58 App. G section 12; EPA-454/B-24-002 section IV.) The concentration is
truncated first (``tables.truncated_steps``), so 9.04 ug/m3 of PM2.5 is 9.0 and Good, 9.1 is
Moderate. With the concentration in whole steps the equation is evaluated in integers and
rounded half up exactly, so an AQI never depends on how a float happened to round.

Above the top row (PM2.5 over 325.4, PM10 over 604): App. G section 12(ii) lets the last two
breakpoints be used, and this module does, so the AQI keeps rising past 500 (PM2.5 500.0 ->
848) in the Hazardous category; AirNow calls such values "Beyond the AQI" and tells people to
follow the Hazardous advice.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from processor.airquality.tables import TABLES, Pollutant, truncated_steps

#: AQI and category index where the concentration is missing (NaN or infinite).
NO_VALUE = -1


class AqiArrays(NamedTuple):
    """Per sensor: the AQI (int64) and the index of its category in ``tables.CATEGORIES``
    (int8); both ``NO_VALUE`` (-1) where the concentration is missing."""

    aqi: NDArray[np.int64]
    category: NDArray[np.int8]


def aqi(concentration: NDArray[np.float64], pollutant: Pollutant) -> AqiArrays:
    """AQIs and categories of ``(n,)`` concentrations (ug/m3, any averaging EPA's table takes:
    a NowCast or a 24-hour mean); negative concentrations count as 0."""
    table = TABLES[pollutant]
    values = np.asarray(concentration, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"concentrations must have shape (n,), got {values.shape}")
    steps = truncated_steps(values, table)
    low = table.steps(table.low)
    row = np.searchsorted(low, steps, side="right") - 1
    bp_lo = low[row]
    span = table.steps(table.high)[row] - bp_lo
    i_lo = np.asarray(table.aqi_low, dtype=np.int64)[row]
    rise = np.asarray(table.aqi_high, dtype=np.int64)[row] - i_lo
    # i_lo + round_half_up(rise * (steps - bp_lo) / span), all in integers.
    index = i_lo + (2 * rise * (steps - bp_lo) + span) // (2 * span)
    missing = ~np.isfinite(values)
    return AqiArrays(
        aqi=np.where(missing, NO_VALUE, index),
        category=np.where(missing, NO_VALUE, row).astype(np.int8),
    )
