"""Small helpers shared by the unit tests: a consumed-record stand-in and reading payloads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import msgspec
from aiokafka.record.default_records import DefaultRecordBatch

from processor.geo.stage import SpatialStage
from processor.messages.codec import Headers
from processor.messages.jobs import BatchSpec, Framed, Job, Outgoing, ProduceBatch, RecordRun
from processor.workers.framing import StageThenFrame

_encoder = msgspec.json.Encoder()
#: One output partition, so decoded points keep the input order.
SPEC = BatchSpec((0,), 1 << 20)


@dataclass(slots=True)
class Record:
    """What the processor needs of an aiokafka ``ConsumerRecord``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0


def reading(
    sensor_id: str = "aq-1",
    latitude: float = 47.37,
    longitude: float = 8.54,
    timestamp: str = "2026-11-23T10:00:00Z",
    **measurements: Any,
) -> bytes:
    """A valid input payload (JSON bytes)."""
    return _encoder.encode(
        {
            "sensor_id": sensor_id,
            "timestamp": timestamp,
            "latitude": latitude,
            "longitude": longitude,
            **measurements,
        }
    )


def record(
    value: bytes | None,
    offset: int = 0,
    *,
    topic: str = "sensor.readings",
    partition: int = 0,
    key: bytes | None = b"aq-1",
    headers: list[tuple[str, bytes]] | None = None,
) -> Record:
    return Record(topic, partition, offset, key, value, list(headers or []))


def messages(batches: Sequence[ProduceBatch]) -> list[Outgoing]:
    """(key, value, headers) of the records in framed produce batches, batch by batch."""
    decoded: list[Outgoing] = []
    for batch in batches:
        if isinstance(batch, RecordRun):
            decoded += batch.rows
            continue
        assert DefaultRecordBatch(batch.data).validate_crc()
        records = [(r.key, r.value, list(r.headers)) for r in DefaultRecordBatch(batch.data)]
        assert len(records) == batch.records
        decoded += records
    return decoded


@dataclass(slots=True)
class Processed:
    """A batch through the whole stage, as the pipeline runs it, points decoded back."""

    result: Framed
    points: list[Outgoing]
    dead_letters: list[Outgoing]
    codes: Counter[str]


def process(
    stage: SpatialStage,
    records: Sequence[Record],
    stamps: Sequence[Headers] | None = None,
    spec: BatchSpec = SPEC,
) -> Processed:
    job = Job(spec, spec, stamps)
    for (topic, partition), run in groupby(records, lambda r: (r.topic, r.partition)):
        job.extend(topic, partition, list(run))
    result = StageThenFrame(stage).run(job)
    points, dead_letters = messages(result.points), messages(result.letters)
    assert len(points) == result.published
    assert len(dead_letters) == result.dead_lettered
    return Processed(result, points, dead_letters, result.codes)
