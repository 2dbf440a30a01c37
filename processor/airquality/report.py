"""The NowCast as an hourly aggregate carries it: per sensor, one small dict per pollutant
whose NowCast exists, ``{"pm25": {"value": 17.4, "aqi": 66, "category": "Moderate"}}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

import numpy as np
from numpy.typing import NDArray

from processor.airquality.aqi import aqi
from processor.airquality.nowcast import nowcast
from processor.airquality.tables import CATEGORIES, Pollutant


class NowcastEntry(TypedDict):
    """One pollutant's NowCast for one sensor."""

    #: ug/m3, truncated as EPA reports it (0.1 for PM2.5, 1 for PM10).
    value: float
    aqi: int
    #: One of ``tables.CATEGORIES``.
    category: str


def nowcast_entries(
    histories: Mapping[Pollutant, NDArray[np.float64]],
) -> list[dict[Pollutant, NowcastEntry]]:
    """For ``n`` sensors, their entries from each pollutant's ``(n, 12)`` hourly means (newest
    first, NaN missing): list item ``i`` is sensor ``i``'s, keyed by the pollutants whose
    NowCast exists for it (an empty dict when none does). The arithmetic is vectorized per
    pollutant; only building the dicts walks the sensors."""
    sizes = {len(hours) for hours in histories.values()}
    if len(sizes) > 1:
        raise ValueError(f"every pollutant needs the same sensors, got row counts {sizes}")
    entries: list[dict[Pollutant, NowcastEntry]] = [{} for _ in range(sizes.pop() if sizes else 0)]
    for pollutant, hours in histories.items():
        values = nowcast(hours, pollutant)
        scored = aqi(values, pollutant)
        known = np.flatnonzero(~np.isnan(values))
        # Python floats and ints from tolist(), not numpy scalars one by one: 4.1-5.9 -> 2.4-4.0
        # us a sensor for both pollutants at 1,000 sensors (python -m bench.airquality).
        rows = zip(
            known.tolist(),
            values[known].tolist(),
            scored.aqi[known].tolist(),
            scored.category[known].tolist(),
            strict=True,
        )
        for i, value, index, category in rows:
            entries[i][pollutant] = NowcastEntry(
                value=value, aqi=index, category=CATEGORIES[category]
            )
    return entries
