"""``python -m bench.buffer_memory``: memory per buffered record (docs/operations.md, capacity).

The processor's own memory reading (``processor_memory_used_bytes``: main process and stage
workers) with its buffer held full by a stalled stage, at two buffer sizes, each in a fresh
process on one embedded broker; the slope is the memory one buffered record takes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from processor.config import Settings
from processor.kafka.admin import create_topics
from processor.tools.embedded_broker import FAST_GROUP, EmbeddedBroker
from processor.tools.synthetic import readings
from processor.wiring import kafka_processor


async def held(bootstrap: str, buffer: int, spill: Path) -> tuple[int, int]:
    """Memory used and records buffered once a stalled stage keeps the buffer full."""
    topic = f"mem-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic, f"{topic}.out", f"{topic}.dlq"], 4)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        for key, value, _ in readings(int(buffer * 1.3), invalid_ratio=0):
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    settings = Settings(
        bootstrap_servers=bootstrap, input_topic=topic, output_topic=f"{topic}.out",
        dlq_topic=f"{topic}.dlq", group_id=topic, enable_idempotence=False, spill_dir=spill,
        http_port=0, buffer_max_records=buffer, batch_max_records=1_000,
        stage_delay_ms=600_000, memory_limit_mb=4_096, **FAST_GROUP,
    )  # fmt: skip
    processor = kafka_processor(settings)
    running = asyncio.create_task(processor.run())
    deadline = time.monotonic() + 120
    while processor.stats.buffered < settings.buffer_high * buffer:
        if time.monotonic() > deadline:
            raise SystemExit(f"buffer of {buffer} never filled")
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)  # a dozen memory samples at the plateau
    used, buffered = processor.stats.memory_used, processor.stats.buffered
    processor.stop()
    running.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(running, 5)
    return used, buffered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("BOOTSTRAP", "BUFFER"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one:
        with tempfile.TemporaryDirectory() as spill:
            used, buffered = asyncio.run(held(options.one[0], int(options.one[1]), Path(spill)))
        print(used, buffered)
        return
    with EmbeddedBroker() as broker:
        for _ in range(options.repeat):
            (small_used, small_n), (large_used, large_n) = (
                map(int, subprocess.run(
                    [sys.executable, "-m", "bench.buffer_memory", "--one",
                     broker.bootstrap_servers, str(size)],
                    check=True, capture_output=True, text=True,
                ).stdout.split())
                for size in (options.small, options.large)
            )  # fmt: skip
            slope = (large_used - small_used) / (large_n - small_n)
            print(
                f"{small_n:,} records: {small_used / 2**20:.0f} MiB, "
                f"{large_n:,} records: {large_used / 2**20:.0f} MiB, "
                f"{slope:.0f} bytes per buffered record"
            )


if __name__ == "__main__":
    main()
