"""``processor sample``: a paced producer of synthetic readings (compose, demos, load tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from processor.clients import security_options
from processor.config import Settings
from processor.samples import readings

_TICK_S = 0.05


async def publish_samples(
    settings: Settings,
    install_signals: Callable[[Callable[[], None]], None],
    *,
    rate: float,
    sensors: int,
    count: int,
    invalid_ratio: float,
) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_idempotence=settings.enable_idempotence,
        linger_ms=20,
        **security_options(settings),
    )
    await producer.start()
    stop = asyncio.Event()
    install_signals(stop.set)
    sent = 0
    started = time.monotonic()
    source = readings(count or 10**12, sensors=sensors, invalid_ratio=invalid_ratio)
    try:
        for key, value, _ in source:
            if stop.is_set():
                break
            await producer.send(settings.input_topic, value, key=key)
            sent += 1
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > _TICK_S:
                await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    return 0
