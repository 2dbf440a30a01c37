"""One processor: its parts wired together, started, supervised and drained.

::

    input topic ─getmany─▶ Admission ─put─▶ RecordBuffer ─take─▶ Staging ─compute─▶ Stage
         ▲  seek/pause/resume  │   ▲                                  │ send
         │                     ▼   │ replay                           ▼
         └───────────────── SpillStore                           Outputs ─▶ output / DLQ
                                                                     │ broker ack
    Committer ◀── OffsetTracker per partition (lowest unfinished offset) ◀┘
    Rebalance: sets partitions up (seek, adopt spill) and lets them go (commit what finished)

A record is finished only when the broker acknowledged its point or dead letter; commits
never pass an unfinished offset. Overflow that neither memory nor spill can take is handed
back to Kafka by seeking to it, so nothing fetched is ever dropped. The processor talks to
Kafka and the stage only through :mod:`processor.core.ports`:
:func:`processor.wiring.kafka_processor` builds it with the real adapters, the tests with an
in-memory broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from processor.config import Settings
from processor.core.admission import Admission, Trackers
from processor.core.buffer import RecordBuffer
from processor.core.commits import Committer
from processor.core.flow import FlowController, FlowLimits, PauseReason
from processor.core.lifecycle import unless_stopped
from processor.core.memory import MIB, MemoryProbe
from processor.core.observer import BatchObserver, Unobserved
from processor.core.ports import Connection, Connector, Stage, TopicPartition
from processor.core.rebalance import Rebalance
from processor.core.spill import SpillStore
from processor.core.staging import Staging
from processor.core.stats import Stats
from processor.core.windowing import Windowing, windowing_for
from processor.errors import ProcessorError, UndecodableBatchError

log = logging.getLogger(__name__)


class Processor:
    """One consumer-group member. ``await run()`` until ``stop()``; returns an exit code."""

    def __init__(
        self,
        settings: Settings,
        connector: Connector,
        stage: Stage,
        memory: MemoryProbe,
        observer: BatchObserver | None = None,
        *,
        fetch_max_bytes: int,
    ) -> None:
        """``fetch_max_bytes``: the most one fetch returns, which the spill must have room
        for (twice over, as JSONL) before a fetch may take more than memory holds."""
        self.settings = settings
        self.connector = connector
        self.stage = stage
        self.memory = memory
        self.observer = observer or Unobserved()
        self.stats = Stats(buffer_max=settings.buffer_max_records)
        self.stats.memory_budget = memory.budget
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
        self.trackers: Trackers = {}
        self._fetch_max_bytes = fetch_max_bytes
        self._stopping = asyncio.Event()
        self._failure: Exception | None = None
        self._connection: Connection | None = None
        self._parts: _Parts | None = None
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
        return self._parts.admission.paused() if self._parts else {}

    @property
    def parts(self) -> _Parts:
        if self._parts is None:
            raise RuntimeError("the processor is not connected")
        return self._parts

    def attach(self, connection: Connection) -> _Parts:
        """Fetch from, commit to and send through ``connection`` (``start`` attaches the
        connector's); builds the parts that work on it."""
        self._connection = connection
        settings, buffer = self.settings, self.buffer
        admission = Admission(
            connection.consumer,
            self.trackers,
            self.buffer,
            self.spill,
            self.flow,
            stats=self.stats,
            memory_budget=self.memory.budget,
            replay_max=settings.batch_max_records,
            spill_room_needed=2 * self._fetch_max_bytes,
        )
        committer = Committer(
            connection.consumer, self.trackers, self.stats, settings.commit_interval_s
        )
        windowing = windowing_for(
            settings,
            connection.state,
            self.stage,
            committer,
            self.stats,
            waiting=lambda: buffer.queued,
        )
        staging = Staging(
            self.buffer,
            self.stage,
            connection.outputs,
            self.observer,
            committer,
            stats=self.stats,
            batch_max_records=settings.batch_max_records,
            fail=self._fail,
            released=admission.update_gauges,
            windowing=windowing,
        )
        rebalance = Rebalance(
            connection.consumer,
            self.trackers,
            admission,
            committer,
            staging.settled,
            reset_policy=settings.auto_offset_reset,
            settle_timeout_s=settings.shutdown_timeout_s,
            windowing=windowing,
        )
        self._parts = _Parts(connection, admission, rebalance, staging, committer, windowing)
        return self._parts

    # The listener the connector subscribes with: the parts exist by the first rebalance.

    # The Kafka client logs and swallows a listener's exception, so a failed set-up (a window
    # state that cannot be restored) would leave a partition silently unprocessed: stop.

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        await _guarded(self.parts.rebalance.on_revoked(revoked), self._rebalance_failed)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        await _guarded(self.parts.rebalance.on_assigned(assigned), self._rebalance_failed)

    def _rebalance_failed(self, error: Exception) -> None:
        if self.stopping:  # the drain closed the clients under it: nothing is set up, or lost
            log.info("rebalance cut short by the stop", extra={"error": repr(error)})
            return
        if not isinstance(error, ProcessorError):  # a bug: its traceback
            log.error("rebalance failed", exc_info=error)
        self._fail(error)

    async def fetch_once(self) -> None:
        """One round of the fetch loop (see :meth:`Admission.fetch_once`)."""
        await self.parts.admission.fetch_once()

    async def start(self) -> _Parts:
        """The stage, then the connection. Whatever fails, and a cancellation (a stop during
        start-up), closes what had started."""
        try:
            await self.stage.start()  # first: a bad CRS or geofence file is named before
            parts = self.attach(await self.connector.connect(self))  # anything about the cluster
        except BaseException:
            await self._close(self.settings.shutdown_timeout_s)
            raise
        self.connected = True
        log.info("stage placed", extra=self.stage.describe())
        log.info("started: joining the consumer group", extra={"group": self.settings.group_id})
        # What start-up allocated (modules, clients, the stage) lives as long as the process:
        # take it out of the collector's sight, or every full collection walks it again
        # while the stream allocates (full collections 0.36 -> 0.13 s per 600,000 records).
        gc.freeze()
        return parts

    async def run(self) -> int:
        """Process until stopped; 0 after a clean drain (or a stop during start-up), 1 after a
        delivery failure."""
        parts = self._parts or await unless_stopped(self.start, self._stopping)
        if parts is None:
            log.info("stopped during start-up")
            return 0
        self.running = True
        fetching = asyncio.create_task(self._fetch_loop(parts.admission), name="fetch")
        companions = [
            asyncio.create_task(parts.committer.run(), name="commit"),
            asyncio.create_task(self._memory_loop(), name="memory"),
            asyncio.create_task(parts.connection.watch(self.stats), name="broker"),
        ]
        processing = asyncio.create_task(parts.staging.run(), name="process")
        for task in (fetching, *companions, processing):
            task.add_done_callback(self._check_task)
        await self._stopping.wait()
        await self._drain(fetching, processing, companions)
        self.running = False
        if self._failure is not None:
            log.error("stopped after a failure: %s", self._failure)
            return 1
        log.info("stopped cleanly", extra=self.summary())
        return 0

    async def _drain(
        self,
        fetching: asyncio.Task[None],
        processing: asyncio.Task[None],
        companions: list[asyncio.Task[None]],
    ) -> None:
        """Stop fetching, finish what was taken, commit it and close, all by one deadline."""
        log.info("stopping: draining in-flight records")
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        if self.trackers:  # else nothing was fetched, and a group join holds getmany for long
            await asyncio.wait({fetching}, timeout=_left(deadline))
        await _cancel(fetching)
        self.buffer.close()
        await asyncio.wait({processing}, timeout=_left(deadline))
        await _cancel(processing)
        await self.parts.staging.settled(_left(deadline))
        for task in companions:
            await _cancel(task)
        # aiokafka retries a commit for as long as the coordinator answers retriably
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_left(deadline)):
                await self.parts.committer.commit()
        await self._close(_left(deadline))

    def summary(self) -> dict[str, Any]:
        """The run in numbers (logged at stop; read by tests and the benchmark)."""
        return self.stats.summary()

    async def _close(self, within_s: float) -> None:
        """The connection within ``within_s`` seconds, then the stage and the local state."""
        if self._connection is not None:  # attached, or connected and failed right after
            await self._connection.close(within_s)
        await self.stage.close()
        if self._parts is not None and self._parts.windowing is not None:
            self._parts.windowing.close()

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

    async def _fetch_loop(self, admission: Admission) -> None:
        while not self._stopping.is_set():
            try:
                await admission.fetch_once()
            except UndecodableBatchError as exc:  # one line, no traceback; never skipped
                self._fail(exc)
                return
            # getmany returns without suspending while prefetched records remain: yield, or
            # this loop keeps the event loop to itself and staging and publishing starve.
            await asyncio.sleep(0)

    async def _memory_loop(self) -> None:
        while True:
            used = await asyncio.to_thread(self.memory.used)
            self.stats.memory_used = used
            self.stats.peak_memory = max(self.stats.peak_memory, used)
            await asyncio.sleep(self.settings.memory_sample_interval_s)


@dataclass(frozen=True, slots=True)
class _Parts:
    """The parts that work on a connection, built together by :meth:`Processor.attach`."""

    connection: Connection
    admission: Admission
    rebalance: Rebalance
    staging: Staging
    committer: Committer[TopicPartition]
    windowing: Windowing | None


async def _guarded(step: Awaitable[None], failed: Callable[[Exception], None]) -> None:
    try:
        await step
    except Exception as exc:
        failed(exc)


def _left(deadline: float) -> float:
    return max(0.01, deadline - time.monotonic())


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # failures already logged
        await task
