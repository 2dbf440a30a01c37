"""Each sensor's recent hourly means, and the NowCast of the hour that just closed.

With hourly windows of a NowCast pollutant (``pm25``, ``pm10``), closing a sensor's window
shifts its ring of means (:attr:`~processor.state.tables.Sensors.hourly`) by the hours since
its last closed one and puts the new hour's mean in front; the ring then holds the twelve
hours the EPA NowCast weighs (NaN for an hour with no counted value), and the aggregate of
that window carries the NowCast and AQI of each pollutant that has one
(:mod:`processor.airquality`).

A sensor's row is not rewritten when its window closes (the partition's watermark closes
it), so the ring persisted with the row is as of the row's last write, and the windows that
closed since are still in the row, open. A restore folds them in, in start order, as the live
state did when they closed: the ring is then the same, to the bit, and so is any NowCast
published again after a crash.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from processor.airquality import HOURS, Pollutant, nowcast_entries
from processor.state.tables import F64, I64, NO_HOUR, RECENT_HOURS, OpenWindows, Sensors

HOUR_MS = 3_600_000
HOUR_US = HOUR_MS * 1000
NOWCAST_POLLUTANTS = ("pm25", "pm10")

if RECENT_HOURS != HOURS:  # the ring is what the NowCast weighs
    raise RuntimeError(f"the state keeps {RECENT_HOURS} hours, the NowCast weighs {HOURS}")


def pollutant_columns(length_ms: int, fields: tuple[str, ...]) -> tuple[int, ...]:
    """The columns of ``fields`` that get a NowCast: the pollutants, with hourly windows."""
    if length_ms != HOUR_MS:
        return ()
    return tuple(i for i, name in enumerate(fields) if name in NOWCAST_POLLUTANTS)


def fold(sensors: Sensors, windows: OpenWindows, columns: tuple[int, ...]) -> None:
    """Put the means of ``windows`` (closing now, all of one start, one per sensor) in front
    of their sensors' rings, in place."""
    if not columns or not windows.sensor.size:
        return
    start = int(windows.start[0])
    rows = windows.sensor
    hour = sensors.hour[rows]
    none = hour == NO_HOUR
    hours_since = (start - np.where(none, start, hour)) // HOUR_US
    shift = np.where(none, RECENT_HOURS, np.minimum(hours_since, RECENT_HOURS))
    source = np.arange(RECENT_HOURS)[None, :] - shift[:, None]  # (sensors, hours)
    ring = np.take_along_axis(
        sensors.hourly[rows], np.clip(source, 0, RECENT_HOURS - 1)[:, None, :], axis=2
    )
    ring[np.broadcast_to((source < 0)[:, None, :], ring.shape)] = np.nan
    counted = windows.field_count[:, columns]
    with np.errstate(invalid="ignore", divide="ignore"):
        ring[:, :, 0] = np.where(counted > 0, windows.total[:, columns] / counted, np.nan)
    sensors.hourly[rows] = ring
    sensors.hour[rows] = start


def nowcasts(
    sensors: Sensors, windows: OpenWindows, fields: tuple[str, ...], columns: tuple[int, ...]
) -> list[dict[str, Any]]:
    """The NowCast entries of the sensors of ``windows`` (folded already), in its order."""
    rings: F64 = sensors.hourly[windows.sensor]
    histories = {cast(Pollutant, fields[c]): rings[:, p, :] for p, c in enumerate(columns)}
    return [cast(dict[str, Any], entry) for entry in nowcast_entries(histories)]


def fold_closed(sensors: Sensors, windows: OpenWindows, columns: tuple[int, ...]) -> None:
    """Fold windows of several starts (closed since their rows were written), in start
    order: what a restore does."""
    if not columns:
        return
    start: I64 = windows.start
    for window in np.unique(start).tolist():
        fold(sensors, windows.rows(start == window), columns)
