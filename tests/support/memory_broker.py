"""An in-memory broker behind the engine's ports (:mod:`processor.core.ports`): partition
logs, a group's committed offsets, assignment and revocation through the engine's listener,
and outputs whose acknowledgements can be held back or fail. With :class:`CountingStage` the
processor's steps run one at a time, with no sockets and no threads but the spill's."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from processor.core.ports import PartitionListener, TopicPartition
from processor.core.stats import Stats
from processor.errors import CommitFailedError, DeliveryFailedError
from processor.messages.jobs import PointReadings
from tests.unit.records import Record

VALID = b'{"sensor_id":"s","timestamp":"2026-12-03T00:00:00Z","latitude":1,"longitude":2}'


def run(tp: TopicPartition, first: int, count: int) -> list[Record]:
    """``count`` consecutive records of ``tp`` from offset ``first``, with valid readings."""
    return [
        Record(tp.topic, tp.partition, offset, b"s", VALID)
        for offset in range(first, first + count)
    ]


@dataclass
class MemoryConsumer:
    """The engine's Consumer: fetches from the broker's logs at its positions, or what a test
    scripted (``fetches``), cut at ``max_records`` and ``fetch_max`` records per partition."""

    broker: MemoryBroker
    assigned: set[TopicPartition] = field(default_factory=set)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    paused_now: set[TopicPartition] = field(default_factory=set)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    failing_commits: int = 0
    fetches: deque[dict[TopicPartition, list[Record]]] = field(default_factory=deque)
    max_records_asked: list[int | None] = field(default_factory=list)
    fetch_max: int = 1_000
    listener: PartitionListener | None = None
    #: Partitions to join with at the next fetch, as aiokafka joins inside ``getmany``.
    join_at_fetch: set[TopicPartition] | None = None

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.broker.group_offsets.get(tp)

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.broker.log_starts.get(tp, 0) for tp in tps}

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.broker.end(tp) for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_now.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_now.difference_update(tps)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.broker.end(tp) if tp in self.broker.logs else None

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        self.max_records_asked.append(max_records)
        if self.join_at_fetch is not None:
            assigned, self.join_at_fetch = self.join_at_fetch, None
            await self.rebalance(assigned)
        await asyncio.sleep(0)
        fetched = self.fetches.popleft() if self.fetches else self._from_logs()
        if max_records is not None:
            fetched = _first(fetched, max_records)
        for tp, records in fetched.items():
            if records:
                self.positions[tp] = records[-1].offset + 1
        return fetched

    def _from_logs(self) -> dict[TopicPartition, list[Record]]:
        fetched = {}
        for tp in sorted(self.assigned - self.paused_now):
            start = self.positions.get(tp)
            if start is None:
                continue
            records = [r for r in self.broker.logs.get(tp, []) if r.offset >= start]
            if records[: self.fetch_max]:
                fetched[tp] = records[: self.fetch_max]
        return fetched

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        await asyncio.sleep(0)
        if self.failing_commits:
            self.failing_commits -= 1
            raise CommitFailedError("commit refused (scripted)")
        self.commits.append(dict(offsets))
        self.broker.group_offsets.update(offsets)

    async def rebalance(self, assigned: set[TopicPartition]) -> None:
        """A group rebalance as aiokafka runs one: everything revoked, then ``assigned``."""
        if self.listener is None:
            raise RuntimeError("not subscribed")
        await self.listener.on_revoked(set(self.assigned))
        self.assigned = set(assigned)
        self.positions = {tp: o for tp, o in self.positions.items() if tp in assigned}
        await self.listener.on_assigned(set(assigned))


@dataclass
class Counted:
    """A batch computed by :class:`CountingStage`: every record a point, except those whose
    value is not a reading, which are dead letters with code ``invalid_json``; ``readings``
    are what the stage's ``readings`` function made of the batch, if it has one; ``endings``
    the QC endings the state gave its points (by point, in input row order)."""

    outputs: list[tuple[TopicPartition, int]]
    published: int
    codes: Counter[str]
    readings: PointReadings | None = None
    endings: list[bytes] | None = None


#: What a test makes of a batch's runs and records as the points' readings (windows on).
Readings = Callable[
    [Sequence[tuple[TopicPartition, Sequence[Any]]], Sequence[Any]], PointReadings | None
]


def _is_reading(value: bytes | None) -> bool:
    try:
        return "sensor_id" in json.loads(value or b"")
    except ValueError:
        return False


class CountingStage:
    """A Stage that only counts (the geometry has tests of its own); with ``readings``, its
    batches carry the readings that function makes of them."""

    parallelism = 1

    def __init__(self, readings: Readings | None = None) -> None:
        self.started = self.closed = False
        self._readings = readings

    async def start(self) -> None:
        self.started = True

    async def compute(
        self,
        runs: Sequence[tuple[TopicPartition, Sequence[Any]]],
        records: Sequence[Any],
        stamps: Any,
        framing: Any,
    ) -> Counted:
        await asyncio.sleep(0)
        outputs = [(tp, record.offset) for tp, run_ in runs for record in run_]
        bad = sum(1 for record in records if not _is_reading(record.value))
        readings = self._readings(runs, records) if self._readings is not None else None
        codes = Counter({"invalid_json": bad} if bad else {})
        return Counted(outputs, len(records) - bad, codes, readings)

    def revise(
        self, staged: Counted, endings: Sequence[bytes] | None, rows: Sequence[int], code: str
    ) -> Counted:
        """``staged`` with its points' QC ``endings`` kept (for the tests to read) and
        ``rows``' points counted as dead letters of ``code`` instead."""
        moved = len(set(rows))
        if moved > staged.published:
            raise ValueError(f"{moved} rows to dead-letter, but {staged.published} points")
        codes = staged.codes.copy()
        if moved:
            codes[code] += moved
        if endings is not None:
            staged = replace(staged, endings=list(endings))
        return replace(staged, published=staged.published - moved, codes=codes)

    def describe(self) -> dict[str, int]:
        return {"processes": 0}

    async def close(self) -> None:
        self.closed = True


@dataclass
class MemoryOutputs:
    """The engine's Outputs: what was sent, acknowledged at once unless ``hold`` is set (then
    :meth:`acknowledge` resolves them in order, or fails them)."""

    sent: list[Counted] = field(default_factory=list)
    acknowledged: list[Counted] = field(default_factory=list)
    hold: bool = False
    failing_sends: int = 0
    _waiting: deque[tuple[Counted, asyncio.Future[None]]] = field(default_factory=deque)

    async def framing(self) -> None:
        return None

    async def send(self, staged: Any) -> Awaitable[None]:
        await asyncio.sleep(0)
        if self.failing_sends:
            self.failing_sends -= 1
            raise DeliveryFailedError("cannot produce (scripted)")
        self.sent.append(staged)
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((staged, acked))
        if not self.hold:
            self.acknowledge()
        return acked

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def acknowledge(self, count: int | None = None, error: str | None = None) -> None:
        """Resolve the ``count`` oldest sends (all by default), or fail them with ``error``."""
        for _ in range(len(self._waiting) if count is None else count):
            staged, acked = self._waiting.popleft()
            if error is None:
                self.acknowledged.append(staged)
                acked.set_result(None)
            else:
                acked.set_exception(DeliveryFailedError(error))


@dataclass
class MemoryConnection:
    consumer: MemoryConsumer
    outputs: MemoryOutputs
    state: Any = None  # tests.support.memory_state.MemoryStateTopics, windows on
    closed: bool = False

    async def watch(self, stats: Stats) -> None:
        await asyncio.Event().wait()

    async def close(self, within_s: float) -> None:
        self.closed = True


@dataclass
class MemoryBroker:
    """Partition logs and one group's committed offsets."""

    logs: dict[TopicPartition, list[Record]] = field(default_factory=dict)
    group_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    log_starts: dict[TopicPartition, int] = field(default_factory=dict)

    def end(self, tp: TopicPartition) -> int:
        log = self.logs.get(tp)
        return log[-1].offset + 1 if log else self.log_starts.get(tp, 0)

    def produce(self, tp: TopicPartition, count: int, value: bytes = VALID) -> None:
        first = self.end(tp)
        records = run(tp, first, count)
        for record in records:
            record.value = value
        self.logs.setdefault(tp, []).extend(records)

    def connection(self, **consumer: Any) -> MemoryConnection:
        return MemoryConnection(MemoryConsumer(self, **consumer), MemoryOutputs())


@dataclass
class MemoryConnector:
    """Connects to ``connection`` and joins with ``assign`` at the first fetch."""

    connection: MemoryConnection
    assign: set[TopicPartition] = field(default_factory=set)

    async def connect(self, listener: PartitionListener) -> MemoryConnection:
        consumer = self.connection.consumer
        consumer.listener = listener
        consumer.join_at_fetch = set(self.assign)
        return self.connection


def _first(fetched: Mapping[Any, Sequence[Record]], limit: int) -> dict[Any, list[Record]]:
    taken: dict[Any, list[Record]] = {}
    for tp, records in fetched.items():
        taken[tp] = list(records[:limit])
        limit -= len(taken[tp])
        if limit <= 0:
            break
    return taken


async def until(condition: Any, timeout_s: float = 30.0, what: str = "condition") -> None:
    """Wait until ``condition()`` holds, giving the event loop (and the spill's threads) turns."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s} s")
        await asyncio.sleep(0.001)
