"""One scenario in its own process: ``python -m bench.worker '<Spec as JSON>'``.

A worker runs until SIGTERM (the harness sends it once the group's committed offsets reach
the input's end offsets) and then writes a JSON result:

- ``samples``: ``[t, done, commits, cpu]`` with ``t`` from ``time.monotonic()`` (system-wide
  on Linux, so the harness can merge processes) and ``cpu`` the CPU seconds of the process
  (all threads) and of the processor's stage worker processes. ``done`` is the records
  committed (the raw and naive loops commit as soon as the broker acknowledged their sends)
  or, for the processor, the records finished (published or dead-lettered, and
  acknowledged), sampled every 5 ms;
- ``peak_rss_bytes``: the worker's own peak RSS (``VmHWM``) at exit, plus the peaks of the
  processor's stage worker processes (read just before they stop; the runner names them);
- scenario extras (the processor's summary, the burst's pause timings).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import resource
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from processor.config import Settings
from processor.tools.embedded_broker import FAST_GROUP

MIB = 1024 * 1024
FETCH_TIMEOUT_MS = 100
SAMPLE_S = 0.005
NAIVE_QUEUE = 5000  # the reference article's bounded queue
NAIVE_COMMIT_EVERY = 1000
#: Client tuning of the raw and naive loops: what the processor uses by default here.
CONSUMER_TUNING: dict[str, Any] = {
    "fetch_max_bytes": 32 * MIB,
    "max_partition_fetch_bytes": MIB,
    "fetch_max_wait_ms": Settings.model_fields["fetch_max_wait_ms"].default,
}
PRODUCER_TUNING: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "max_batch_size": MIB,
    "max_request_size": 2 * MIB,
}

Fetched = dict[TopicPartition, list[Any]]
Futures = list["asyncio.Future[Any]"]


@dataclass(frozen=True, slots=True)
class Spec:
    scenario: str  # raw | raw_batch | naive | processor
    bootstrap: str
    input_topic: str
    output_topic: str
    dlq_topic: str
    group: str
    result: str
    max_records: int = 2000  # per getmany of the raw loops
    in_flight: int = 0  # raw loops: getmany batches produced but not yet acknowledged
    burst: bool = False  # processor: time the buffer pauses


class Progress:
    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int, float]] = []
        self.children: list[psutil.Process] = []  # the processor's stage workers

    def add(self, done: int, commits: int) -> None:
        self.samples.append(
            (time.monotonic(), done, commits, time.process_time() + self._child_cpu())
        )

    def _child_cpu(self) -> float:
        total = 0.0
        for child in self.children:
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                total += times.user + times.system
        return total


def _consumer(spec: Spec) -> Any:
    return AIOKafkaConsumer(
        spec.input_topic,
        bootstrap_servers=spec.bootstrap,
        group_id=spec.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **FAST_GROUP,
        **CONSUMER_TUNING,
    )


def _producer(spec: Spec) -> Any:
    return AIOKafkaProducer(
        bootstrap_servers=spec.bootstrap, enable_idempotence=False, **PRODUCER_TUNING
    )


# raw and raw_batch ---------------------------------------------------------------------


class KeyedBatches:
    """The producer's batch API, partitioned as ``send()`` would (murmur2, memoised per key)."""

    def __init__(self, producer: Any, topic: str, partitions: Sequence[int]) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions = list(partitions)
        self._partitioner = DefaultPartitioner()
        self._cache: dict[bytes, int] = {}

    def partition(self, key: bytes | None) -> int:
        if key is None:
            return int(self._partitioner(None, self._partitions, self._partitions))
        partition = self._cache.get(key)
        if partition is None:
            partitions = self._partitions
            partition = self._cache[key] = self._partitioner(key, partitions, partitions)
        return partition

    async def send(self, fetched: Fetched) -> Futures:
        producer, topic, partition_of = self._producer, self._topic, self.partition
        batches: dict[int, Any] = {}
        futures: Futures = []
        for records in fetched.values():
            for record in records:
                key, value = record.key, record.value
                partition = partition_of(key)
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
        for partition, batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures


async def passthrough(spec: Spec, progress: Progress, stop: asyncio.Event) -> dict[str, Any]:
    """getmany -> produce the bytes unchanged (key kept) -> await the acks -> commit.

    ``raw`` calls ``send()`` per record, ``raw_batch`` fills batches itself. Both await the
    acknowledgements per getmany batch and commit only acknowledged offsets, in order; with
    ``in_flight`` > 0 the next batch is fetched and produced while earlier ones await theirs.
    """
    producer, consumer = _producer(spec), _consumer(spec)
    await producer.start()
    await consumer.start()
    try:
        if spec.scenario == "raw_batch":
            partitions = sorted(await producer.partitions_for(spec.output_topic))
            publish = KeyedBatches(producer, spec.output_topic, partitions).send
        else:

            async def publish(fetched: Fetched) -> Futures:
                send, topic = producer.send, spec.output_topic
                return [
                    await send(topic, record.value, key=record.key)
                    for records in fetched.values()
                    for record in records
                ]

        committed: dict[TopicPartition, int] = {}
        commits = 0
        in_flight: deque[tuple[asyncio.Future[Any], dict[TopicPartition, int]]] = deque()
        progress.add(0, 0)
        while not stop.is_set():
            fetched = await consumer.getmany(
                timeout_ms=FETCH_TIMEOUT_MS, max_records=spec.max_records
            )
            if fetched:
                acks = asyncio.gather(*await publish(fetched))
                in_flight.append((acks, {tp: rs[-1].offset + 1 for tp, rs in fetched.items()}))
            acked: dict[TopicPartition, int] = {}
            while in_flight and (
                len(in_flight) > spec.in_flight or in_flight[0][0].done() or not fetched
            ):
                acks, offsets = in_flight.popleft()
                await acks
                acked.update(offsets)
            if acked:
                await consumer.commit(acked)
                committed.update(acked)
                commits += 1
                progress.add(sum(committed.values()), commits)
    finally:
        await consumer.stop()
        await producer.stop()
    return {}


# naive ---------------------------------------------------------------------------------


class NaiveStage:
    """One record at a time, as the reference article does it."""

    def __init__(self, spec: Spec) -> None:
        from pyproj import Transformer
        from shapely.geometry import Point

        self._spec = spec
        self._point = Point
        self._transformer = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)

    def project(self, doc: dict[str, Any]) -> dict[str, Any]:
        lat, lon = doc["latitude"], doc["longitude"]
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError("coordinates out of range")
        x, y = self._transformer.transform(lon, lat)
        point = self._point(x, y)
        if not point.is_valid or not math.isfinite(x) or not math.isfinite(y):
            raise ValueError("invalid geometry")
        return {"x": point.x, "y": point.y, "crs": "EPSG:3857"}

    def handle(self, record: Any) -> tuple[str, bytes, bytes | None]:
        """(topic, value, key) of the point or the dead letter."""
        source = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            doc = json.loads(record.value)
            doc.update(self.project(doc), source=source)
            return self._spec.output_topic, json.dumps(doc).encode(), str(doc["sensor_id"]).encode()
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            letter = {
                "error": {"code": type(exc).__name__, "message": str(exc)},
                "source": source,
                "payload": record.value.decode(errors="replace"),
            }
            return self._spec.dlq_topic, json.dumps(letter).encode(), record.key


async def naive(spec: Spec, progress: Progress, stop: asyncio.Event) -> dict[str, Any]:
    """The reference article's step 1: a bounded asyncio.Queue between a consumer task and a
    worker that handles one record at a time (json.loads, Transformer.transform, Point,
    json.dumps, send); it commits after the acks, every 1000 records or when the queue is empty.
    """
    handle = NaiveStage(spec).handle
    producer, consumer = _producer(spec), _consumer(spec)
    await producer.start()
    await consumer.start()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=NAIVE_QUEUE)

    async def consume() -> None:
        while True:
            fetched = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)
            for records in fetched.values():
                for record in records:
                    await queue.put(record)

    async def work() -> None:
        pending: Futures = []
        offsets: dict[TopicPartition, int] = {}
        committed: dict[TopicPartition, int] = {}
        commits = 0
        while True:
            record = await queue.get()
            topic, value, key = handle(record)
            pending.append(await producer.send(topic, value, key=key))
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            queue.task_done()
            if len(pending) >= NAIVE_COMMIT_EVERY or queue.empty():
                await asyncio.gather(*pending)
                pending.clear()
                await consumer.commit(offsets)
                committed.update(offsets)
                commits += 1
                progress.add(sum(committed.values()), commits)

    progress.add(0, 0)
    tasks = [asyncio.create_task(consume()), asyncio.create_task(work())]
    try:
        await _until(stop, tasks)
    finally:
        await consumer.stop()
        await producer.stop()
    return {}


async def _until(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Wait for ``stop``; a task that dies first re-raises its error."""
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in [stopping, *tasks]:
        task.cancel()
    await asyncio.gather(stopping, *tasks, return_exceptions=True)
    for task in done:
        if task is not stopping and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


# processor -----------------------------------------------------------------------------


def telemetry_for(settings: Any) -> tuple[Any, str]:
    """``processor run``'s telemetry with tracing on: the SDK's default sampler
    (parent-based, always on) and a span processor that exports nowhere.

    (None, why) while ``processor.telemetry`` does not exist.
    """
    try:
        from opentelemetry.sdk.trace import SpanProcessor

        from processor.telemetry.otel import Telemetry
    except ImportError as exc:
        return None, f"off: {exc}"
    telemetry = Telemetry(settings, span_processors=[SpanProcessor()])
    return telemetry, "on: default sampler, no exporter"


class PauseProbe(logging.Handler):
    """Burst only: times each upward crossing of the buffer's high watermark and the
    ``pause`` (reason ``buffer``) that follows.

    The crossing is seen by wrapping the processor's ``buffer.put`` (the only way records
    enter the buffer); the pause by the pipeline's own "pause" log record, stamped as it is
    emitted, i.e. right after ``consumer.pause()``. Both on ``time.monotonic()``.
    """

    def __init__(self, processor: Any) -> None:
        super().__init__(logging.INFO)
        settings = processor.settings
        self._high = settings.buffer_high * settings.buffer_max_records
        self._buffer = processor.buffer
        self._put = processor.buffer.put
        processor.buffer.put = self._timed_put
        self._paused = False
        self._crossed: float | None = None
        self.crossings = 0
        self.latencies: list[float] = []
        logging.getLogger("processor.core.admission").addHandler(self)

    def _timed_put(self, chunk: Any) -> None:
        before = self._buffer.buffered
        self._put(chunk)
        if not self._paused and before < self._high <= self._buffer.buffered:
            self._crossed = time.monotonic()
            self.crossings += 1

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "reason", None) != "buffer":
            return
        message = record.getMessage()
        if message == "pause" and not self._paused:
            self._paused = True
            if self._crossed is not None:
                self.latencies.append(time.monotonic() - self._crossed)
                self._crossed = None
        elif message == "resume":
            self._paused = False


async def run_processor(spec: Spec, progress: Progress, stop: asyncio.Event) -> dict[str, Any]:
    """``processor run``: settings from the PROCESSOR_* environment the harness set."""
    from processor.config_sources import load_settings
    from processor.telemetry.logs import setup_logging
    from processor.wiring import kafka_processor

    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format)
    telemetry, tracing = telemetry_for(settings)
    proc = kafka_processor(settings, observer=telemetry)
    if telemetry is not None:
        telemetry.watch(proc.stats)  # as processor.service does; read only when scraped
    probe = PauseProbe(proc) if spec.burst else None
    await proc.start()
    progress.children = [psutil.Process(pid) for pid in proc.memory.workers]
    stats = proc.stats

    async def sample() -> None:
        last = (-1, -1)
        while True:
            now = (stats.finished, stats.commits)
            if now != last:
                progress.add(*now)
                last = now
            await asyncio.sleep(SAMPLE_S)

    workers_peak = 0

    async def stop_on_signal() -> None:
        nonlocal workers_peak
        await stop.wait()
        workers_peak = sum(peak_rss_bytes(child.pid) for child in progress.children)
        proc.stop()

    helpers = [asyncio.create_task(sample()), asyncio.create_task(stop_on_signal())]
    try:
        code = await proc.run()
    finally:
        for task in helpers:
            task.cancel()
        if telemetry is not None:
            telemetry.shutdown()
    result: dict[str, Any] = {
        "exit_code": code,
        "tracing": tracing,
        "summary": proc.summary(),
        "resumes": dict(stats.resumes),
        "memory_limit_mb": settings.memory_limit_mb,
        "stage_workers": len(progress.children),
        "stage_workers_peak_rss_bytes": workers_peak,
    }
    if probe is not None:
        result["crossings"] = probe.crossings
        result["pause_latencies_s"] = probe.latencies
    return result


SCENARIOS: dict[str, Callable[[Spec, Progress, asyncio.Event], Awaitable[dict[str, Any]]]] = {
    "raw": passthrough,
    "raw_batch": passthrough,
    "naive": naive,
    "processor": run_processor,
}


def peak_rss_bytes(pid: int | str = "self") -> int:
    """A process's own peak RSS (VmHWM). ``ru_maxrss`` would not do: Linux carries it over
    from the parent across fork and exec, so every worker would report the harness's peak."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if pid == "self" else 0


async def run(spec: Spec) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    progress = Progress()
    extra = await SCENARIOS[spec.scenario](spec, progress, stop)
    return {
        "scenario": spec.scenario,
        "pid": os.getpid(),
        "samples": progress.samples,
        "peak_rss_bytes": peak_rss_bytes() + extra.pop("stage_workers_peak_rss_bytes", 0),
        **extra,
    }


def main(argv: Sequence[str]) -> int:
    spec = Spec(**json.loads(argv[0]))
    result = asyncio.run(run(spec))
    Path(spec.result).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
