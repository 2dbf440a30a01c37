"""``python -m bench.airquality``: the cost of the NowCast and AQI per sensor
(``processor.airquality``), no broker: what one hourly close costs the window state when it
scores every sensor of a partition at once.

Each sensor has 12 hourly means of PM2.5 and of PM10 (log-normal around 12 and 30 ug/m3, 5 %
of hours missing). Timed, median of ``--repeat`` calls: ``arrays`` = ``nowcast()`` then
``aqi()`` for both pollutants (the numpy work), and ``entries`` = ``nowcast_entries()`` (the
same plus building each sensor's dicts, what the aggregate carries).

Measured on the 2-core dev machine (shared, three runs): 1,000 sensors, arrays 1.2-1.8 ms
(1.2-1.8 us a sensor for NowCast + AQI of both pollutants), entries 2.4-4.0 ms; 100,000
sensors, arrays 1.25-1.5 us and entries 3.4-3.9 us a sensor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np

from processor.airquality import HOURS, aqi, nowcast, nowcast_entries


def histories(sensors: int, median: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = rng.lognormal(np.log(median), 0.6, (sensors, HOURS))
    hours[rng.random(hours.shape) < 0.05] = np.nan
    return hours


def median_s(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(sensors: int, repeat: int) -> dict[str, float | int]:
    pm25 = histories(sensors, 12.0, seed=1)
    pm10 = histories(sensors, 30.0, seed=2)

    def arrays() -> None:
        aqi(nowcast(pm25, "pm25"), "pm25")
        aqi(nowcast(pm10, "pm10"), "pm10")

    arrays_s = median_s(arrays, repeat)
    entries_s = median_s(lambda: nowcast_entries({"pm25": pm25, "pm10": pm10}), repeat)
    return {
        "sensors": sensors,
        "arrays_ms": round(arrays_s * 1e3, 3),
        "arrays_us_per_sensor": round(arrays_s * 1e6 / sensors, 3),
        "entries_ms": round(entries_s * 1e3, 3),
        "entries_us_per_sensor": round(entries_s * 1e6 / sensors, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.airquality", description=__doc__)
    parser.add_argument("--sensors", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    for sensors in args.sensors:
        print(json.dumps(measure(sensors, args.repeat)))


if __name__ == "__main__":
    main()
