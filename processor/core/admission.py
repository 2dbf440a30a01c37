"""Admission: fetched records into memory, the spill or back to Kafka, and partitions paused
or resumed as the flow controller decides.

One fetch round reconciles pauses, replays spilled records while memory has room, fetches,
and splits each partition's run in offset order: memory first (as much as its share of the
room), then the spill, then back to Kafka by seeking to the first record kept nowhere. A run
is admitted only into the set-up it was fetched for (:class:`OffsetTracker` identity): a
partition set up again since the fetch was sought to where its work starts, and a run from
before may overlap what the new set-up adopted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from processor.core.buffer import Chunk, RecordBuffer
from processor.core.flow import FlowController, FlowSnapshot, PauseReason
from processor.core.offsets import OffsetTracker
from processor.core.ports import Consumer, TopicPartition
from processor.core.spill import SpillStore
from processor.core.stats import Stats
from processor.errors import SpillError
from processor.messages.codec import RecordLike

log = logging.getLogger(__name__)
_FETCH_TIMEOUT_MS = 100
Trackers = dict[TopicPartition, OffsetTracker]


def where(tp: TopicPartition, **extra: Any) -> dict[str, Any]:
    """A partition as log fields."""
    return {"topic": tp.topic, "partition": tp.partition, **extra}


class Admission:
    """Fills the buffer from ``consumer`` for the partitions set up in ``trackers``."""

    def __init__(
        self,
        consumer: Consumer,
        trackers: Trackers,
        buffer: RecordBuffer[TopicPartition],
        spill: SpillStore,
        flow: FlowController[TopicPartition],
        *,
        stats: Stats,
        memory_budget: int,
        replay_max: int,
        spill_room_needed: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.trackers = trackers
        self.buffer = buffer
        self.spill = spill
        self.flow = flow
        self.stats = stats
        self._memory_budget = memory_budget
        self._replay_max = replay_max
        #: Spill room below which a fetch takes only what memory can hold.
        self._spill_room_needed = spill_room_needed
        self._clock = clock
        self._spill_refusal: str | None = None
        self._applied: dict[TopicPartition, frozenset[PauseReason]] = {}

    def paused(self) -> dict[TopicPartition, frozenset[PauseReason]]:
        """Partitions paused now, with their reasons."""
        return {tp: reasons for tp, reasons in self._applied.items() if reasons}

    def forget(self, partitions: set[TopicPartition]) -> None:
        """``partitions`` were set up anew or revoked: whatever pause they had is gone."""
        for tp in partitions:
            self._applied.pop(tp, None)

    async def fetch_once(self) -> None:
        """One round: reconcile pauses, replay spill, fetch, admit. Raises
        UndecodableBatchError for an input batch that cannot be decoded (it is never skipped)."""
        self.stats.last_loop = self._clock()
        self.reconcile()
        await self.replay()
        # Everything prefetched at once (bounded by the fetch size), so that the memory room
        # is shared among the partitions of the fetch, not taken by the first; but while the
        # spill could not take the overflow, no more than memory can hold: the rest waits in
        # the client (within the budgeted fetch size) instead of a hand-back and a re-fetch.
        limit = None if self._spill_open() else max(1, self.flow.room(self.snapshot()))
        fetched = await self.consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS, max_records=limit)
        setups = {tp: self.trackers.get(tp) for tp in fetched}  # before any await
        counts = {tp: len(records) for tp, records in fetched.items()}
        allowed = self.flow.memory_split(counts, self.snapshot())
        for tp, records in fetched.items():
            await self.admit(tp, records, allowed[tp], setups[tp])
        self.reconcile()

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

    def snapshot(self) -> FlowSnapshot[TopicPartition]:
        spilled = {TopicPartition(t, p) for t, p in self.spill.partitions()}
        return FlowSnapshot(
            assigned=frozenset(self.trackers),
            buffered=self.buffer.buffered,
            held=self.buffer.held(),
            memory_used=self.stats.memory_used,
            memory_budget=self._memory_budget,
            spilled=frozenset(spilled),
        )

    def reconcile(self) -> None:
        """Pause and resume partitions to match the flow controller's decision."""
        desired = self.flow.decide(self.snapshot())
        for tp, reasons in desired.items():
            current = self._applied.get(tp, frozenset())
            if reasons == current:
                continue
            if reasons and not current:
                self.consumer.pause(tp)
            elif current and not reasons:
                self.consumer.resume(tp)
            for reason in reasons - current:
                self.stats.pauses[reason] += 1
                log.info("pause", extra=where(tp, reason=reason.value))
            for reason in current - reasons:
                self.stats.resumes[reason] += 1
                log.info("resume", extra=where(tp, reason=reason.value))
            self._applied[tp] = reasons
        self.stats.paused_by_reason.clear()
        for reasons in self._applied.values():
            self.stats.paused_by_reason.update(reasons)
        self.update_gauges()

    def update_gauges(self) -> None:
        stats = self.stats
        stats.buffered = self.buffer.buffered
        stats.peak_buffered = max(stats.peak_buffered, stats.buffered)
        stats.spill_records = self.spill.records
        stats.spill_bytes = self.spill.bytes

    async def admit(
        self,
        tp: TopicPartition,
        records: Sequence[RecordLike],
        allowed: int,
        fetched_for: OffsetTracker | None,
    ) -> None:
        """Split a run fetched for the set-up ``fetched_for``, in offset order: memory (up to
        ``allowed`` records), then spill, then back to Kafka."""
        if not records:
            return
        tracker = self.trackers.get(tp)
        if tracker is None:
            if tp in self.consumer.assignment():
                # Assigned, but the rebalance listener has not set it up yet: hand the run
                # back, or its offsets would be skipped by later commits.
                self.consumer.seek(tp, records[0].offset)
            return  # otherwise revoked while fetched: the new owner reads them again
        if tracker is not fetched_for:
            log.debug("dropping a run fetched before set-up", extra=where(tp))
            return
        in_memory = min(len(records), allowed, self.flow.memory_room(tp, self.snapshot()))
        spilled = 0
        if in_memory < len(records):
            spilled = await asyncio.to_thread(
                self.spill.append, tp.topic, tp.partition, records[in_memory:]
            )
            if self.trackers.get(tp) is not tracker:  # revoked during the write
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
            self.reconcile()  # pause as soon as a watermark is crossed, not after the fetch
        if spilled:
            self.stats.spilled += spilled
            log.info("spilled", extra=where(tp, offset=records[in_memory].offset, records=spilled))
        if kept < len(records):
            self._hand_back(tp, records[kept].offset, len(records) - kept)
        self.update_gauges()

    def _hand_back(self, tp: TopicPartition, offset: int, count: int) -> None:
        self.flow.handed_back(tp)
        self.consumer.seek(tp, offset)
        self.stats.handed_back += count
        log.info("handed back to kafka", extra=where(tp, offset=offset, records=count))

    async def replay(self) -> None:
        """Spilled records back into the buffer, oldest first, while memory has room."""
        for topic, partition in sorted(self.spill.partitions()):
            tp = TopicPartition(topic, partition)
            tracker = self.trackers.get(tp)
            room = min(self.flow.replay_room(self.snapshot()), self._replay_max)
            if tracker is None or room <= 0:
                continue
            try:
                pieces = await asyncio.to_thread(self.spill.read, topic, partition, room)
            except SpillError as exc:
                log.warning("spill unreadable, re-reading from kafka: %s", exc, extra=where(tp))
                await self._restart_partition(tp)
                continue
            if self.trackers.get(tp) is not tracker:
                continue
            for piece in pieces:
                self.buffer.put(Chunk(tp, piece.records, piece.first, piece.end, tracker))
                self.stats.replayed += len(piece.records)
            self.reconcile()

    async def _restart_partition(self, tp: TopicPartition) -> None:
        """Forget everything held for ``tp`` and fetch again from its commit point."""
        old = self.trackers[tp]
        self.buffer.drop(tp)
        await asyncio.to_thread(self.spill.discard, tp.topic, tp.partition)
        start = old.commit_point()
        self.consumer.seek(tp, start)
        self.trackers[tp] = OffsetTracker(start)
