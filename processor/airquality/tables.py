"""The AQI breakpoint tables in force for PM2.5 and PM10, the six category names, and the
truncation EPA applies to a concentration before it reads the table.

Source: 40 CFR Part 58, Appendix G, Table 2, as revised with the PM NAAQS reconsideration
(89 FR 16202, 6 March 2024; in force from 6 May 2024), reprinted as Table 6 of EPA's
*Technical Assistance Document for the Reporting of Daily Air Quality - the Air Quality Index
(AQI)*, EPA-454/B-24-002, May 2024. The 2024 revision lowered PM2.5's Good/Moderate
breakpoint to 9.0 ug/m3, moved the Unhealthy and Very Unhealthy breakpoints down, and merged
the two Hazardous rows (301-400, 401-500) into one 301-500 row for every pollutant; PM10's
other rows are unchanged since 1999.

Truncation (same document, section IV, and AirNow-Tech's "The AQI Equation (2024)"): PM2.5 to
0.1 ug/m3, PM10 to 1 ug/m3, before the table is read; the AQI is then rounded to the nearest
whole number. Concentrations are carried here as whole *steps* of that resolution (tenths of a
ug/m3 for PM2.5, ug/m3 for PM10), so looking a value up and interpolating are exact integer
arithmetic, not float comparisons at 9.0 vs 9.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

Pollutant = Literal["pm25", "pm10"]

#: The tables' version: which rule and document they were copied from.
TABLES_VERSION: Final = "EPA AQI breakpoints of 2024-05-06 (89 FR 16202; EPA-454/B-24-002)"

#: EPA's category names, spelled as 40 CFR 58 App. G and the TAD print them; a category index
#: is a position in this tuple (0 Good ... 5 Hazardous).
CATEGORIES: Final = (
    "Good",
    "Moderate",
    "Unhealthy for Sensitive Groups",
    "Unhealthy",
    "Very Unhealthy",
    "Hazardous",
)

#: A float just under a step boundary from summing (12 x 9.1 / 12 = 9.0999...98) is read as
#: the boundary: the scaled concentration is rounded to this many decimals before the floor.
#: It moves a value by at most 5e-7 of a step, far below any instrument's resolution.
_STEP_DECIMALS: Final = 6

#: Steps above this are scored as this (1e12 ug/m3 for PM2.5): keeps the integer
#: interpolation of an absurd value inside int64; no instrument reads anywhere near it.
_MAX_STEPS: Final = 10**13


@dataclass(frozen=True, slots=True)
class BreakpointTable:
    """One pollutant's rows, low to high: row ``i`` maps ``[low[i], high[i]]`` (ug/m3, as EPA
    prints them) onto ``[aqi_low[i], aqi_high[i]]`` and is category ``i``."""

    pollutant: Pollutant
    #: Decimals EPA truncates the concentration to (1 for PM2.5, 0 for PM10).
    decimals: int
    low: tuple[float, ...]
    high: tuple[float, ...]
    aqi_low: tuple[int, ...]
    aqi_high: tuple[int, ...]

    @property
    def scale(self) -> int:
        """Steps per ug/m3."""
        return int(10**self.decimals)

    def steps(self, bounds: tuple[float, ...]) -> NDArray[np.int64]:
        """The table's bounds in whole steps (9.1 -> 91 for PM2.5)."""
        scaled: NDArray[np.float64] = np.rint(np.asarray(bounds, dtype=np.float64) * self.scale)
        return scaled.astype(np.int64)


PM25: Final = BreakpointTable(
    pollutant="pm25",
    decimals=1,
    low=(0.0, 9.1, 35.5, 55.5, 125.5, 225.5),
    high=(9.0, 35.4, 55.4, 125.4, 225.4, 325.4),
    aqi_low=(0, 51, 101, 151, 201, 301),
    aqi_high=(50, 100, 150, 200, 300, 500),
)

PM10: Final = BreakpointTable(
    pollutant="pm10",
    decimals=0,
    low=(0, 55, 155, 255, 355, 425),
    high=(54, 154, 254, 354, 424, 604),
    aqi_low=(0, 51, 101, 151, 201, 301),
    aqi_high=(50, 100, 150, 200, 300, 500),
)

TABLES: Final[dict[Pollutant, BreakpointTable]] = {"pm25": PM25, "pm10": PM10}


def truncated_steps(
    concentration: NDArray[np.float64], table: BreakpointTable
) -> NDArray[np.int64]:
    """Each finite concentration truncated to the table's resolution, in whole steps (9.04 ->
    90 for PM2.5); negatives count as 0 (the tables start at 0). Callers mask non-finite
    values: their steps here are meaningless."""
    scaled = np.where(np.isfinite(concentration), concentration, 0.0) * table.scale
    steps: NDArray[np.float64] = np.floor(
        np.round(np.clip(scaled, 0.0, _MAX_STEPS), _STEP_DECIMALS)
    )
    return steps.astype(np.int64)
