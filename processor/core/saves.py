"""Which batches' window state can be saved, and when: a batch's state changes are saved
with a snapshot (the rows of the sensors changed since the previous one) taken right after
it or after a later batch, once it and every batch before it are ready (outputs and
aggregates acknowledged). Snapshots are taken a few times a second, not per batch, so
packing rows costs per save (docs/state.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from processor.core.partition_state import PartitionState
from processor.core.ports import TopicPartition
from processor.state.rows import ChangedRows

Snapshot = dict[TopicPartition, tuple[PartitionState, ChangedRows]]


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
