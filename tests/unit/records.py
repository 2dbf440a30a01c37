"""Small helpers shared by the unit tests: a consumed-record stand-in and reading payloads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


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
