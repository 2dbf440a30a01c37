"""The window state in the engine: restored when a partition is assigned, applied to each
computed batch before it is sent, persisted once the batch's outputs are acknowledged, and
dropped when the partition goes (docs/state.md has the order and why it is safe).

Per batch, in the order batches are sent: :meth:`Windowing.apply` counts the batch's readings
in each partition's :class:`~processor.state.windows.PartitionWindows`, turns duplicates into
dead letters (through the stage, which framed the points) and queues the closed windows'
aggregates; a few times a second it also takes a snapshot: the rows of the sensors changed
since the last one. :meth:`Windowing.persist`, after the batch's points and dead letters were
acknowledged, waits for the aggregates, for the batch before it and for a snapshot that covers
it and writes the rows to the changelog; once they are acknowledged the batch's offsets may be
finished (the local store copies the acknowledged rows once a second). A batch
whose partition was revoked (or assigned again) since it was fetched leaves the state alone:
the partition's new owner reads its records again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any, TypeVar

import msgspec
import numpy as np

from processor.config import Settings
from processor.core.buffer import Chunk
from processor.core.commits import Committer
from processor.core.offsets import OffsetTracker
from processor.core.partition_state import BatchFlags, PartitionState, StateSpec
from processor.core.ports import Row, Stage, Staged, StateTopics, TopicPartition
from processor.core.saves import Unsaved, WindowedBatch
from processor.core.stats import Stats
from processor.errors import ConfigError, DeliveryFailedError, StateError
from processor.messages.codec import DeadLetterCode
from processor.state.aggregates import Aggregates
from processor.state.spec import Verdict, WindowSpec
from processor.state.store import LocalStore

log = logging.getLogger(__name__)
T = TypeVar("T")
_encode = msgspec.json.Encoder().encode

#: How often the local store takes the rows its partitions' changelogs acknowledged since its
#: last write (also when a partition goes, and at the stop). A store behind its changelog is
#: what a restore expects (it reads the changelog from where the store stopped), so writing it
#: once a second instead of once a batch costs only a longer read after a crash, and saves a
#: durable write and a Python loop over the rows per batch.
STORE_EVERY_S = 1.0


class Windowing:
    """Each owned partition's state (windows, QC), in step with its changelog and local store."""

    def __init__(
        self,
        spec: StateSpec,
        topics: StateTopics,
        store: LocalStore,
        stage: Stage,
        *,
        trackers: Mapping[TopicPartition, OffsetTracker],
        committed: Mapping[TopicPartition, int],
        stats: Stats,
        save_every_s: float = 0.0,
        waiting: Callable[[], int] | None = None,
        cleanup_delay_s: float,
    ) -> None:
        """``trackers``: each owned partition's live set-up (a batch fetched under another is
        stale); ``committed``: what this member committed per partition (closed windows before it
        are released); ``save_every_s``: the least time between two changelog writes (the batches
        acknowledged meanwhile are saved together, each sensor's row once), not waited out when
        no record ``waiting()`` in the buffer could join; ``cleanup_delay_s``: how long a
        partition's local store outlives its going."""
        self._spec = spec
        self._topics = topics
        self._store = store
        self._stage = stage
        self._trackers = trackers
        self._committed = committed
        self._stats = stats
        self._states: dict[TopicPartition, PartitionState] = {}
        self._unsaved = Unsaved(self._states, committed, save_every_s)
        self._saving = asyncio.Lock()
        self._saved_at = -math.inf
        self._waiting = waiting
        self._cleanup_delay_s = cleanup_delay_s
        self._idle = asyncio.Event()  # every batch applied is acknowledged, none waits
        self._store_lock = asyncio.Lock()
        #: Per partition: rows the changelog acknowledged and the store has not taken, their end.
        self._unstored: dict[TopicPartition, tuple[dict[bytes, bytes], int]] = {}
        self._stored_at = time.monotonic()

    async def restore(self, tp: TopicPartition) -> None:
        """The partition's state as last persisted: the local store, then the changelog from
        where the store stopped (all of it when the store is behind a recreated topic)."""
        started = time.monotonic()
        stored, meta = await self._on_store(self._store.read, tp.topic, tp.partition)
        since = 0 if meta is None else int.from_bytes(meta, "big")
        tail, end = await self._topics.read_changelog(tp, since)
        if since > end:
            log.warning(
                "local state is ahead of its changelog: rebuilding it from the changelog",
                extra={"partition": f"{tp.topic}[{tp.partition}]", "stored": since, "end": end},
            )
            await self._on_store(self._store.drop, tp.topic, tp.partition)
            stored, _ = await self._on_store(self._store.read, tp.topic, tp.partition)
            tail, end = await self._topics.read_changelog(tp, 0)
        state = await asyncio.to_thread(PartitionState.from_rows, self._spec, chain(stored, tail))
        if tail:  # the next restore on this volume starts from here
            await self._on_store(_save, self._store, tp, tail, end)
        self._states[tp] = state
        self._update_gauges()
        log.info(
            "state restored",
            extra={
                "partition": f"{tp.topic}[{tp.partition}]",
                "sensors": state.sensors(),
                "stored_rows": len(stored),
                "changelog_rows": len(tail),
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    async def sweep(self) -> None:
        """Drop the local stores of partitions gone for longer than the cleanup delay."""
        owned = {(tp.topic, tp.partition) for tp in self._states}
        if swept := await self._on_store(self._store.sweep, owned, self._cleanup_delay_s):
            gone = [f"{topic}[{partition}]" for topic, partition in swept]
            log.info("local state of partitions gone for long dropped", extra={"partitions": gone})

    async def drop(self, tp: TopicPartition) -> None:
        """The partition went: its state stays in the changelog and the local store, whose
        database is closed (its memtables go)."""
        self._states.pop(tp, None)
        self._unsaved.forget(tp)
        self._update_gauges()
        await self._store_unstored(tp)
        await self._on_store(self._store.release, tp.topic, tp.partition)

    async def apply(
        self,
        chunks: Sequence[Chunk[TopicPartition]],
        staged: Staged,
    ) -> tuple[Staged, WindowedBatch]:
        """Flag and count ``staged``'s readings (its batch is ``chunks``): the points get
        their QC flags, duplicates become dead letters. Call in the order batches are sent."""
        readings = staged.readings
        if readings is None:
            raise RuntimeError("the state is on, but the stage computed no readings")
        rows = readings.rows
        qc = self._spec.qc
        flags = BatchFlags(qc.fields, rows.size) if qc is not None else None
        touched: dict[TopicPartition, PartitionState] = {}
        duplicate = np.zeros(rows.size, dtype=bool)
        closed: list[Aggregates] = []
        lo = 0
        for chunk in chunks:
            hi = lo + len(chunk.records)
            first, last = np.searchsorted(rows, (lo, hi))
            lo = hi
            state = self._states.get(chunk.tp)
            if first == last or state is None or self._trackers.get(chunk.tp) is not chunk.tracker:
                continue  # no reading, or fetched for a set-up of the partition that ended
            applied = state.apply(
                readings.offsets[first:last],
                readings.sensors[first:last],
                readings.event_us[first:last],
                readings.values[first:last],
            )
            if flags is not None and applied.flags is not None:
                flags.put(first, last, applied.flags)
            if applied.verdicts is not None:
                duplicate[first:last] = applied.verdicts == Verdict.DUPLICATE
                self._stats.late_readings += int(np.count_nonzero(applied.verdicts == Verdict.LATE))
            if applied.aggregates is not None and len(applied.aggregates):
                closed.append(applied.aggregates)
            touched[chunk.tp] = state
        duplicates = rows[duplicate].tolist()
        endings = None
        if flags is not None:
            endings = flags.endings()
            self._stats.qc_flags.update(flags.counts(~duplicate))
        if endings is not None or duplicates:
            staged = self._stage.revise(staged, endings, duplicates, DeadLetterCode.DUPLICATE)
        outgoing = [record for aggregates in closed for record in _records(aggregates)]
        # Queued before any await: a save meanwhile must see it not ready (the state has
        # its changes), or a snapshot for an earlier batch would persist them.
        batch = self._unsaved.applied(touched, len(outgoing))
        if batch.changes is not None:  # the gauges move as often as snapshots are taken
            self._update_gauges()
        if outgoing:
            try:
                batch.aggregates = await self._topics.send_aggregates(outgoing)
            except BaseException:
                self.abandon(batch)
                raise
        return staged, batch

    async def persist(self, batch: WindowedBatch) -> None:
        """After ``batch``'s outputs were acknowledged: once its aggregates are too, every
        batch before it is ready and a snapshot at or after it was taken, its rows go to the
        changelog (later to the local store), with the other ready batches' in one write
        (each sensor's latest row; each partition's row last). Raises
        :class:`DeliveryFailedError` (or ``StateError``), and for every later batch too: a
        later batch's rows are never saved without an earlier one's."""
        if batch.aggregates is not None:
            try:
                await batch.aggregates
            except BaseException:
                self.abandon(batch)
                raise
        batch.ready = True
        if self._waiting is not None and not self._waiting() and self._unsaved.all_ready():
            self._idle.set()  # a save waiting out the pause goes now: nothing would join it
        async with self._saving:
            pause = self._saved_at + self._unsaved.every_s - time.monotonic()
            if pause > 0 and not batch.persisted.is_set() and not self._idle.is_set():
                with contextlib.suppress(TimeoutError):  # the batches acknowledged meanwhile
                    await asyncio.wait_for(self._idle.wait(), pause)  # join this save
            self._idle.clear()
            self._saved_at = time.monotonic()
            ready = self._unsaved.covered()
            if ready:
                try:
                    await self._save_batches(ready)
                except BaseException:
                    self.abandon(batch)
                    raise
                finally:
                    for done in ready:
                        done.persisted.set()
        await batch.persisted.wait()  # saved here, or with an earlier batch's call
        self._check_earlier_saved()

    async def _save_batches(self, batches: list[WindowedBatch]) -> None:
        merged: dict[TopicPartition, dict[bytes, bytes]] = {}
        for batch in batches:
            for tp, (state, changed) in (batch.changes or {}).items():
                if self._states.get(tp) is not state:
                    continue  # revoked since: its new owner finds it in the changelog
                rows = merged.setdefault(tp, {})
                rows.update(changed.sensors)
                key, value = changed.partition
                rows.pop(key, None)
                rows[key] = value  # after every sensor row so far
        writes = {tp: list(rows.items()) for tp, rows in merged.items()}
        written = [await self._topics.write_changelog(tp, rows) for tp, rows in writes.items()]
        ends = await asyncio.gather(*written)
        for (tp, pairs), end in zip(writes.items(), ends, strict=True):
            if tp in self._states:  # else it went meanwhile: a restore reads the changelog
                unstored, _ = self._unstored.get(tp, ({}, end))
                unstored.update(pairs)
                self._unstored[tp] = (unstored, end)
        self._stats.aggregates_published += sum(batch.aggregate_count for batch in batches)
        if time.monotonic() - self._stored_at >= STORE_EVERY_S:
            await self._store_unstored()

    async def _store_unstored(self, only: TopicPartition | None = None) -> None:
        """Give the local store the rows of ``only`` (else of every partition) that the
        changelog acknowledged since the store's last write."""
        if only is None:
            self._stored_at = time.monotonic()
        for tp in list(self._unstored) if only is None else [only]:
            unstored = self._unstored.pop(tp, None)
            if unstored is not None:
                await self._on_store(_save, self._store, tp, *unstored)

    def _check_earlier_saved(self) -> None:
        if self._unsaved.failed:
            raise DeliveryFailedError("the window state of an earlier batch was not saved")

    def abandon(self, batch: WindowedBatch) -> None:
        """``batch`` will not be persisted (its outputs failed): neither will any after it,
        and whoever waits for one is told."""
        self._unsaved.abandon(batch)

    async def _on_store(self, call: Callable[..., T], *args: Any) -> T:
        """``call`` on a worker thread, one store call at a time: a database must not be
        closed under a write."""
        async with self._store_lock:
            return await asyncio.to_thread(call, *args)

    def _update_gauges(self) -> None:
        states = self._states.values()
        stats = self._stats
        stats.state_bytes = sum(state.memory_bytes() for state in states)
        stats.peak_state_bytes = max(stats.peak_state_bytes, stats.state_bytes)
        stats.open_windows = sum(state.open_windows() for state in states)

    def close(self) -> None:
        """Close the local store, giving it first the rows it has not taken (a failure to is
        logged: the changelog has them, so the next restore reads a longer tail)."""
        try:
            for tp, (rows, end) in self._unstored.items():
                _save(self._store, tp, rows, end)
        except StateError as exc:
            log.warning("local state not written at the stop: %s", exc)
        finally:
            self._unstored.clear()
            self._store.close()


def _save(
    store: LocalStore,
    tp: TopicPartition,
    rows: Mapping[bytes, bytes] | Sequence[Row],
    changelog_end: int,
) -> None:
    store.write(tp.topic, tp.partition, dict(rows), changelog_end.to_bytes(8, "big"))


def _records(aggregates: Aggregates) -> list[tuple[bytes, bytes]]:
    """Closed windows as the aggregates topic's records: keyed by sensor id, JSON values."""
    return [(row["sensor_id"].encode(), _encode(row)) for row in aggregates.rows()]


def windowing_for(
    settings: Settings,
    topics: StateTopics | None,
    stage: Stage,
    committer: Committer[TopicPartition],
    stats: Stats,
    *,
    waiting: Callable[[], int],
) -> Windowing | None:
    """The state ``settings`` ask for (None: no windows and no QC), on the partitions
    ``committer`` commits (``waiting``: as :class:`Windowing` takes it); raises StateError
    for a state directory it cannot use."""
    if not settings.has_state:
        return None
    if topics is None:
        raise ConfigError("invalid setting PROCESSOR_WINDOW: the connection has no state topics")
    qc = settings.qc_spec
    windows = None
    if settings.window is not None:
        flagged = tuple(name for name in settings.aggregate_fields if qc and name in qc.fields)
        windows = WindowSpec(
            settings.window,
            settings.allowed_lateness,
            settings.aggregate_fields,
            settings.dedup,
            flagged,
        )
    spec = StateSpec(windows, qc, settings.state_fields)
    return Windowing(
        spec,
        topics,
        LocalStore(settings.state_dir),
        stage,
        trackers=committer.trackers,
        committed=committer.committed,
        stats=stats,
        save_every_s=settings.commit_interval_s,
        waiting=waiting,
        cleanup_delay_s=settings.state_cleanup_delay / 1000,
    )
