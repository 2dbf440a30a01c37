"""``processor sample``: a paced producer of synthetic readings (compose, demos, load tests).

It starts as ``processor run`` does, through the start-up check, so whatever would stop it
(an unreachable broker, a login, a missing input topic, a broker without the idempotent
producer) is one line and exit 2. While it works it prints a progress line every few
seconds, and a summary at the end: after ``--count`` readings, or after SIGINT/SIGTERM
(exit 0), or after a reading the broker did not acknowledge (exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiokafka.errors import KafkaConnectionError

from processor.clients import make_producer
from processor.config import Settings
from processor.lifecycle import unless_stopped
from processor.preflight import check_cluster, unreachable
from processor.samples import readings

_TICK_S = 0.05
PROGRESS_S = 5.0


@dataclass
class Tally:
    """What was sent and what the broker acknowledged; the first failure, if any."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    acknowledged: int = 0
    invalid: int = 0
    failure: BaseException | None = None

    def settle(self, ack: asyncio.Future[Any]) -> None:
        if ack.cancelled():
            return
        error = ack.exception()
        if error is None:
            self.acknowledged += 1
        elif self.failure is None:
            self.failure = error

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.sent / elapsed if elapsed > 0 else 0.0
        return (
            f"sent {self.sent:,} in {elapsed:.1f} s ({rate:,.0f}/s), "
            f"acknowledged {self.acknowledged:,}, invalid on purpose {self.invalid:,}"
        )


async def publish_samples(
    settings: Settings,
    install_signals: Callable[[Callable[[], None]], None],
    *,
    rate: float,
    sensors: int,
    count: int,
    invalid_ratio: float,
    out: TextIO = sys.stdout,
    progress_s: float = PROGRESS_S,
) -> int:
    """Publish until ``count`` readings (0: until stopped); the exit code."""
    stop = asyncio.Event()
    install_signals(stop.set)
    producer = await unless_stopped(lambda: _start(settings), stop)
    if producer is None:
        return 0
    until = f"{count:,} readings" if count else "stopped (Ctrl-C)"
    where = f"{settings.input_topic!r} at {settings.bootstrap_servers}"
    print(f"publishing {rate:g} readings/s to {where} until {until}", file=out, flush=True)
    tally = Tally()
    progress = asyncio.create_task(_report(tally, out, progress_s))
    try:
        source = readings(count or 10**12, sensors=sensors, invalid_ratio=invalid_ratio)
        for key, value, code in source:
            if stop.is_set() or tally.failure is not None:
                break
            ack = await producer.send(settings.input_topic, value, key=key)
            ack.add_done_callback(tally.settle)
            tally.sent += 1
            tally.invalid += code is not None
            ahead = tally.sent / rate - (time.monotonic() - tally.started)
            if ahead > _TICK_S:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), ahead)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(producer.flush(), settings.request_timeout_ms / 1000)
    finally:
        progress.cancel()
        await producer.stop()
    print(f"done: {tally.line()}", file=out, flush=True)
    if tally.failure is not None:
        print(
            f"processor: stopped: the broker did not acknowledge a reading "
            f"({type(tally.failure).__name__}: {tally.failure})",
            file=sys.stderr,
        )
        return 1
    return 0


async def _start(settings: Settings) -> Any:
    await check_cluster(settings, topics=("input_topic",))
    producer = make_producer(settings)
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # the check passed: our one line says it better
    try:
        await producer.start()
    except KafkaConnectionError:
        await producer.stop()
        raise unreachable(settings, "lost while the producer started") from None
    except BaseException:
        await producer.stop()
        raise
    finally:
        client_log.setLevel(level)
    return producer


async def _report(tally: Tally, out: TextIO, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        print(tally.line(), file=out, flush=True)
