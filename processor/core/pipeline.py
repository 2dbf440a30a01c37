"""The asyncio wiring of one processor: fetch, admit, process, publish, acknowledge, commit.

::

    input topic ─getmany─▶ fetch loop ─admit─▶ RecordBuffer ─take─▶ process loop
         ▲                   │    ▲                                  │ SpatialStage (batch)
         │ pause/resume      │    │ replay                           ▼
         └── FlowController ◀┘    └── SpillStore ◀── overflow     Publisher ─▶ output / DLQ
                                                                     │ broker ack
    commit loop ◀── OffsetTracker (lowest unfinished offset) ◀───────┘

A record is finished only when the broker acknowledged its point or dead letter; commits
never pass an unfinished offset. Overflow that neither memory nor spill can take is handed
back to Kafka by seeking to it, so nothing fetched is ever dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from processor.config import Settings
from processor.core.buffer import Chunk, RecordBuffer
from processor.core.commits import Committer
from processor.core.flow import FlowController, FlowLimits, FlowSnapshot, PauseReason
from processor.core.lifecycle import unless_stopped
from processor.core.memory import MIB, MemoryProbe, find_cgroup
from processor.core.observer import BatchObserver, BatchTrace, Unobserved
from processor.core.offsets import OffsetTracker
from processor.core.spill import SpillStore
from processor.core.stats import Stats
from processor.errors import (
    ConfigError,
    DeliveryFailedError,
    SpillError,
    UndecodableBatchError,
)
from processor.kafka.broker_watch import BrokerWatch
from processor.kafka.clients import fetch_bytes, make_consumer, make_producer
from processor.kafka.preflight import check_cluster, unreachable
from processor.kafka.probe import broker_probe
from processor.kafka.publisher import Publisher
from processor.messages.jobs import Framed, Job
from processor.workers.runner import make_runner

log = logging.getLogger(__name__)
_FETCH_TIMEOUT_MS = 100


def _where(tp: TopicPartition, **extra: Any) -> dict[str, Any]:
    return {"topic": tp.topic, "partition": tp.partition, **extra}


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: Processor) -> None:
        self._processor = processor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._processor.stats.joining = True  # called as every (re)join begins
        await self._processor.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._processor.on_assigned(assigned)
        self._processor.stats.assignments += 1  # joined, even with nothing assigned
        self._processor.stats.joining = False


class Processor:
    """One consumer-group member. ``await run()`` until ``stop()``; returns an exit code."""

    def __init__(
        self,
        settings: Settings,
        memory: MemoryProbe | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.settings = settings
        self.observer = observer or Unobserved()
        self.stats = Stats(buffer_max=settings.buffer_max_records)
        self.memory = memory or MemoryProbe(settings.memory_limit_mb, find_cgroup())
        self.runner = make_runner(settings, self.memory)
        self.stats.memory_budget = self.memory.budget
        self.flow: FlowController[TopicPartition] = FlowController(
            FlowLimits(
                buffer_max=settings.buffer_max_records,
                buffer_high=settings.buffer_high,
                buffer_low=settings.buffer_low,
                memory_high=settings.memory_high,
                memory_resume=settings.memory_resume,
                trickle=settings.batch_max_records,
            )
        )
        self.spill = SpillStore(
            settings.spill_dir, settings.spill_max_bytes, settings.spill_min_free_mb * MIB
        )
        self.buffer: RecordBuffer[TopicPartition] = RecordBuffer()
        self.broker = BrokerWatch(
            self.stats,
            settings.unreachable_after_s,
            {"bootstrap_servers": settings.bootstrap_servers, "group": settings.group_id},
        )
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._committer: Committer[TopicPartition] | None = None
        #: Spill room below which a fetch takes only what memory can hold: a fetch response
        #: of ``fetch_max_bytes`` overflows into at most about twice its size of JSONL.
        self._spill_room_needed = 2 * fetch_bytes(settings, self.memory.budget)[0]
        self._spill_refusal: str | None = None
        self._applied: dict[TopicPartition, frozenset[PauseReason]] = {}
        self._acks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._failure: Exception | None = None
        self._consumer: Any = None
        self._publisher: Publisher | None = None
        self._producers: list[Any] = []
        self.connected = False
        self.running = False

    # lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful drain (safe to call from a signal handler)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def paused(self) -> dict[TopicPartition, frozenset[PauseReason]]:
        """Partitions paused now, with their reasons (for the live view)."""
        return {tp: reasons for tp, reasons in self._applied.items() if reasons}

    def attach(self, consumer: Any) -> None:
        """Fetch from and commit to ``consumer`` (``start`` attaches a Kafka consumer)."""
        self._consumer = consumer
        self._committer = Committer(
            consumer, self._trackers, self.stats, self.settings.commit_interval_s
        )

    async def start(self) -> Publisher:
        """Stage workers, the cluster check and the clients. Whatever fails, and a
        cancellation (a stop during start-up), closes what had started."""
        try:
            return await self._start()
        except BaseException:
            await self._close_clients(self.settings.shutdown_timeout_s)
            raise

    async def _start(self) -> Publisher:
        settings = self.settings
        client_log = logging.getLogger("aiokafka")
        level = client_log.level
        client_log.setLevel(logging.CRITICAL)  # our one-line errors say it better
        try:
            await self.runner.start()  # first: a bad CRS or geofence file is named before
            await check_cluster(settings)  # anything about the cluster
            self._producers = [make_producer(settings) for _ in range(settings.producers)]
            self.attach(make_consumer(settings, self.memory.budget))
            for producer in self._producers:
                await producer.start()
            await self._consumer.start()
        except KafkaConnectionError:  # the check passed a moment ago: the cluster went away
            raise unreachable(settings, "lost while the clients started") from None
        finally:
            client_log.setLevel(level)
        self._publisher = Publisher(
            self._producers,
            settings.max_batch_bytes,
            settings.compression_type,
            settings.aiokafka_fast_paths,
        )
        for name in ("output_topic", "dlq_topic"):
            topic = getattr(settings, name)
            try:
                await asyncio.wait_for(self._publisher.partitioner(topic), timeout=15)
            except (TimeoutError, KafkaError, TypeError):
                raise ConfigError(
                    f"invalid setting PROCESSOR_{name.upper()} (--{name.replace('_', '-')}): "
                    f"topic {topic!r} does not exist or is not reachable"
                ) from None
        self._consumer.subscribe([settings.input_topic], listener=_Rebalance(self))
        self.connected = True
        log.info("stage placed", extra=self.runner.describe())
        log.info("started: joining the consumer group", extra={"group": settings.group_id})
        # What start-up allocated (modules, clients, the stage) lives as long as the process:
        # take it out of the collector's sight, or every full collection walks it again
        # while the stream allocates (full collections 0.36 -> 0.13 s per 600,000 records).
        gc.freeze()
        return self._publisher

    async def run(self) -> int:
        """Process until stopped; 0 after a clean drain (or a stop during start-up), 1 after a
        delivery failure."""
        publisher = self._publisher
        if publisher is None:
            publisher = await unless_stopped(self.start, self._stopping)
        if publisher is None:
            log.info("stopped during start-up")
            return 0
        self.running = True
        tasks = [
            asyncio.create_task(self._fetch_loop(), name="fetch"),
            asyncio.create_task(self._commits.run(), name="commit"),
            asyncio.create_task(self._memory_loop(), name="memory"),
            asyncio.create_task(
                self.broker.run(broker_probe(self._consumer, self.settings.aiokafka_fast_paths)),
                name="broker",
            ),
        ]
        processing = asyncio.create_task(self._process_loop(publisher), name="process")
        for task in (*tasks, processing):
            task.add_done_callback(self._check_task)
        await self._stopping.wait()
        log.info("stopping: draining in-flight records")
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        if self._trackers:  # else nothing was fetched, and a group join holds getmany for long
            await asyncio.wait({tasks[0]}, timeout=self._left(deadline))
        await self._cancel(tasks[0])
        self.buffer.close()
        await asyncio.wait({processing}, timeout=self._left(deadline))
        await self._cancel(processing)
        if self._acks:
            await asyncio.wait(set(self._acks), timeout=self._left(deadline))
        for task in tasks[1:]:
            await self._cancel(task)
        # aiokafka retries a commit for as long as the coordinator answers retriably
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._commits.commit(), self._left(deadline))
        await self._close_clients(self._left(deadline))
        self.running = False
        if self._failure is not None:
            log.error("stopped after a failure: %s", self._failure)
            return 1
        log.info("stopped cleanly", extra=self.summary())
        return 0

    def summary(self) -> dict[str, Any]:
        """The run in numbers (logged at stop; read by tests and the benchmark)."""
        stats = self.stats
        return {
            "consumed": stats.consumed,
            "published": stats.published,
            "dead_lettered": stats.dead_lettered_total,
            "spilled": stats.spilled,
            "replayed": stats.replayed,
            "handed_back": stats.handed_back,
            "pauses": dict(stats.pauses),
            "peak_buffered": stats.peak_buffered,
            "buffer_max": stats.buffer_max,
            "peak_memory_mb": round(stats.peak_memory / MIB, 1),
            "memory_budget_mb": round(stats.memory_budget / MIB, 1),
        }

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.01, deadline - time.monotonic())

    @staticmethod
    async def _cancel(task: asyncio.Task[Any]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # failures already logged
            await task

    async def _close_clients(self, within_s: float) -> None:
        """Stop the clients within ``within_s`` seconds, then the stage. A consumer stopped
        while it joins its group waits for the join's answer (half the session timeout on
        Tansu, up to the rebalance timeout on Kafka): past the timeout it is left, and the
        broker drops the member when its session expires."""
        clients = [client for client in (self._consumer, *self._producers) if client is not None]
        stopping = [asyncio.ensure_future(client.stop()) for client in clients]
        if stopping:
            _, late = await asyncio.wait(stopping, timeout=within_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*stopping, return_exceptions=True)  # failures: closing anyway
            if late:
                log.warning("kafka clients not closed within %.1f s; left to the broker", within_s)
        await self.runner.close()

    def _check_task(self, task: asyncio.Task[Any]) -> None:
        """A loop that dies of a bug must stop the processor, not leave it silently wedged."""
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error("%s loop crashed", task.get_name(), exc_info=error)
            self._fail(error)  # type: ignore[arg-type]

    def _fail(self, error: Exception) -> None:
        if self._failure is None:
            self._failure = error
            log.error("fatal: %s", error)
        self.stop()

    # rebalance -------------------------------------------------------------------------

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Set each partition up: its work starts at the committed offset (else where the
        reset policy points), continuing after any spill an earlier process left."""
        for tp in sorted(assigned):
            committed = await self._consumer.committed(tp)
            start = committed if committed is not None else await self._reset_offset(tp)
            resume_at = await asyncio.to_thread(
                self.spill.recover, tp.topic, tp.partition, committed
            )
            tracker = OffsetTracker(start)
            if resume_at is not None:
                tracker.track(start, resume_at)
                log.info("replaying leftover spill", extra=_where(tp, offset=start))
            # Seek and set up with no await in between: a run fetched before this point
            # belongs to no set-up of this partition, and _admit drops it (the fetch loop
            # may hold one while it awaits a spill write).
            self._consumer.seek(tp, start if resume_at is None else resume_at)
            self._trackers[tp] = tracker
            self._commits.adopt(tp, committed)
            self._applied.pop(tp, None)
        self.stats.assigned = len(self._trackers)
        log.info("partitions assigned", extra={"partitions": _names(assigned)})
        self._apply_flow()

    async def _reset_offset(self, tp: TopicPartition) -> int:
        """Where a partition without a committed offset starts, per ``auto_offset_reset``."""
        if self.settings.auto_offset_reset == "latest":
            offsets = await self._consumer.end_offsets([tp])
        else:
            offsets = await self._consumer.beginning_offsets([tp])
        return int(offsets[tp])

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        revoked = {tp for tp in revoked if tp in self._trackers}
        for tp in revoked:
            self.buffer.drop(tp)
            await asyncio.to_thread(self.spill.discard, tp.topic, tp.partition)
        pending = {task for task in self._acks if not task.done()}
        if pending:
            await asyncio.wait(pending, timeout=self.settings.shutdown_timeout_s)
        await self._commits.commit(revoked)
        for tp in revoked:
            del self._trackers[tp]
            self._applied.pop(tp, None)
        self._commits.forget(revoked)
        self.flow.forget(revoked)
        self.stats.assigned = len(self._trackers)
        log.info("partitions revoked", extra={"partitions": _names(revoked)})

    # fetching and flow control ---------------------------------------------------------

    @property
    def _commits(self) -> Committer[TopicPartition]:
        if self._committer is None:
            raise RuntimeError("the processor has not been started")
        return self._committer

    async def _fetch_loop(self) -> None:
        while not self._stopping.is_set():
            await self.fetch_once()
            # getmany returns without suspending while prefetched records remain: yield, or
            # this loop keeps the event loop to itself and staging and publishing starve.
            await asyncio.sleep(0)

    async def fetch_once(self) -> None:
        """One round of the fetch loop: reconcile pauses, replay spill, fetch, admit."""
        self.stats.last_loop = time.monotonic()
        self._apply_flow()
        await self._replay()
        # Everything prefetched at once (bounded by the fetch size), so that the memory room
        # is shared among the partitions of the fetch, not taken by the first; but while the
        # spill could not take the overflow, no more than memory can hold: the rest waits in
        # the client (within the budgeted fetch size) instead of a hand-back and a re-fetch.
        limit = None if self._spill_open() else max(1, self.flow.room(self._snapshot()))
        try:
            fetched = await self._consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS, max_records=limit)
        except UndecodableBatchError as exc:  # one line, no traceback; never skipped
            self._fail(exc)
            return
        setups = {tp: self._trackers.get(tp) for tp in fetched}  # before any await
        counts = {tp: len(records) for tp, records in fetched.items()}
        allowed = self.flow.memory_split(counts, self._snapshot())
        for tp, records in fetched.items():
            await self._admit(tp, records, allowed[tp], setups[tp])
        self._apply_flow()

    def _spill_open(self) -> bool:
        """Whether the spill has room for a fetch's overflow; says so when that changes."""
        refusal = self.spill.refusal(self._spill_room_needed)
        if refusal != self._spill_refusal:
            if refusal is None:
                log.info("spill has room again; fetching ahead of memory")
            else:
                log.warning(
                    "spill cannot take records (%s): fetching only what memory holds", refusal
                )
            self._spill_refusal = refusal
        return refusal is None

    def _snapshot(self) -> FlowSnapshot[TopicPartition]:
        spilled = {TopicPartition(t, p) for t, p in self.spill.partitions()}
        return FlowSnapshot(
            assigned=frozenset(self._trackers),
            buffered=self.buffer.buffered,
            held=self.buffer.held(),
            memory_used=self.stats.memory_used,
            memory_budget=self.memory.budget,
            spilled=frozenset(spilled),
        )

    def _apply_flow(self) -> None:
        desired = self.flow.decide(self._snapshot())
        for tp, reasons in desired.items():
            current = self._applied.get(tp, frozenset())
            if reasons == current:
                continue
            if reasons and not current:
                self._consumer.pause(tp)
            elif current and not reasons:
                self._consumer.resume(tp)
            for reason in reasons - current:
                self.stats.pauses[reason] += 1
                log.info("pause", extra=_where(tp, reason=reason.value))
            for reason in current - reasons:
                self.stats.resumes[reason] += 1
                log.info("resume", extra=_where(tp, reason=reason.value))
            self._applied[tp] = reasons
        self.stats.paused_by_reason.clear()
        for reasons in self._applied.values():
            self.stats.paused_by_reason.update(reasons)
        self._update_gauges()

    def _update_gauges(self) -> None:
        stats = self.stats
        stats.buffered = self.buffer.buffered
        stats.peak_buffered = max(stats.peak_buffered, stats.buffered)
        stats.spill_records = self.spill.records
        stats.spill_bytes = self.spill.bytes

    async def _admit(
        self,
        tp: TopicPartition,
        records: Sequence[Any],
        allowed: int,
        fetched_for: OffsetTracker | None,
    ) -> None:
        """Split a run fetched for the set-up ``fetched_for``, in offset order: memory (up to
        ``allowed`` records), then spill, then back to Kafka."""
        if not records:
            return
        tracker = self._trackers.get(tp)
        if tracker is None:
            if tp in self._consumer.assignment():
                # Assigned, but the rebalance listener has not set it up yet: hand the run
                # back, or its offsets would be skipped by later commits.
                self._consumer.seek(tp, records[0].offset)
            return  # otherwise revoked while fetched: the new owner reads them again
        if tracker is not fetched_for:
            # Set up (again) since the fetch, which sought the partition to where its work
            # starts; this run is from before, and may overlap a spill the set-up adopted.
            log.debug("dropping a run fetched before set-up", extra=_where(tp))
            return
        in_memory = min(len(records), allowed, self.flow.memory_room(tp, self._snapshot()))
        spilled = 0
        if in_memory < len(records):
            spilled = await asyncio.to_thread(
                self.spill.append, tp.topic, tp.partition, records[in_memory:]
            )
            if self._trackers.get(tp) is not tracker:  # revoked during the write
                await asyncio.to_thread(self.spill.discard, tp.topic, tp.partition)
                return
        kept = in_memory + spilled
        if kept:
            end = records[kept - 1].offset + 1
            tracker.track(records[0].offset, end)
            self.stats.consumed += kept
        if in_memory:
            cut = records[in_memory].offset if in_memory < kept else end
            self.buffer.put(Chunk(tp, records[:in_memory], records[0].offset, cut, tracker))
            self._apply_flow()  # pause as soon as a watermark is crossed, not after the fetch
        if spilled:
            self.stats.spilled += spilled
            log.info("spilled", extra=_where(tp, offset=records[in_memory].offset, records=spilled))
        if kept < len(records):
            self.flow.handed_back(tp)
            self._consumer.seek(tp, records[kept].offset)
            self.stats.handed_back += len(records) - kept
            log.info(
                "handed back to kafka",
                extra=_where(tp, offset=records[kept].offset, records=len(records) - kept),
            )
        self._update_gauges()

    async def _replay(self) -> None:
        for topic, partition in sorted(self.spill.partitions()):
            tp = TopicPartition(topic, partition)
            tracker = self._trackers.get(tp)
            room = min(self.flow.replay_room(self._snapshot()), self.settings.batch_max_records)
            if tracker is None or room <= 0:
                continue
            try:
                pieces = await asyncio.to_thread(self.spill.read, topic, partition, room)
            except SpillError as exc:
                log.warning("spill unreadable, re-reading from kafka: %s", exc, extra=_where(tp))
                await self._restart_partition(tp)
                continue
            if self._trackers.get(tp) is not tracker:
                continue
            for piece in pieces:
                self.buffer.put(Chunk(tp, piece.records, piece.first, piece.end, tracker))
                self.stats.replayed += len(piece.records)
            self._apply_flow()

    async def _restart_partition(self, tp: TopicPartition) -> None:
        """Forget everything held for ``tp`` and fetch again from its commit point."""
        old = self._trackers[tp]
        self.buffer.drop(tp)
        await asyncio.to_thread(self.spill.discard, tp.topic, tp.partition)
        start = old.commit_point()
        self._consumer.seek(tp, start)
        self._trackers[tp] = OffsetTracker(start)

    # processing ------------------------------------------------------------------------

    async def _process_loop(self, publisher: Publisher) -> None:
        """Stage batches while earlier ones are being published: two tasks, one hand-off.

        Publishing waits on the producer (one batch in flight per partition), staging on the
        CPU (another core, with stage processes); overlapping them keeps both busy. The
        hand-off holds a few batches in submission order, and their records still count
        against the buffer until acknowledged.
        """
        staged: asyncio.Queue[_Staged | None] = asyncio.Queue(maxsize=1 + self.runner.parallelism)
        publishing = asyncio.create_task(self._publish_loop(publisher, staged), name="publish")
        try:
            await self._stage_loop(publisher, staged)
            await staged.put(None)
            await publishing
        finally:
            publishing.cancel()

    async def _stage_loop(
        self, publisher: Publisher, staged: asyncio.Queue[_Staged | None]
    ) -> None:
        delay = self.settings.stage_delay_ms / 1000
        while True:
            chunks = await self.buffer.take(self.settings.batch_max_records)
            if not chunks:
                return
            started = time.perf_counter()
            records = [record for chunk in chunks for record in chunk.records]
            trace = self.observer.begin(records, sorted({chunk.tp.partition for chunk in chunks}))
            if delay:
                await asyncio.sleep(delay)
            job = Job(
                await publisher.spec(self.settings.output_topic),
                await publisher.spec(self.settings.dlq_topic),
                trace.stamps,
            )
            for chunk in chunks:
                job.extend(chunk.tp.topic, chunk.tp.partition, chunk.records)
            computing = asyncio.ensure_future(self.runner.compute(job))
            await staged.put(_Staged(chunks, computing, started, trace))

    async def _publish_loop(
        self, publisher: Publisher, staged: asyncio.Queue[_Staged | None]
    ) -> None:
        while (batch := await staged.get()) is not None:
            result = await batch.computing
            try:
                futures = await publisher.send(self.settings.output_topic, result.points)
                futures += await publisher.send(self.settings.dlq_topic, result.letters)
            except KafkaError as exc:
                batch.trace.end(result, time.perf_counter() - batch.started, exc)
                self._fail(DeliveryFailedError(f"cannot produce: {exc!r}"))
                return
            task = asyncio.create_task(
                self._acknowledged(batch.chunks, futures, result, batch.started, batch.trace)
            )
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _acknowledged(
        self,
        chunks: list[Chunk[TopicPartition]],
        futures: list[asyncio.Future[Any]],
        result: Framed,
        started: float,
        trace: BatchTrace,
    ) -> None:
        try:
            await asyncio.gather(*futures)
        except KafkaError as exc:
            trace.end(result, time.perf_counter() - started, exc)
            self._fail(DeliveryFailedError(f"broker did not acknowledge a batch: {exc!r}"))
            return
        for chunk in chunks:
            chunk.tracker.finish(chunk.first, chunk.end)
            self.buffer.release(chunk)
        self._commits.advanced()
        stats = self.stats
        stats.published += result.published
        stats.dead_lettered.update(result.codes)
        stats.batches += 1
        seconds = time.perf_counter() - started
        stats.batch_seconds_total += seconds
        self._update_gauges()
        trace.end(result, seconds, None)

    # memory ----------------------------------------------------------------

    async def _memory_loop(self) -> None:
        while True:
            used = await asyncio.to_thread(self.memory.used)
            self.stats.memory_used = used
            self.stats.peak_memory = max(self.stats.peak_memory, used)
            await asyncio.sleep(self.settings.memory_sample_interval_s)


@dataclass(slots=True)
class _Staged:
    """A batch being processed, on its way to the producer."""

    chunks: list[Chunk[TopicPartition]]
    computing: asyncio.Future[Framed]
    started: float
    trace: BatchTrace


def _names(partitions: set[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)]
