"""Bytes to columns and back: the record contracts of DESIGN.md, without any geometry.

Valid records take a fast path entirely inside msgspec (decode, then ``convert`` to a typed
view); only a record that fails it is classified field by field to find the precise reason.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

SENSOR_ID_MAX = 128
TOO_LARGE_KEPT_BYTES = 4096
Headers = list[tuple[str, bytes]]


class DeadLetterCode(StrEnum):
    INVALID_JSON = "invalid_json"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_GEOMETRY = "invalid_geometry"
    OUTSIDE_AREA = "outside_area"
    TOO_LARGE = "too_large"


class RecordLike(Protocol):
    """What the codec needs of a consumed record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...


class _Reading(msgspec.Struct):
    """The typed fields of the input contract; everything else is carried through untouched."""

    sensor_id: Annotated[str, msgspec.Meta(min_length=1, max_length=SENSOR_ID_MAX)]
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    latitude: Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
    longitude: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]


@dataclass(slots=True)
class Rejection:
    index: int
    code: DeadLetterCode
    message: str


@dataclass(slots=True)
class Columns:
    """Records that passed decoding, as columns; ``index`` points into the input batch."""

    index: list[int] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    sensor_ids: list[str] = field(default_factory=list)
    longitude: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    latitude: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))


_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def decode_batch(values: list[bytes | None], max_bytes: int) -> tuple[Columns, list[Rejection]]:
    """Decode and type-check a batch; timestamps are normalised to UTC in the documents."""
    columns = Columns()
    rejections: list[Rejection] = []
    lons: list[float] = []
    lats: list[float] = []
    for i, raw in enumerate(values):
        rejection = _too_large(raw, max_bytes)
        if rejection is not None:
            rejections.append(Rejection(i, *rejection))
            continue
        try:
            document = _decoder.decode(raw)  # type: ignore[arg-type]
            reading = msgspec.convert(document, _Reading)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            rejections.append(Rejection(i, *_classify(raw, exc)))  # type: ignore[arg-type]
            continue
        timestamp = reading.timestamp
        if timestamp.utcoffset():
            timestamp = timestamp.astimezone(UTC)
        document["timestamp"] = timestamp
        columns.index.append(i)
        columns.documents.append(document)
        columns.sensor_ids.append(reading.sensor_id)
        lons.append(reading.longitude)
        lats.append(reading.latitude)
    columns.longitude = np.array(lons, dtype=np.float64)
    columns.latitude = np.array(lats, dtype=np.float64)
    return columns, rejections


def _too_large(raw: bytes | None, max_bytes: int) -> tuple[DeadLetterCode, str] | None:
    if raw is None:
        return DeadLetterCode.INVALID_JSON, "record has no value (tombstone)"
    if len(raw) > max_bytes:
        return DeadLetterCode.TOO_LARGE, f"payload of {len(raw)} bytes exceeds {max_bytes}"
    return None


def _classify(raw: bytes, exc: Exception) -> tuple[DeadLetterCode, str]:
    """Precise reason for a record the fast path refused (slow path, bad records only)."""
    if isinstance(exc, RecursionError):
        return DeadLetterCode.TOO_LARGE, "JSON nested deeper than the decoder allows"
    try:
        document = _decoder.decode(raw)
    except RecursionError:
        return DeadLetterCode.TOO_LARGE, "JSON nested deeper than the decoder allows"
    except msgspec.ValidationError as error:  # e.g. 1e999: a number no float can hold
        return DeadLetterCode.OUT_OF_RANGE, f"number out of range: {error}"
    except UnicodeDecodeError:
        return DeadLetterCode.INVALID_JSON, "payload is not valid UTF-8"
    except msgspec.DecodeError as error:
        return DeadLetterCode.INVALID_JSON, str(error)
    if not isinstance(document, dict):
        return DeadLetterCode.WRONG_TYPE, f"expected a JSON object, got {_json_type(document)}"
    return _classify_fields(document)


def _classify_fields(document: dict[str, Any]) -> tuple[DeadLetterCode, str]:
    for name in ("sensor_id", "timestamp", "latitude", "longitude"):
        if name not in document:
            return DeadLetterCode.MISSING_FIELD, f"missing field {name}"
    sensor_id = document["sensor_id"]
    if not isinstance(sensor_id, str):
        return DeadLetterCode.WRONG_TYPE, f"sensor_id must be a string, got {_json_type(sensor_id)}"
    if not 1 <= len(sensor_id) <= SENSOR_ID_MAX:
        return (
            DeadLetterCode.OUT_OF_RANGE,
            f"sensor_id must be 1-{SENSOR_ID_MAX} characters, got {len(sensor_id)}",
        )
    for name, limit in (("latitude", 90.0), ("longitude", 180.0)):
        value = document[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return DeadLetterCode.WRONG_TYPE, f"{name} must be a number, got {_json_type(value)}"
        if not math.isfinite(value) or abs(value) > limit:
            return DeadLetterCode.OUT_OF_RANGE, f"{name} {value!r} outside -{limit}..{limit}"
    if not isinstance(document["timestamp"], str):
        return (
            DeadLetterCode.WRONG_TYPE,
            f"timestamp must be a string, got {_json_type(document['timestamp'])}",
        )
    return DeadLetterCode.INVALID_TIMESTAMP, "timestamp must be RFC 3339 with an offset or Z"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def source_of(record: RecordLike) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def encode_point(
    document: dict[str, Any], x: float, y: float, crs: str, record: RecordLike
) -> bytes:
    """The output contract: the input document plus x, y, crs and source."""
    document["x"] = x
    document["y"] = y
    document["crs"] = crs
    document["source"] = source_of(record)
    return _encoder.encode(document)


def encode_dead_letter(record: RecordLike, code: DeadLetterCode, message: str) -> bytes:
    """The dead-letter contract: the reason, where it came from, and the untouched payload.

    Only a ``too_large`` payload is cut to its first ``TOO_LARGE_KEPT_BYTES`` (flagged with
    ``payload_truncated``): carrying it whole could exceed the broker's message size.
    """
    letter: dict[str, Any] = {
        "error": {"code": code.value, "message": message},
        "source": source_of(record),
    }
    payload = record.value
    if (
        payload is not None
        and len(payload) > TOO_LARGE_KEPT_BYTES
        and (code is DeadLetterCode.TOO_LARGE)
    ):
        payload = payload[:TOO_LARGE_KEPT_BYTES]
        letter["payload_truncated"] = True
    if payload is not None:
        try:
            letter["payload"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            letter["payload_b64"] = base64.b64encode(payload).decode("ascii")
    else:
        letter["payload"] = None
    return _encoder.encode(letter)
