"""The window state's topics in memory (:class:`processor.core.ports.StateTopics`): the
aggregates sent and a changelog log per input partition, acknowledged at once, and the
readings a :class:`~tests.support.memory_broker.CountingStage` gives the engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from processor.core.ports import Row, TopicPartition
from processor.messages.jobs import PointReadings
from processor.state.aggregates import sensor_keys

FIELDS = ("pm25",)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class MemoryStateTopics:
    aggregates: list[tuple[bytes, bytes]] = field(default_factory=list)
    changelog: dict[TopicPartition, list[Row]] = field(default_factory=dict)
    reads: list[tuple[TopicPartition, int]] = field(default_factory=list)  # (tp, since)
    writes: list[list[bytes]] = field(default_factory=list)  # the keys of each write

    #: While set and not yet open, a send of aggregates waits for it (a producer's full
    #: buffer), before they count as published.
    send_gate: asyncio.Event | None = None
    sends_waiting: int = 0

    async def send_aggregates(self, records: Sequence[tuple[bytes, bytes]]) -> Awaitable[None]:
        if self.send_gate is not None:
            self.sends_waiting += 1
            await self.send_gate.wait()
            self.sends_waiting -= 1
        self.aggregates += records
        return _done(None)

    async def write_changelog(self, tp: TopicPartition, rows: Sequence[Row]) -> Awaitable[int]:
        self.writes.append([key for key, _ in rows])
        log = self.changelog.setdefault(tp, [])
        log += rows
        return _done(len(log))

    async def read_changelog(self, tp: TopicPartition, since: int) -> tuple[list[Row], int]:
        self.reads.append((tp, since))
        log = self.changelog.get(tp, [])
        return log[since:], len(log)

    def published(self) -> list[dict[str, Any]]:
        return [json.loads(value) for _, value in self.aggregates]


def _done(value: Any) -> asyncio.Future[Any]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def reading(sensor: str, event_s: int, pm25: float) -> bytes:
    stamp = datetime.fromtimestamp(event_s, UTC).isoformat()
    return json.dumps(
        {"sensor_id": sensor, "timestamp": stamp, "latitude": 1, "longitude": 2, "pm25": pm25}
    ).encode()


def readings_of(
    runs: Sequence[tuple[TopicPartition, Sequence[Any]]], records: Sequence[Any]
) -> PointReadings:
    """Every record a point, read as the worker reads it (for :class:`CountingStage`)."""
    documents = [json.loads(record.value) for record in records]
    return PointReadings(
        np.arange(len(documents), dtype=np.int64),
        np.array([record.offset for record in records], dtype=np.int64),
        sensor_keys([d["sensor_id"] for d in documents]),
        np.array(
            [
                (datetime.fromisoformat(d["timestamp"]) - EPOCH) // timedelta(microseconds=1)
                for d in documents
            ],
            dtype=np.int64,
        ),
        np.array([[float(d[name]) for name in FIELDS] for d in documents], dtype=np.float64),
    )
