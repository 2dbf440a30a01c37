"""The bounded in-memory buffer: records from admission until the broker acknowledged them.

Records wait in one FIFO per partition and are taken round-robin, so a hot partition cannot
starve the others. A record still counts against the bound while its result is in flight;
only the acknowledgement releases it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from processor.core.offsets import OffsetTracker
from processor.messages.codec import RecordLike

P = TypeVar("P", bound=Hashable)


@dataclass(slots=True)
class Chunk(Generic[P]):
    """A run of one partition's records and the offset range ``[first, end)`` it accounts for."""

    tp: P
    records: Sequence[RecordLike]
    first: int
    end: int
    tracker: OffsetTracker

    def split(self, count: int) -> tuple[Chunk[P], Chunk[P]]:
        cut = self.records[count].offset
        head = Chunk(self.tp, self.records[:count], self.first, cut, self.tracker)
        tail = Chunk(self.tp, self.records[count:], cut, self.end, self.tracker)
        return head, tail


class RecordBuffer(Generic[P]):
    """Chunks from admission until acknowledged: ``put`` queues, ``take`` hands out a batch
    round-robin over partitions, ``release`` frees it after the acknowledgement, ``drop``
    forgets a revoked partition. ``buffered`` counts queued and in-flight records, which is
    what the bound and the pause decisions are about."""

    def __init__(self) -> None:
        self._queues: dict[P, deque[Chunk[P]]] = {}
        self._held: dict[P, int] = {}
        self._queued = 0
        self._buffered = 0
        self._ready = asyncio.Event()
        self._closed = False

    @property
    def buffered(self) -> int:
        """Records in memory: queued plus awaiting acknowledgement."""
        return self._buffered

    @property
    def queued(self) -> int:
        return self._queued

    def held(self) -> dict[P, int]:
        return self._held

    def put(self, chunk: Chunk[P]) -> None:
        count = len(chunk.records)
        if not count:
            return
        self._queues.setdefault(chunk.tp, deque()).append(chunk)
        self._held[chunk.tp] = self._held.get(chunk.tp, 0) + count
        self._queued += count
        self._buffered += count
        self._ready.set()

    async def take(self, limit: int) -> list[Chunk[P]]:
        """Up to ``limit`` queued records, round-robin over partitions; [] once closed and empty."""
        while not self._queued:
            if self._closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        taken: list[Chunk[P]] = []
        budget = limit
        while budget > 0 and self._queued:
            for tp in list(self._queues):
                if budget <= 0:
                    break
                queue = self._queues.pop(tp)  # served partitions go to the back of the line
                chunk = queue.popleft()
                if len(chunk.records) > budget:
                    chunk, rest = chunk.split(budget)
                    queue.appendleft(rest)
                taken.append(chunk)
                budget -= len(chunk.records)
                self._queued -= len(chunk.records)
                if queue:
                    self._queues[tp] = queue
        return taken

    def release(self, chunk: Chunk[P]) -> None:
        """The chunk's results were acknowledged (or its partition was revoked)."""
        count = len(chunk.records)
        self._buffered -= count
        held = self._held.get(chunk.tp, 0) - count
        if held > 0:
            self._held[chunk.tp] = held
        else:
            self._held.pop(chunk.tp, None)

    def drop(self, tp: P) -> int:
        """Forget a partition's queued records (revoked: the new owner re-reads them)."""
        queue = self._queues.pop(tp, deque())
        count = sum(len(chunk.records) for chunk in queue)
        for chunk in queue:
            self._queued -= len(chunk.records)
            self.release(chunk)
        return count

    def close(self) -> None:
        """No more puts: ``take`` returns what is queued, then []."""
        self._closed = True
        self._ready.set()
