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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from processor.config import Settings, env_name, flag_name
from processor.core.lifecycle import unless_stopped
from processor.kafka.preflight import checked_producer
from processor.tools.synthetic import readings

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

    def problem(self) -> str:
        """Why the run failed, or empty: every reading sent must be acknowledged."""
        if self.failure is not None:
            name, text = type(self.failure).__name__, str(self.failure)
            error = text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
            return f"the broker did not acknowledge a reading ({error})"
        missing = self.sent - self.acknowledged
        if missing:
            return (
                f"{missing:,} readings not acknowledged within "
                f"{env_name('request_timeout_ms')} ({flag_name('request_timeout_ms')})"
            )
        return ""

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.sent / elapsed if elapsed > 0 else 0.0
        return (
            f"sent {self.sent:,} in {elapsed:.1f} s ({rate:,.0f}/s), "
            f"acknowledged {self.acknowledged:,}, invalid on purpose {self.invalid:,}"
        )


@dataclass(frozen=True)
class Pace:
    """What ``processor sample`` publishes: ``count`` readings (0: until stopped) at ``rate``
    per second from ``sensors`` sensors, ``invalid_ratio`` of them malformed."""

    rate: float
    sensors: int
    count: int
    invalid_ratio: float


async def publish_samples(
    settings: Settings,
    install_signals: Callable[[Callable[[], None]], None],
    pace: Pace,
    *,
    out: TextIO = sys.stdout,
    progress_s: float = PROGRESS_S,
) -> int:
    """Publish as ``pace`` says; the exit code."""
    stop = asyncio.Event()
    install_signals(stop.set)
    with _quiet(logging.getLogger("aiokafka")):  # its per-attempt lines: our one line says it
        producer = await unless_stopped(lambda: checked_producer(settings, ("input_topic",)), stop)
        if producer is None:
            return 0
        until = f"{pace.count:,} readings" if pace.count else "stopped (Ctrl-C)"
        where = f"{settings.input_topic!r} at {settings.bootstrap_servers}"
        print(f"publishing {pace.rate:g} readings/s to {where} until {until}", file=out, flush=True)
        tally = Tally()
        progress = asyncio.create_task(_report(tally, out, progress_s))
        try:
            await _send(producer, settings, pace, tally, stop)
        finally:
            progress.cancel()
            await producer.stop()
    print(f"done: {tally.line()}", file=out, flush=True)
    problem = tally.problem()
    if problem:
        print(f"processor: stopped: {problem}", file=sys.stderr)
        return 1
    return 0


async def _send(
    producer: Any, settings: Settings, pace: Pace, tally: Tally, stop: asyncio.Event
) -> None:
    source = readings(pace.count or 10**12, sensors=pace.sensors, invalid_ratio=pace.invalid_ratio)
    for key, value, code in source:
        if stop.is_set() or tally.failure is not None:
            break
        ack = await producer.send(settings.input_topic, value, key=key)
        ack.add_done_callback(tally.settle)
        tally.sent += 1
        tally.invalid += code is not None
        ahead = tally.sent / pace.rate - (time.monotonic() - tally.started)
        if ahead > _TICK_S:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ahead)
    with contextlib.suppress(TimeoutError):  # what is still unacknowledged is reported
        await asyncio.wait_for(producer.flush(), settings.request_timeout_ms / 1000)


@contextlib.contextmanager
def _quiet(log: logging.Logger) -> Iterator[None]:
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


async def _report(tally: Tally, out: TextIO, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        print(tally.line(), file=out, flush=True)
