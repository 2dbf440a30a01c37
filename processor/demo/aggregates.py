"""The demo's windows as an operator sees them: the aggregates topic, read while the demo runs,
grouped by region, so the smoke shows as one region's mean pm25 and its NowCast AQI rising
hour after hour, and by sensor, so the values quality control left out show who sent them.

An aggregate is one sensor's window; a region's window adds up its sensors': the readings
counted, and pm25's mean weighted by how many pm25 values each sensor's mean is over, which is
the mean of all the region's values in the window; the region's NowCast is its sensors' mean
NowCast, and its AQI that mean's. A window closes per input partition, so a
region whose sensors are on several partitions fills in as each partition's watermark passes
it: what is shown of a window is what has closed of it so far.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import numpy as np

from processor.airquality import aqi
from processor.config import Settings
from processor.core.memory import MIB
from processor.kafka.clients import make_reader
from processor.tools.synthetic import region_of

FIELD = "pm25"
#: The reader's memory, from which its fetch sizes follow (a 1 MiB fetch: thousands of aggregates).
_READER_BUDGET = 16 * MIB
_POLL_MS = 200


class _Field(msgspec.Struct):
    count: int
    mean: float | None = None


class _Flagged(msgspec.Struct):
    suspect: int
    failed: int


class _Nowcast(msgspec.Struct):
    value: float


class _Aggregate(msgspec.Struct):
    """The part of the aggregates topic's value the demo reads."""

    sensor_id: str
    window_start: datetime
    count: int
    fields: dict[str, _Field]
    qc: dict[str, _Flagged] = {}
    nowcast: dict[str, _Nowcast] = {}


_decode = msgspec.json.Decoder(_Aggregate).decode


@dataclass(slots=True)
class RegionWindow:
    """One region's sensors in one window, as far as their windows have closed."""

    sensors: int = 0
    readings: int = 0
    pm25_count: int = 0
    pm25_total: float = 0.0  # the sum of the pm25 values: each sensor's mean times its count
    nowcasts: int = 0  # sensors with a NowCast of pm25
    nowcast_total: float = 0.0

    @property
    def pm25_mean(self) -> float | None:
        return self.pm25_total / self.pm25_count if self.pm25_count else None

    @property
    def nowcast(self) -> float | None:
        """The region's NowCast of pm25: its sensors' mean (None: no sensor had one yet)."""
        return self.nowcast_total / self.nowcasts if self.nowcasts else None

    @property
    def aqi(self) -> int | None:
        nowcast = self.nowcast
        if nowcast is None:
            return None
        return int(aqi(np.array([nowcast]), "pm25").aqi[0])


@dataclass(slots=True)
class RegionAggregates:
    """Aggregates read, by window start (ms since the epoch) and region; the values QC left
    out, by sensor. Event time runs ``time_scale`` times the wall clock: times shown are the
    wall clock's."""

    length_ms: int
    time_scale: float = 1.0
    read: int = 0
    flagged: Counter[str] = field(default_factory=Counter)  # suspect or failed pm25, by sensor
    _windows: dict[int, dict[str, RegionWindow]] = field(default_factory=dict, init=False)

    def add(self, values: Iterable[bytes]) -> None:
        """Count the aggregates topic's ``values`` in."""
        for value in values:
            aggregate = _decode(value)
            start = round(aggregate.window_start.timestamp() * 1000)
            regions = self._windows.setdefault(start, {})
            window = regions.setdefault(region_of(aggregate.sensor_id), RegionWindow())
            window.sensors += 1
            window.readings += aggregate.count
            pm25 = aggregate.fields.get(FIELD)
            if pm25 is not None and pm25.mean is not None:
                window.pm25_count += pm25.count
                window.pm25_total += pm25.mean * pm25.count
            nowcast = aggregate.nowcast.get(FIELD)
            if nowcast is not None:
                window.nowcasts += 1
                window.nowcast_total += nowcast.value
            flagged = aggregate.qc.get(FIELD)
            if flagged is not None and flagged.suspect + flagged.failed:
                self.flagged[aggregate.sensor_id] += flagged.suspect + flagged.failed
            self.read += 1

    def latest(self, origin_ms: int) -> dict[str, tuple[float, float, int | None]]:
        """Each region's latest window with a pm25 mean: (its start in wall seconds since
        ``origin_ms``, the mean, its NowCast AQI)."""
        found: dict[str, tuple[float, float, int | None]] = {}
        for start in sorted(self._windows, reverse=True):
            for region, window in self._windows[start].items():
                mean = window.pm25_mean
                if region not in found and mean is not None:
                    found[region] = self.wall_s(start, origin_ms), mean, window.aqi
        return found

    def series(self) -> dict[str, list[tuple[int, RegionWindow]]]:
        """Each region's windows in time order, one for every window length from the first
        to the last start read (an empty :class:`RegionWindow` where it had none)."""
        if not self._windows:
            return {}
        first, last = min(self._windows), max(self._windows)
        starts = range(first, last + self.length_ms, self.length_ms)
        regions = sorted({region for found in self._windows.values() for region in found})
        return {
            region: [
                (start, self._windows.get(start, {}).get(region, RegionWindow()))
                for start in starts
            ]
            for region in regions
        }

    def wall_s(self, start_ms: int, origin_ms: int) -> float:
        """A window start as wall-clock seconds since ``origin_ms`` (the sensors' start)."""
        return (start_ms - origin_ms) / 1000 / self.time_scale

    def means(self, origin_ms: int) -> dict[str, list[tuple[float, float | None, int | None]]]:
        """Per region, each window's start in wall seconds since ``origin_ms``, its mean pm25
        and its NowCast AQI."""
        return {
            region: [
                (self.wall_s(start, origin_ms), window.pm25_mean, window.aqi)
                for start, window in windows
            ]
            for region, windows in self.series().items()
        }

    def summary(self, origin_ms: int) -> dict[str, list[dict[str, Any]]]:
        """Per region, each window: ``t`` its start in wall seconds since ``origin_ms``."""
        return {
            region: [
                {
                    "t": round(self.wall_s(start, origin_ms), 1),
                    "sensors": window.sensors,
                    "readings": window.readings,
                    "pm25_mean": None if window.pm25_mean is None else round(window.pm25_mean, 1),
                    "nowcast": None if window.nowcast is None else round(window.nowcast, 1),
                    "aqi": window.aqi,
                }
                for start, window in windows
            ]
            for region, windows in self.series().items()
        }


async def read_aggregates(
    settings: Settings, into: RegionAggregates, stop: asyncio.Event, wanted: Callable[[], int]
) -> None:
    """Read the aggregates topic from its start into ``into`` while the demo runs; once
    ``stop`` is set, on until ``wanted()`` aggregates were read, or none came for the request
    timeout (what was read then is what the summary shows)."""
    reader = make_reader(settings, _READER_BUDGET)
    await reader.start()
    try:
        reader.subscribe([settings.aggregates_topic])  # outside any group: every partition
        clock = asyncio.get_running_loop().time
        quiet_until: float | None = None
        while True:
            fetched = await reader.getmany(timeout_ms=_POLL_MS)
            for records in fetched.values():
                into.add(record.value for record in records)
            if not stop.is_set():
                continue
            if into.read >= wanted():
                return
            if fetched or quiet_until is None:
                quiet_until = clock() + settings.request_timeout_ms / 1000
            elif clock() > quiet_until:
                return
    finally:
        await reader.stop()
