"""``python -m bench.timing``: the two timing ratios the tests used to assert, as measurements.

- **hot partition**: 20,000 readings on partition 0 and 1,000 on each of 1-3, a slow stage
  (15 ms a batch), a 2,000-record buffer: when the other partitions' last output came, as a
  share of when the hot partition's did (from the output records' timestamps; the tests
  assert the order instead: tests/integration/test_flow_control.py).
- **loop gap**: the longest gap between ticks of a 5 ms ticker on the event loop while a
  geofenced batch is tagged in a worker thread, and inline, as a share of the batch's time
  (the test asserts the ticks' order: tests/unit/test_geofence.py).

Noisy on a shared machine by nature: read a run's figures against each other.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from processor.config import Settings
from processor.core.pipeline import Processor
from processor.geo.geofence import Geofences
from processor.geo.spatial import Reprojector
from processor.geo.stage import SpatialStage, StageInput, StageJob
from processor.kafka.admin import create_topics
from processor.kafka.batches import BatchSpec
from processor.tools.embedded_broker import FAST_GROUP, EmbeddedBroker
from processor.tools.synthetic import readings

WATERSHEDS = Path(__file__).resolve().parents[1] / "tests" / "data" / "watersheds.geojson"
HOT, COLD, COLD_PARTITIONS = 20_000, 1_000, (1, 2, 3)


async def hot_partition_share(bootstrap: str, spill: Path) -> float:
    """others_done / hot_done, both from the first output's timestamp."""
    tag = str(time.monotonic_ns())
    topics = {"input_topic": f"in-{tag}", "output_topic": f"out-{tag}", "dlq_topic": f"dlq-{tag}"}
    await create_topics(bootstrap, topics.values(), 4)
    sample = readings(HOT + 3 * COLD, sensors=100, invalid_ratio=0)
    valid = [(k, v) for k, v, code in sample if not code]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        for i, (key, value) in enumerate(valid):
            partition = 0 if i < HOT else COLD_PARTITIONS[(i - HOT) // COLD]
            await producer.send(topics["input_topic"], value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    settings = Settings(
        bootstrap_servers=bootstrap, group_id=f"group-{tag}", enable_idempotence=False,
        spill_dir=spill, http_port=0, buffer_max_records=2_000, batch_max_records=250,
        stage_delay_ms=15, **topics, **FAST_GROUP,
    )  # fmt: skip
    processor = Processor(settings)
    running = asyncio.create_task(processor.run())
    while processor.stats.finished < len(valid) and not running.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    processor.stop()
    await running
    return await _share(bootstrap, topics["output_topic"], len(valid))


async def _share(bootstrap: str, topic: str, count: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        at: dict[bool, list[int]] = {True: [], False: []}
        while len(at[True]) + len(at[False]) < count:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                for record in part:
                    hot = json.loads(record.value)["source"]["partition"] == 0
                    at[hot].append(record.timestamp)
    finally:
        await consumer.stop()
    start = min(at[True] + at[False])
    return (max(at[False]) - start) / (max(at[True]) - start)


async def loop_gap(work: Callable[[], Awaitable[Any]]) -> float:
    """The longest gap between ticks of a 5 ms ticker while ``work`` runs / its seconds."""
    gaps: list[float] = []
    started = asyncio.Event()
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            started.set()

    task = asyncio.create_task(ticker())
    await started.wait()
    gaps.clear()
    begin = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - begin
    done = True
    await task
    return max(gaps) / elapsed


def geofenced_job(count: int = 50_000) -> tuple[SpatialStage, StageJob]:
    stage = SpatialStage(
        Reprojector("EPSG:3857"), 1 << 20, Geofences.load(WATERSHEDS, "id", "EPSG:3857"), "pass"
    )
    batch = StageInput([], [], [], [])
    sample = readings(count, sensors=400, invalid_ratio=0)
    batch.extend("bench", 0, [_Record(i, k, v) for i, (k, v, _) in enumerate(sample)])
    return stage, StageJob(batch, None, BatchSpec((0,), 1 << 20))


@dataclass(slots=True)
class _Record:
    """What the stage reads of a consumed record."""

    offset: int
    key: bytes | None
    value: bytes


async def main() -> None:
    stage, job = geofenced_job()

    async def in_thread() -> None:
        await asyncio.to_thread(stage.run, job)

    async def inline() -> None:
        stage.run(job)

    print(f"loop gap / batch time, stage in a thread: {await loop_gap(in_thread):.2f}")
    print(f"loop gap / batch time, stage inline:      {await loop_gap(inline):.2f}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        share = await hot_partition_share(broker.bootstrap_servers, Path(tmp) / "spill")
    print(f"hot partition: others done / hot done:    {share:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
