"""``python -m bench.qc_state``: the QC state alone (``processor.qc``), no broker:
``apply()`` cost per record for four fields with every test set, over ``--sensors``
sensors in batches of ``--batch`` readings of one partition, with and without the changelog
rows (``take_changes()``) and the commit point's ``release()`` a batch behind. Prints the
median of ``--runs`` runs, each over the second half of the stream (the state at its size).
The engine takes the rows once per snapshot (a few a second, not every batch), so the
figure with rows is an upper bound of what it pays.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from processor.qc import PROFILE_QC, PartitionQc, QcSpec, thresholds_of
from processor.state.aggregates import sensor_keys

FIELDS = ("pm25", "pm10", "temperature", "dissolved_oxygen")


def spec() -> QcSpec:
    """Four fields, every test set: the profiles' defaults, and a rate of change on the
    particles (their profile leaves it out for sensors faster than 1 Hz)."""
    tables = {**PROFILE_QC["air_quality"], **PROFILE_QC["dissolved_oxygen"]}
    rate = {"rate_of_change_suspect": 2.0, "rate_of_change_fail": 10.0}
    return QcSpec.of(thresholds_of({field: {**rate, **tables[field]} for field in FIELDS}))


def run(args: argparse.Namespace, with_rows: bool) -> float:
    """Seconds per record of the stream's second half."""
    rng = np.random.default_rng(args.sensors)
    rounds = args.records // args.sensors
    sensor = np.tile(rng.permutation(args.sensors), rounds)
    event = 1_700_000_000_000_000 + np.repeat(np.arange(rounds) * 10_000_000, args.sensors)
    keys = sensor_keys([f"sensor-{i:07d}" for i in range(args.sensors)])[sensor]
    values = rng.normal(20.0, 5.0, (sensor.size, 4))
    values[rng.random(values.shape) < 0.02] = np.nan
    offsets = np.arange(sensor.size, dtype=np.int64)
    state = PartitionQc(spec())
    spent, measured = 0.0, 0
    for lo in range(0, sensor.size, args.batch):
        hi = min(lo + args.batch, sensor.size)
        start = time.perf_counter()
        state.apply(offsets[lo:hi], keys[lo:hi], event[lo:hi], values[lo:hi])
        if with_rows:
            state.take_changes()
        state.release(lo)  # the commit point a batch behind
        if lo >= sensor.size // 2:
            spent += time.perf_counter() - start
            measured += hi - lo
    return spent / measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=1_000)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    result = {
        name: round(statistics.median(run(args, rows) for _ in range(args.runs)) * 1e6, 3)
        for name, rows in (("apply_us_per_record", False), ("with_rows_us_per_record", True))
    }
    print(json.dumps({"sensors": args.sensors, "batch": args.batch, **result}))


if __name__ == "__main__":
    main()
