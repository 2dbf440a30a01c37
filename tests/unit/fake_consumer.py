"""An in-memory stand-in for the processor's Kafka consumer: assignment, committed offsets,
seeks, pauses and scripted fetches, so the processor's steps run one at a time without sockets."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from tests.unit.records import Record


@dataclass
class FakeConsumer:
    assigned: set[TopicPartition] = field(default_factory=set)
    group_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    log_starts: dict[TopicPartition, int] = field(default_factory=dict)
    log_ends: dict[TopicPartition, int] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    paused_now: set[TopicPartition] = field(default_factory=set)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    failing_commits: int = 0
    fetches: deque[dict[TopicPartition, list[Record]]] = field(default_factory=deque)
    max_records_asked: list[int | None] = field(default_factory=list)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.group_offsets.get(tp)

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.log_starts.get(tp, 0) for tp in tps}

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.log_ends.get(tp, 0) for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_now.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_now.difference_update(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_now)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.log_ends.get(tp)

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """The next scripted fetch (nothing when the script is done), cut at ``max_records``."""
        self.max_records_asked.append(max_records)
        if not self.fetches:
            return {}
        fetched = self.fetches.popleft()
        if max_records is not None:
            fetched = _first(fetched, max_records)
        for tp, records in fetched.items():
            if records:
                self.positions[tp] = records[-1].offset + 1
        return fetched

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.failing_commits:
            self.failing_commits -= 1
            raise KafkaError("commit refused (scripted)")
        self.commits.append(dict(offsets))
        self.group_offsets.update(offsets)


def run(tp: TopicPartition, first: int, count: int) -> list[Record]:
    """``count`` consecutive records of ``tp`` from offset ``first``, with valid readings."""
    value = b'{"sensor_id":"s","timestamp":"2026-12-03T00:00:00Z","latitude":1,"longitude":2}'
    return [
        Record(tp.topic, tp.partition, offset, b"s", value)
        for offset in range(first, first + count)
    ]


def _first(fetched: Mapping[Any, Sequence[Record]], limit: int) -> dict[Any, list[Record]]:
    taken: dict[Any, list[Record]] = {}
    for tp, records in fetched.items():
        taken[tp] = list(records[:limit])
        limit -= len(taken[tp])
        if limit <= 0:
            break
    return taken
