"""Which batches' window state can be saved, and when: a batch's state changes are saved
with a snapshot (the rows of the sensors changed since the previous one) taken right after
it or after a later batch, once it and every batch before it are ready (outputs and
aggregates acknowledged). Snapshots are taken a few times a second, not per batch, so
packing rows costs per save (docs/state.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field

from processor.core.partition_state import PartitionState
from processor.core.ports import TopicPartition
from processor.state.rows import ChangedRows

Snapshot = dict[TopicPartition, tuple[PartitionState, ChangedRows]]

#: A snapshot is followed by at least this many times the event loop's time it took before
#: the next, so that packing rows takes about a tenth of the loop at most, however many
#: sensors change (as Flink's least pause between checkpoints): at ~20 ms for 1,000 sensors,
#: a snapshot comes at most every 0.2 s.
PAUSE_PER_SNAPSHOT_SECOND = 10.0


@dataclass(slots=True)
class WindowedBatch:
    """What a batch did to the state, to persist once its outputs are acknowledged.
    ``changes``: the rows of what changed since the previous snapshot, taken right after
    this batch; None: a later batch's snapshot covers this batch's changes."""

    changes: Snapshot | None
    aggregates: Awaitable[None] | None
    aggregate_count: int
    ready: bool = False  # its outputs and aggregates are acknowledged
    persisted: asyncio.Event = field(default_factory=asyncio.Event)  # or failed


def saveable(unsaved: Sequence[WindowedBatch]) -> tuple[int, bool]:
    """How many of the ``unsaved`` batches (oldest first) can be saved now, and whether the
    newest must take a snapshot first: the longest run of ready batches from the oldest that
    ends with a snapshot (a batch's rows are its snapshot's, which covers the batches before
    it); when every batch is ready the state is as of the newest, which then snapshots if it
    has not (so that the last batch of a stream is saved)."""
    ready = 0
    while ready < len(unsaved) and unsaved[ready].ready:
        ready += 1
    if 0 < ready == len(unsaved):
        return ready, unsaved[-1].changes is None
    count = ready
    while count and unsaved[count - 1].changes is None:
        count -= 1
    return count, False


class Unsaved:
    """The batches applied and not saved yet, oldest first, and the snapshots that cover
    them: one when a batch is applied, at most once every :attr:`every_s`; and one for the
    newest when all are ready. ``states`` (the owned partitions' states, kept up to date by
    the caller) and ``committed`` (their commit points) are read at each snapshot."""

    def __init__(
        self,
        states: Mapping[TopicPartition, PartitionState],
        committed: Mapping[TopicPartition, int],
        every_s: float,
    ) -> None:
        self._states = states
        self._committed = committed
        self._least_every_s = every_s
        self._took_s = 0.0  # how long the last snapshot took
        self._batches: deque[WindowedBatch] = deque()
        self._changed: dict[TopicPartition, PartitionState] = {}  # since the last snapshot
        self._taken_at = -math.inf
        self.failed = False

    def applied(
        self, touched: Mapping[TopicPartition, PartitionState], aggregates: int
    ) -> WindowedBatch:
        """Queue a batch that changed ``touched`` and closed ``aggregates`` windows (whose
        send the caller sets in the batch), with a snapshot if one is due."""
        self._changed.update(touched)
        due = time.monotonic() - self._taken_at >= self.every_s
        batch = WindowedBatch(self._take() if due else None, None, aggregates)
        self._batches.append(batch)
        return batch

    @property
    def every_s(self) -> float:
        """The least time between two snapshots (and two saves): the one asked for, or
        :data:`PAUSE_PER_SNAPSHOT_SECOND` times the last snapshot's, if longer."""
        return max(self._least_every_s, PAUSE_PER_SNAPSHOT_SECOND * self._took_s)

    def all_ready(self) -> bool:
        """Whether every batch applied and not saved yet is ready."""
        return all(batch.ready for batch in self._batches)

    def forget(self, tp: TopicPartition) -> None:
        """The partition went: its changes stay out of the next snapshot."""
        self._changed.pop(tp, None)

    def covered(self) -> list[WindowedBatch]:
        """The batches to save now, taken off the queue (:func:`saveable`); the newest takes
        its snapshot here if every batch applied is ready. None once a batch failed."""
        if self.failed:
            return []
        count, snap_newest = saveable(self._batches)
        if snap_newest:
            self._batches[-1].changes = self._take()
        return [self._batches.popleft() for _ in range(count)]

    def abandon(self, batch: WindowedBatch) -> None:
        """``batch`` will not be saved: nor will any, and whoever waits for one is told."""
        self.failed = True
        batch.persisted.set()
        for waiting in self._batches:
            waiting.persisted.set()

    def _take(self) -> Snapshot:
        """The rows of every owned partition's state changed since the last snapshot, as of
        the batch just applied."""
        started = time.perf_counter()
        snapshot = {}
        for tp, state in self._changed.items():
            if self._states.get(tp) is state:
                state.release(self._committed.get(tp, -1))
                snapshot[tp] = (state, state.take_changes())
        self._changed.clear()
        self._taken_at = time.monotonic()
        self._took_s = time.perf_counter() - started
        return snapshot
