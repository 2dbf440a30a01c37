"""``processor demo``: the whole pipeline on an embedded broker, with nothing but Python.

Starts the broker, creates the topics, publishes synthetic readings (some malformed), runs
a processor until every reading is accounted for, prints a summary and stops the broker.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaProducer

from processor.broker import FAST_GROUP, EmbeddedBroker, create_topics
from processor.config import Settings
from processor.pipeline import Processor
from processor.samples import readings

_DEADLINE_S = 300.0


async def publish(bootstrap: str, topic: str, count: int) -> Counter[str]:
    """Publish ``count`` readings; returns how many of each expected outcome were sent."""
    expected: Counter[str] = Counter()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for key, value, code in readings(count, invalid_ratio=0.03):
            await producer.send(topic, value, key=key)
            expected[code or "published"] += 1
        await producer.flush()
    finally:
        await producer.stop()
    return expected


async def run_demo(records: int, partitions: int, output_dir: Path) -> int:
    with EmbeddedBroker(log_path=output_dir / "broker.log") as broker:
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers,
            enable_idempotence=False,
            group_id="processor-demo",
            spill_dir=output_dir / "spill",
            http_port=0,
            **FAST_GROUP,
        )
        await create_topics(
            broker.bootstrap_servers,
            [settings.input_topic, settings.output_topic, settings.dlq_topic],
            partitions,
        )
        print(f"broker on {broker.bootstrap_servers}; publishing {records} readings ...")
        expected = await publish(broker.bootstrap_servers, settings.input_topic, records)
        processor = Processor(settings)
        await processor.start()
        started = time.monotonic()
        running = asyncio.create_task(processor.run())
        deadline = started + _DEADLINE_S
        while processor.stats.finished < records and time.monotonic() < deadline:
            if running.done():
                break
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        processor.stop()
        code = await running
    stats = processor.stats
    print(
        f"in: {records}  published: {stats.published}  "
        f"dead-lettered: {stats.dead_lettered_total}  "
        f"({', '.join(f'{k}={v}' for k, v in sorted(stats.dead_lettered.items()))})"
    )
    print(
        f"expected published: {expected['published']}  throughput: {records / elapsed:,.0f}/s "
        f"(incl. group join)  peak buffer: {stats.peak_buffered}"
    )
    accounted = stats.finished == records
    print("every reading accounted for" if accounted else "NOT every reading accounted for")
    return 0 if accounted and code == 0 else 1
