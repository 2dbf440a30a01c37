"""``python -m bench.window_state``: the window state alone (``processor.state.windows``), no
broker: ``apply()`` throughput, memory per sensor and per open window, and the per-sensor
changelog rows: ``take_changes()`` per batch, bytes a row, and the restore, ``from_rows()`` of
the latest row of each key (what the local store holds).

Each sensor reports every ``--every-s`` seconds of event time, in offset order with up to 5 s
of clock jitter, and 1 % of readings are sent twice (an uplink's redelivery); batches of
``--batch`` readings of one partition. Rates are measured over the second half of the run,
once the open windows and dedup keys have reached their steady size (length + lateness).

Measured on the 2-core dev machine (defaults: 60 s windows, 10 m lateness, a reading per
sensor every 10 s, so 11 open windows and ~62 dedup keys per sensor): 1,000 sensors 725k
readings/s; 100,000 sensors 226k readings/s, 236 MB of state (88 B an open window, 24 B a
dedup key, 23 B a sensor's key and offset). Changelog rows (each batch's changed sensors, the
commit point a batch behind): 1.9-2.0 KB a sensor row; take_changes() 9 ms a batch of 5,000
at 1,000 sensors (965 rows, apply() alone 7 ms), 114 ms at 100,000 (4,950 rows, 9.5 MB;
apply() 22 ms), so 315k and 37k readings/s with rows; from_rows() of 100,000 rows 3.0 s
(2.5-3.7 s over four calls in one process, the first the slowest).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from processor.state.aggregates import sensor_keys
from processor.state.spec import Readings, WindowSpec
from processor.state.windows import PartitionWindows


def stream(sensors: int, minutes: float, every_s: float, seed: int) -> Readings:
    """The partition's readings, in offset order."""
    rng = np.random.default_rng(seed)
    rounds = int(minutes * 60 / every_s)
    sensor = np.tile(rng.permutation(sensors), rounds)
    due = np.repeat(np.arange(rounds, dtype=np.int64) * int(every_s * 1_000_000), sensors)
    event = 1_700_000_000_000_000 + due + rng.integers(0, 5_000_000, due.size)  # µs
    again = np.flatnonzero(rng.random(sensor.size) < 0.01)
    order = np.sort(
        np.concatenate((np.arange(sensor.size), again))
    )  # a resend follows its original
    names = sensor_keys([f"sensor-{i:07d}" for i in range(sensors)])
    values = rng.normal(20.0, 5.0, (sensor.size, 2))
    values[rng.random(sensor.size) < 0.02, 1] = np.nan
    return Readings(
        np.arange(order.size, dtype=np.int64),
        names[sensor[order]],
        event[order],
        values[order],
    )


def measure(sensors: int, args: argparse.Namespace) -> dict[str, float]:
    spec = WindowSpec(args.window_s * 1000, args.lateness_s * 1000, ("pm25", "temp"), dedup=True)
    readings = stream(sensors, args.minutes, args.every_s, seed=sensors)
    state = PartitionWindows(spec)
    n = readings.offsets.size
    half, counted, closed = n // 2, 0, 0
    apply_s = take_s = 0.0
    batches = row_count = row_bytes = 0
    latest: dict[bytes, bytes] = {}
    for lo in range(0, n, args.batch):
        part = slice(lo, lo + args.batch)
        began = time.perf_counter()
        verdicts, aggregates = state.apply(
            Readings(
                readings.offsets[part],
                readings.sensors[part],
                readings.event_us[part],
                readings.values[part],
            )
        )
        state.release(lo)  # the commit point: the batches before this one are finished
        applied = time.perf_counter()
        changes = state.take_changes()
        taken = time.perf_counter()
        latest.update(changes.pairs())
        counted += int((verdicts == 0).sum())
        closed += len(aggregates)
        if lo >= half:
            apply_s += applied - began
            take_s += taken - applied
            batches += 1
            row_count += len(changes.sensors)
            row_bytes += sum(len(key) + len(value) for key, value in changes.sensors)
    began = time.perf_counter()
    PartitionWindows.from_rows(spec, latest.items())
    from_rows_s = time.perf_counter() - began
    sizes = state.sizes()
    return {
        "sensors": sensors,
        "readings": n,
        "records_per_s": round((n - half) / apply_s),
        "take_changes_ms_per_batch": round(1000 * take_s / batches, 2),
        "rows_per_batch": round(row_count / batches),
        "bytes_per_sensor_row": round(row_bytes / row_count),
        "records_per_s_with_rows": round((n - half) / (apply_s + take_s)),
        "open_windows": sizes.open_windows,
        "dedup_keys": sizes.dedup_keys,
        "aggregates": closed,
        "counted": counted,
        "memory_mb": round(state.memory_bytes() / 2**20, 1),
        "sensor_table_bytes_per_sensor": round(sizes.sensor_bytes / sizes.sensors, 1),
        "bytes_per_open_window": round(sizes.window_bytes / max(sizes.open_windows, 1), 1),
        "bytes_per_dedup_key": round(sizes.dedup_bytes / max(sizes.dedup_keys, 1), 1),
        "memory_bytes_per_sensor": round(state.memory_bytes() / sensors),
        "from_rows_s": round(from_rows_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.window_state", description=__doc__)
    parser.add_argument("--sensors", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--window-s", type=int, default=60)
    parser.add_argument("--lateness-s", type=int, default=600)
    parser.add_argument("--every-s", type=float, default=10.0)
    parser.add_argument("--minutes", type=float, default=24.0, help="event time the run spans")
    args = parser.parse_args()
    for sensors in args.sensors:
        print(json.dumps(measure(sensors, args)))


if __name__ == "__main__":
    main()
