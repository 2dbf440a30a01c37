"""Staging and acknowledgement: batches from the buffer through the stage to the outputs, and
their offsets finished once the broker acknowledged every output.

Two tasks and one hand-off. Staging takes a batch, starts computing it and hands it over;
publishing sends each computed batch in order and leaves a task waiting for its
acknowledgement. Sending waits on the producer, computing on a CPU (another core, with
worker processes): overlapping them keeps both busy. The hand-off holds a few batches in
order, and their records still count against the buffer until acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from processor.core.buffer import Chunk, RecordBuffer
from processor.core.commits import Committer
from processor.core.observer import BatchObserver, BatchTrace
from processor.core.ports import Outputs, Stage, Staged, TopicPartition
from processor.core.saves import WindowedBatch
from processor.core.stats import Stats
from processor.core.windowing import Windowing
from processor.errors import DeliveryFailedError, StateError


@dataclass(slots=True)
class _InFlight:
    """A batch being computed, on its way to the outputs."""

    chunks: list[Chunk[TopicPartition]]
    started: float
    trace: BatchTrace
    finished: asyncio.Event  # acknowledged, or failed

    def sent(self) -> _InFlight:
        """The batch once its outputs were acknowledged: its offset ranges, trace and events,
        without its records or their outputs (a batch waiting for its state's next save must
        not hold them: the buffer no longer counts them)."""
        chunks = [replace(chunk, records=()) for chunk in self.chunks]
        return replace(self, chunks=chunks)


_Computing = tuple[_InFlight, "asyncio.Future[Staged]"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A batch's counts, all that its trace and the stats read once it was sent."""

    published: int
    codes: Mapping[str, int]
    readings: None = None

    @classmethod
    def of(cls, staged: Staged) -> Outcome:
        return cls(staged.published, staged.codes)


class Staging:
    """Moves batches of ``buffer`` through ``stage`` to ``outputs`` until the buffer closes."""

    def __init__(
        self,
        buffer: RecordBuffer[TopicPartition],
        stage: Stage,
        outputs: Outputs,
        observer: BatchObserver,
        committer: Committer[TopicPartition],
        *,
        stats: Stats,
        batch_max_records: int,
        fail: Callable[[Exception], None],
        released: Callable[[], None],
        windowing: Windowing | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``fail`` stops the processor for good; ``released`` follows every acknowledgement.
        With ``windowing``, a batch's offsets finish only once its state was persisted."""
        self._buffer = buffer
        self._stage = stage
        self._outputs = outputs
        self._observer = observer
        self._committer = committer
        self._stats = stats
        self._batch_max = batch_max_records
        self._fail = fail
        self._released = released
        self._windowing = windowing
        self._clock = clock
        self._acks: set[asyncio.Task[None]] = set()
        self._unfinished: set[asyncio.Event] = set()  # of the batches taken from the buffer
        self._sent: set[asyncio.Event] = set()  # of those whose acknowledgement is awaited

    async def run(self) -> None:
        """Until the buffer is closed and empty, and every batch taken from it was sent."""
        handoff: asyncio.Queue[_Computing | None] = asyncio.Queue(
            maxsize=1 + self._stage.parallelism
        )
        publishing = asyncio.create_task(self._publish_loop(handoff), name="publish")
        try:
            await self._stage_loop(handoff)
            await handoff.put(None)
            await publishing
        finally:
            publishing.cancel()
            for unsent in self._unfinished - self._sent:  # cancelled: never to be sent
                unsent.set()
            self._unfinished &= self._sent

    async def settled(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for every batch taken from the buffer so far to be
        acknowledged (or to fail): computing, sent or awaiting its acknowledgement. A
        revocation waits for this, so a batch of a revoked partition is never sent, counted
        in its window state or left unfinished after the partition went (unless it is late)."""
        waiting = {asyncio.create_task(event.wait()) for event in self._unfinished}
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=timeout_s)
            for task in late:
                task.cancel()

    async def _stage_loop(self, handoff: asyncio.Queue[_Computing | None]) -> None:
        while chunks := await self._buffer.take(self._batch_max):
            started = self._clock()
            records = [record for chunk in chunks for record in chunk.records]
            trace = self._observer.begin(records, sorted({chunk.tp.partition for chunk in chunks}))
            finished = asyncio.Event()
            self._unfinished.add(finished)
            framing = await self._outputs.framing()
            runs = [(chunk.tp, chunk.records) for chunk in chunks]
            computing = asyncio.ensure_future(
                self._stage.compute(runs, records, trace.stamps, framing)
            )
            await handoff.put((_InFlight(chunks, started, trace, finished), computing))

    async def _publish_loop(self, handoff: asyncio.Queue[_Computing | None]) -> None:
        while (next_batch := await handoff.get()) is not None:
            batch, computing = next_batch
            staged = await computing
            windowed = None
            try:
                if self._windowing is not None:
                    staged, windowed = await self._windowing.apply(batch.chunks, staged)
                acked = await self._outputs.send(staged)
            except DeliveryFailedError as exc:
                self._failed(batch, staged, windowed, exc)
                return
            self._sent.add(batch.finished)
            task = asyncio.create_task(self._acknowledged(batch, staged, acked, windowed))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _acknowledged(
        self, batch: _InFlight, staged: Staged, acked: Any, windowed: WindowedBatch | None
    ) -> None:
        try:
            await acked
            # Out and acknowledged: its records need no room any more, even while its state
            # waits for the next changelog write (which holds back only its offsets).
            for chunk in batch.chunks:
                self._buffer.release(chunk)
            self._released()
            if self._windowing is not None and windowed is not None:
                batch, staged = batch.sent(), Outcome.of(staged)
                await self._windowing.persist(windowed)
        except (DeliveryFailedError, StateError) as exc:
            self._failed(batch, staged, windowed, exc)
            return
        finally:
            _finish(batch, self._unfinished, self._sent)
        for chunk in batch.chunks:
            chunk.tracker.finish(chunk.first, chunk.end)
        self._committer.advanced()
        stats = self._stats
        stats.published += staged.published
        stats.dead_lettered.update(staged.codes)
        stats.batches += 1
        seconds = self._clock() - batch.started
        stats.batch_seconds_total += seconds
        batch.trace.end(staged, seconds, None)

    def _failed(
        self,
        batch: _InFlight,
        staged: Staged,
        windowed: WindowedBatch | None,
        error: DeliveryFailedError | StateError,
    ) -> None:
        """``batch`` will never be finished: the processor stops, and no later batch's
        window state may be saved without this one's."""
        if self._windowing is not None and windowed is not None:
            self._windowing.abandon(windowed)
        _finish(batch, self._unfinished, self._sent)
        batch.trace.end(staged, self._clock() - batch.started, error)
        self._fail(error)


def _finish(batch: _InFlight, *waiting: set[asyncio.Event]) -> None:
    batch.finished.set()
    for events in waiting:
        events.discard(batch.finished)
