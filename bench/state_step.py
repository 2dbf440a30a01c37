"""``python -m bench.state_step``: the engine's state step alone (``Windowing.apply`` and
``persist``, as the windows scenario runs them), no broker: the event loop's CPU per record
for counting, snapshots, aggregates and changelog writes, and the changelog's bytes.

The input is the windows scenario's: 1,000 sensors, each once a minute in event time (up to
5 s late), over 4 partitions, hourly windows of two fields with dedup, 10 m lateness;
batches of 5,000 records, a batch every 50 ms (the scenario's pace, which sets how many
batches a snapshot covers), persisted as their outputs would be acknowledged, up to 4 in
flight. CPU is this process's, over the batches only (not the waits).

Measured on the 2-core dev machine, two runs each, one after the other: 4.15-4.18 µs a
record and 1,882-1,909 bytes a sensor row (46 MB of changelog for 200,000 readings) before
the rows' dedup keys became steps and snapshots waited ten times their own time; 3.27-3.60
µs and 1,068-1,073 bytes (24 MB) after. On a faster machine, 2026-12-04: 1.60-1.86 µs before
the dedup keys were searched as one int64 each (and the open windows by sensor alone),
1.02-1.03 µs after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from processor.core.buffer import Chunk
from processor.core.offsets import OffsetTracker
from processor.core.partition_state import StateSpec
from processor.core.ports import Row, TopicPartition
from processor.core.stats import Stats
from processor.core.windowing import Windowing
from processor.messages.jobs import Framed, PointReadings
from processor.state.aggregates import sensor_keys
from processor.state.spec import WindowSpec
from processor.state.store import LocalStore

FIELDS = ("pm25", "battery")
PARTITIONS = [TopicPartition("bench.input", p) for p in range(4)]
T0_US = 1_796_083_200_000_000  # 2026-12-01T00:00:00Z
MINUTE_US = 60_000_000


class _Topics:
    """The state topics in memory, acknowledged at once: what was written, and its bytes."""

    def __init__(self) -> None:
        self.aggregates = 0
        self.rows = 0
        self.row_bytes = 0
        self._ends: dict[TopicPartition, int] = {}

    async def send_aggregates(self, records: Sequence[tuple[bytes, bytes]]) -> Awaitable[None]:
        self.aggregates += len(records)
        return _done(None)

    async def write_changelog(self, tp: TopicPartition, rows: Sequence[Row]) -> Awaitable[int]:
        sensor_rows = [value for key, value in rows if key]  # the partition's row is b""
        self.rows += len(sensor_rows)
        self.row_bytes += sum(len(value) for value in sensor_rows)
        self._ends[tp] = self._ends.get(tp, 0) + len(rows)
        return _done(self._ends[tp])

    async def read_changelog(self, tp: TopicPartition, since: int) -> tuple[list[Row], int]:
        return [], self._ends.get(tp, 0)


def _done(value: Any) -> asyncio.Future[Any]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def batches(
    records: int, sensors: int, batch: int, trackers: dict[TopicPartition, OffsetTracker]
) -> list[tuple[list[Chunk[TopicPartition]], PointReadings]]:
    """The input as the buffer hands it out: a quarter of a batch from each partition."""
    rng = np.random.default_rng(1)
    keys = sensor_keys([f"sensor-{i:04d}" for i in range(sensors)])
    partition_of = rng.integers(0, len(PARTITIONS), sensors)
    sensor = np.tile(np.arange(sensors), records // sensors + 1)[:records]
    event = T0_US + np.arange(records) // sensors * MINUTE_US + rng.integers(0, 5_000_000, records)
    values = rng.random((records, len(FIELDS))) * 50
    part = partition_of[sensor]
    offsets = np.zeros(records, dtype=np.int64)
    rows_of = [np.flatnonzero(part == p) for p in range(len(PARTITIONS))]
    for rows in rows_of:
        offsets[rows] = np.arange(rows.size)
    out = []
    taken = [0] * len(PARTITIONS)
    while sum(taken) < records:
        chunks, picked = [], []
        for p, tp in enumerate(PARTITIONS):
            rows = rows_of[p][taken[p] : taken[p] + batch // len(PARTITIONS)]
            taken[p] += rows.size
            if rows.size:
                run = [SimpleNamespace(offset=int(o)) for o in offsets[rows]]
                first, end = int(offsets[rows[0]]), int(offsets[rows[-1]]) + 1
                chunks.append(Chunk(tp, run, first, end, trackers[tp]))
                picked.append(rows)
        rows = np.concatenate(picked)
        readings = PointReadings(
            np.arange(rows.size, dtype=np.int64),
            offsets[rows],
            keys[sensor[rows]],
            event[rows],
            values[rows],
        )
        out.append((chunks, readings))
    return out


async def run(records: int, sensors: int, batch: int, pace_s: float) -> dict[str, float]:
    spec = StateSpec(WindowSpec(3_600_000, 600_000, FIELDS, dedup=True), None, FIELDS)
    trackers = {tp: OffsetTracker(0) for tp in PARTITIONS}
    work = batches(records, sensors, batch, trackers)
    topics = _Topics()
    with tempfile.TemporaryDirectory() as tmp:
        state = Windowing(
            spec,
            topics,
            LocalStore(Path(tmp) / "state"),
            stage=None,  # type: ignore[arg-type]  # no QC and no duplicates: nothing to revise
            trackers=trackers,
            committed={},
            stats=Stats(),
            save_every_s=0.1,  # PROCESSOR_COMMIT_INTERVAL_S's default
            cleanup_delay_s=math.inf,  # one run's store, never swept
        )
        for tp in PARTITIONS:
            await state.restore(tp)
        started = time.process_time()
        in_flight: list[asyncio.Future[None]] = []
        for chunks, readings in work:
            _, applied = await state.apply(chunks, Framed(readings=readings))
            in_flight.append(asyncio.ensure_future(state.persist(applied)))
            if len(in_flight) > 3:
                await in_flight.pop(0)
            await asyncio.sleep(pace_s)
        await asyncio.gather(*in_flight)
        cpu_s = time.process_time() - started
        state.close()
    return {
        "records": records,
        "cpu_us_per_record": round(cpu_s / records * 1e6, 2),
        "aggregates": topics.aggregates,
        "sensor_rows": topics.rows,
        "bytes_per_sensor_row": round(topics.row_bytes / max(topics.rows, 1)),
        "changelog_mb": round(topics.row_bytes / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--sensors", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--pace-ms", type=float, default=50.0, help="between two batches")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.repeat):
        result = asyncio.run(run(args.records, args.sensors, args.batch, args.pace_ms / 1000))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
