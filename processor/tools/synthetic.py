"""Synthetic sensor readings, valid and broken in every way the contract names.

Used by ``processor sample``, the demo, the tests and the benchmark, so they all exercise
the same inputs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec

_encoder = msgspec.json.Encoder()

#: One malformed payload per kind, with the dead-letter code it must produce.
BAD_INPUTS: dict[str, tuple[bytes, str]] = {
    "not_utf8": (b'{"sensor_id": "\xff\xfe", "x": 1}', "invalid_json"),
    "not_json": (b"sensor=aq-1;pm25=12", "invalid_json"),
    "truncated": (b'{"sensor_id": "aq-1", "timestamp": "2026-', "invalid_json"),
    "array": (b"[1, 2, 3]", "wrong_type"),
    "string": (b'"hello"', "wrong_type"),
    "number": (b"42", "wrong_type"),
    "null": (b"null", "wrong_type"),
    "missing_sensor_id": (
        b'{"timestamp": "2026-11-23T10:00:00Z", "latitude": 1, "longitude": 2}',
        "missing_field",
    ),
    "missing_timestamp": (b'{"sensor_id": "a", "latitude": 1, "longitude": 2}', "missing_field"),
    "missing_latitude": (
        b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00Z", "longitude": 2}',
        "missing_field",
    ),
    "missing_longitude": (
        b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00Z", "latitude": 2}',
        "missing_field",
    ),
    "string_coordinates": (
        b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00Z", "latitude": "47.1",'
        b' "longitude": 8}',
        "wrong_type",
    ),
    "boolean_coordinates": (
        b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00Z", "latitude": true,'
        b' "longitude": 8}',
        "wrong_type",
    ),
    "nan_token": (
        b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00Z", "latitude": NaN, "longitude": 8}',
        "invalid_json",
    ),
    "infinity_token": (
        b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00Z", "latitude": 1,'
        b' "longitude": Infinity}',
        "invalid_json",
    ),
    "overflow_number": (
        b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00Z", "latitude": 1e999,'
        b' "longitude": 8}',
        "out_of_range",
    ),
    "latitude_range": (
        b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00Z", "latitude": 90.5,'
        b' "longitude": 8}',
        "out_of_range",
    ),
    "longitude_range": (
        b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00Z", "latitude": 1,'
        b' "longitude": -180.01}',
        "out_of_range",
    ),
    "polar_latitude": (
        b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00Z", "latitude": 89.9,'
        b' "longitude": 8}',
        "out_of_range",
    ),
    "empty_sensor_id": (
        b'{"sensor_id": "", "timestamp": "2026-11-23T10:00:00Z", "latitude": 1, "longitude": 2}',
        "out_of_range",
    ),
    "long_sensor_id": (
        b'{"sensor_id": "' + b"s" * 129 + b'", "timestamp": "2026-11-23T10:00:00Z",'
        b' "latitude": 1, "longitude": 2}',
        "out_of_range",
    ),
    "naive_timestamp": (
        b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00", "latitude": 1, "longitude": 2}',
        "invalid_timestamp",
    ),
    "garbage_timestamp": (
        b'{"sensor_id": "a", "timestamp": "yesterday", "latitude": 1, "longitude": 2}',
        "invalid_timestamp",
    ),
    "numeric_timestamp": (
        b'{"sensor_id": "a", "timestamp": 1700000000, "latitude": 1, "longitude": 2}',
        "wrong_type",
    ),
    "deep_nesting": (
        b'{"sensor_id": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "too_deep",
    ),
    "too_large": (
        b'{"sensor_id": "a", "blob": "' + b"x" * (1024 * 1024 + 10) + b'"}',
        "too_large",
    ),
}

REGIONS = {  # name: (lon_min, lat_min, lon_max, lat_max)
    "sierra": (-121.5, 37.0, -118.5, 40.0),
    "alps": (6.0, 45.5, 11.0, 47.5),
    "murray": (139.0, -36.5, 147.0, -33.0),
    "fiji": (177.0, -19.0, 180.0, -16.0),
}


def sensor_ids(count: int) -> list[str]:
    names = list(REGIONS)
    return [f"{names[i % len(names)]}-{i:05d}" for i in range(count)]


def region_of(sensor: str) -> str:
    """The region a synthetic sensor is in: its id is ``<region>-<number>``."""
    return sensor.rsplit("-", 1)[0]


def reading(sensor: str, when: datetime, rng: random.Random, pm25: float | None = None) -> bytes:
    """A valid reading somewhere in the sensor's region; ``pm25`` None: uniform 1-300."""
    west, south, east, north = REGIONS[region_of(sensor)]
    return _encoder.encode(
        {
            "sensor_id": sensor,
            "timestamp": when.isoformat().replace("+00:00", "Z"),
            "latitude": round(rng.uniform(south, north), 6),
            "longitude": round(rng.uniform(west, east), 6),
            "pm25": round(rng.uniform(1, 300) if pm25 is None else pm25, 1),
            "battery": round(rng.uniform(3.3, 4.2), 2),
        }
    )


def readings(
    count: int,
    *,
    sensors: int = 200,
    invalid_ratio: float = 0.01,
    seed: int = 7,
    start: datetime | None = None,
    include_too_large: bool = False,
    interval_s: float = 1.0,
) -> Iterator[tuple[bytes | None, bytes, str | None]]:
    """``(key, value, expected_code)``; the code is None for a valid reading. Readings are
    ``interval_s`` apart in event time, taking the sensors in turn."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    ids = sensor_ids(sensors)
    when = start or datetime(2026, 11, 23, tzinfo=UTC)
    kinds = [k for k in BAD_INPUTS if include_too_large or k != "too_large"]
    for i in range(count):
        sensor = ids[i % len(ids)]
        if rng.random() < invalid_ratio:
            kind = kinds[i % len(kinds)]
            payload, code = BAD_INPUTS[kind]
            yield (None if i % 3 == 0 else sensor.encode()), payload, code
        else:
            yield (
                sensor.encode(),
                reading(sensor, when + timedelta(seconds=i * interval_s), rng),
                None,
            )
