"""Flow control decisions: which partitions to pause, why, and where fetched records go.

Pure logic. It is fed a snapshot (buffer depth, per-partition holdings, memory, spill state)
and answers the reasons each assigned partition should be paused for; the consumer loop
applies the difference with what is paused now. Every signal has hysteresis: a pause starts
at a high mark and ends only at a lower one, so a noisy signal cannot make it flap.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class PauseReason(StrEnum):
    BUFFER = "buffer"  # the whole buffer is above its high watermark
    PARTITION_SHARE = "partition_share"  # this partition holds more than its share
    MEMORY = "memory"  # process memory above its threshold
    SPILL_REPLAY = "spill_replay"  # records of this partition wait on disk; order first
    SPILL_FULL = "spill_full"  # records were handed back to Kafka: the spill had no room


@dataclass(frozen=True, slots=True)
class FlowLimits:
    buffer_max: int
    buffer_high: float = 0.8
    buffer_low: float = 0.5
    memory_high: float = 0.85
    memory_resume: float = 0.75
    # A partition paused for holding its share resumes at this fraction of it. Not the buffer's
    # low/high: resuming a hot partition sooner lets it crowd the others out again (measured:
    # the cold partitions of a 20:1 skew took 0.2-0.55 of the hot one's time at 0.625, 0.1-0.3
    # at 0.375).
    share_resume: float = 0.375
    trickle: int = 500  # records admitted at a time while memory stays high with nothing held


@dataclass(frozen=True, slots=True)
class FlowSnapshot(Generic[P]):
    assigned: frozenset[P]
    buffered: int
    held: Mapping[P, int]
    memory_used: int
    memory_budget: int
    spilled: frozenset[P] = frozenset()


@dataclass(slots=True)
class FlowController(Generic[P]):
    limits: FlowLimits
    _buffer_paused: bool = False
    _memory_paused: bool = False
    _share_paused: set[P] = field(default_factory=set)
    _handed_back: set[P] = field(default_factory=set)

    def share(self, active: int) -> float:
        """Records one partition may hold before it is paused on its own.

        The buffer is shared among the partitions that hold records now, so a lone backlog
        may use all of it, and a hot partition yields as soon as others have work too.
        """
        return self.limits.buffer_max / max(1, active)

    def decide(self, snapshot: FlowSnapshot[P]) -> dict[P, frozenset[PauseReason]]:
        """Pause reasons per assigned partition (empty set: should be fetching)."""
        limits = self.limits
        fill = snapshot.buffered / limits.buffer_max
        if fill >= limits.buffer_high:
            self._buffer_paused = True
        elif fill <= limits.buffer_low:
            self._buffer_paused = False
            self._handed_back.clear()
        if snapshot.memory_budget > 0:
            used = snapshot.memory_used / snapshot.memory_budget
            if used >= limits.memory_high:
                self._memory_paused = True
            elif used <= limits.memory_resume:
                self._memory_paused = False
        share = self.share(sum(1 for tp in snapshot.assigned if snapshot.held.get(tp, 0) > 0))
        self._share_paused &= snapshot.assigned
        self._handed_back &= snapshot.assigned
        decisions: dict[P, frozenset[PauseReason]] = {}
        for tp in snapshot.assigned:
            held = snapshot.held.get(tp, 0)
            if held >= share:
                self._share_paused.add(tp)
            elif held <= share * limits.share_resume:
                self._share_paused.discard(tp)
            decisions[tp] = frozenset(self._reasons(snapshot, tp))
        return decisions

    def _reasons(self, snapshot: FlowSnapshot[P], tp: P) -> Iterable[PauseReason]:
        if self._buffer_paused:
            yield PauseReason.BUFFER
        if self._memory_paused and snapshot.buffered > 0:
            yield PauseReason.MEMORY
        spilled = snapshot.spilled
        if tp in self._share_paused:
            yield PauseReason.PARTITION_SHARE
        if tp in spilled:
            yield PauseReason.SPILL_REPLAY
        if tp in self._handed_back:
            yield PauseReason.SPILL_FULL

    def room(self, snapshot: FlowSnapshot[P]) -> int:
        """How many fetched records memory may take now, all partitions together."""
        return self._room(snapshot, self.limits.buffer_max)

    def memory_room(self, tp: P, snapshot: FlowSnapshot[P]) -> int:
        """How many records of a run fetched for ``tp`` may be held in memory now.

        A partition with records on disk sends everything behind them to disk, so order is
        kept.
        """
        if tp in snapshot.spilled:
            return 0
        return self.room(snapshot)

    def memory_split(self, fetched: Mapping[P, int], snapshot: FlowSnapshot[P]) -> dict[P, int]:
        """How many records of each partition's fetched run may be held in memory now.

        The room is split evenly among the partitions of one fetch, and what one does not
        need goes to the others, so whichever partition the client happens to list first
        cannot take it all while the others' runs go to disk.
        """
        rooms = {tp: self.memory_room(tp, snapshot) for tp in fetched}
        left = {tp: count for tp, count in fetched.items() if count > 0 and rooms[tp] > 0}
        room = max(rooms.values(), default=0)
        given = dict.fromkeys(fetched, 0)
        while left and room > 0:
            share = max(1, room // len(left))
            for tp in list(left):
                take = min(left[tp], share, room)
                given[tp] += take
                room -= take
                left[tp] -= take
                if not left[tp]:
                    del left[tp]
                if not room:
                    break
        return given

    def handed_back(self, tp: P) -> None:
        """Records of ``tp`` went back to Kafka: keep it paused until the buffer drains."""
        self._handed_back.add(tp)

    def replay_room(self, snapshot: FlowSnapshot[P]) -> int:
        """How many spilled records may come back into memory now (up to the high mark)."""
        if self._buffer_paused:
            return 0
        return self._room(snapshot, int(self.limits.buffer_max * self.limits.buffer_high))

    def _room(self, snapshot: FlowSnapshot[P], limit: int) -> int:
        """Under memory pressure nothing new is held while anything is buffered; with the
        buffer empty, pausing frees nothing more, so one batch at a time may come in (never
        more than the buffer bound)."""
        if self._memory_paused:
            return min(self.limits.trickle, limit) if snapshot.buffered == 0 else 0
        return max(0, limit - snapshot.buffered)

    def forget(self, partitions: Iterable[P]) -> None:
        """Drop state of partitions that were revoked."""
        for tp in partitions:
            self._share_paused.discard(tp)
            self._handed_back.discard(tp)
