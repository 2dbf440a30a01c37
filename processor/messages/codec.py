"""Bytes to columns: the input contract (README, docs/design.md), no geometry.

Valid records take a fast path entirely inside msgspec (decode, then ``convert`` to a typed
view); only a record that fails it is classified field by field to find the precise reason.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, NamedTuple, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from processor.messages.measures import fields_of

SENSOR_ID_MAX = 128
CRS_MAX = 64
COORDINATE_MAX = 1e15  # refuses inf while admitting any real projected coordinate
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
    TOO_DEEP = "too_deep"
    UNKNOWN_CRS = "unknown_crs"
    DUPLICATE = "duplicate"  # the window state's: a reading it already counted (dedup on)


class Located(Protocol):
    """Where a consumed record came from: what the ``source`` of an output names."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


class Consumed(Located, Protocol):
    """A consumed record's payload and where it came from: all a dead letter needs."""

    @property
    def value(self) -> bytes | None: ...


class RecordLike(Protocol):
    """What the processor reads of a fetched record: aiokafka's bare record has it (see
    :mod:`processor.kafka._aiokafka_private`); topic and partition are its chunk's."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...


class Where(NamedTuple):
    """A :class:`Consumed` built from columns, for the rows that need one."""

    topic: str
    partition: int
    offset: int
    value: bytes | None = None


_SensorId = Annotated[str, msgspec.Meta(min_length=1, max_length=SENSOR_ID_MAX)]
_Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
_Finite = Annotated[float, msgspec.Meta(ge=-COORDINATE_MAX, le=COORDINATE_MAX)]


class _Reading(msgspec.Struct):
    """The typed fields of the input contract; everything else is carried through untouched."""

    sensor_id: _SensorId
    timestamp: _Timestamp
    latitude: Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
    longitude: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]


class _PlainReading(msgspec.Struct):
    """The common case, decoded straight from bytes: lon/lat, a UTC ``Z`` timestamp, and none
    of the output's own field names (msgspec refuses them when present, at no extra cost).
    Such a record is published by appending the new fields to its original bytes, so its
    measurements pass through byte for byte."""

    sensor_id: _SensorId
    timestamp: str  # ending in Z and valid RFC 3339: checked apart, to keep the text
    latitude: Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
    longitude: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
    crs: msgspec.UnsetType = msgspec.UNSET
    x: msgspec.UnsetType = msgspec.UNSET
    y: msgspec.UnsetType = msgspec.UNSET
    source: msgspec.UnsetType = msgspec.UNSET
    regions: msgspec.UnsetType = msgspec.UNSET
    source_crs: msgspec.UnsetType = msgspec.UNSET
    qc: msgspec.UnsetType = msgspec.UNSET
    qc_flag: msgspec.UnsetType = msgspec.UNSET


class _ProjectedReading(msgspec.Struct):
    """A reading in a source CRS of its own: ``x``/``y`` in ``crs`` (easting/northing order)."""

    sensor_id: _SensorId
    timestamp: _Timestamp
    crs: Annotated[str, msgspec.Meta(min_length=1, max_length=CRS_MAX)]
    x: _Finite
    y: _Finite


@dataclass(slots=True)
class Rejection:
    index: int
    code: DeadLetterCode
    message: str


@dataclass(slots=True)
class Columns:
    """Records that passed decoding, as columns; ``index`` points into the input batch.

    ``x``/``y`` are the coordinates as given: longitude/latitude, except for rows whose
    ``source_crs`` is set (only present when some record named a CRS of its own).
    """

    index: list[int] = field(default_factory=list)
    #: The decoded object, or the original bytes of a record published by appending to them.
    documents: list[dict[str, Any] | bytes] = field(default_factory=list)
    sensor_ids: list[str] = field(default_factory=list)
    x: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    y: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    source_crs: list[str | None] | None = None
    #: With ``fields`` given to :func:`decode_batch` (windows on), what windows aggregate,
    #: read in the decode that validated each row: its timestamp (the ``Z`` text as given, or
    #: the UTC datetime) and its fields' values (:func:`processor.messages.measures.measures`
    #: makes them numbers).
    stamps: list[str | datetime] | None = None
    numbers: list[tuple[Any, ...]] | None = None


_decoder = msgspec.json.Decoder()
_plain_decoder = msgspec.json.Decoder(_PlainReading)
_timestamp_decoder = msgspec.json.Decoder(_Timestamp)


@functools.cache
def _measuring(
    fields: tuple[str, ...],
) -> tuple[Callable[[bytes], Any], Callable[[Any], tuple[Any, ...]] | None]:
    """A decoder of plain readings that also reads ``fields`` as numbers (float, or None
    where missing or null; any other value fails it), and the getter of their values as a
    tuple. Without fields, or with a field named as one of a plain reading's own, it is the
    plain decoder and no getter: :func:`fields_of` reads them."""
    if not fields or set(fields) & set(_PlainReading.__struct_encode_fields__):
        return _plain_decoder.decode, None
    names = [f"f{i}" for i in range(len(fields))]  # a field's name need not be a Python name
    measuring = msgspec.defstruct(
        "_MeasuredReading",
        [(name, float | None, None) for name in names],
        bases=(_PlainReading,),
        rename=dict(zip(names, fields, strict=True)),
    )
    getter = operator.attrgetter(*names)
    read = getter if len(names) > 1 else lambda plain: (getter(plain),)
    return msgspec.json.Decoder(measuring).decode, read


def decode_batch(
    values: list[bytes | None], max_bytes: int, fields: tuple[str, ...] | None = None
) -> tuple[Columns, list[Rejection]]:
    """Decode and type-check a batch; timestamps are normalised to UTC in the documents. With
    ``fields``, also each row's timestamp and values of them (``Columns.stamps``/``numbers``).

    The loop is the stage's hottest code: plain readings are taken inline, with the bound
    methods in locals; everything else goes through :func:`_take_other`.
    """
    columns = Columns()
    rejections: list[Rejection] = []
    xs: list[float] = []
    ys: list[float] = []
    crs_of: dict[int, str] = {}  # row -> source CRS, for the few records that name one
    index, documents, sensor_ids = columns.index, columns.documents, columns.sensor_ids
    decode_plain: Callable[[bytes], Any] = _plain_decoder.decode
    decode_timestamp = _timestamp_decoder.decode
    stamps: list[str | datetime] | None = None  # with fields: ``columns.stamps``
    numbers: list[tuple[Any, ...]] = []
    measured, read = fields or (), None
    if fields is not None:
        decode_plain, read = _measuring(fields)
        columns.stamps, columns.numbers = stamps, numbers = [], []
    for i, raw in enumerate(values):
        if raw is None or len(raw) > max_bytes:
            rejections.append(Rejection(i, *_too_large(raw, max_bytes)))
            continue
        try:
            try:
                plain = decode_plain(raw)
            except msgspec.ValidationError:
                if stamps is None:
                    raise
                plain = _plain_decoder.decode(raw)  # a field is not a number
            if plain.timestamp[-1:] == "Z":
                decode_timestamp(b'"%s"' % plain.timestamp.encode())  # valid, not just ...Z
                index.append(i)
                documents.append(raw)
                sensor_ids.append(plain.sensor_id)
                xs.append(plain.longitude)
                ys.append(plain.latitude)
                if stamps is not None:
                    stamps.append(plain.timestamp)
                    numbers.append(
                        read(plain)
                        if read is not None and type(plain) is not _PlainReading
                        else fields_of(raw, measured)  # a field is not a number, or clashes
                    )
                continue
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass
        _take_other(columns, rejections, i, raw, measured, xs=xs, ys=ys, crs_of=crs_of)
    columns.x = np.array(xs, dtype=np.float64)
    columns.y = np.array(ys, dtype=np.float64)
    if crs_of:
        columns.source_crs = [crs_of.get(row) for row in range(len(xs))]
    return columns, rejections


def _take_other(
    columns: Columns,
    rejections: list[Rejection],
    i: int,
    raw: bytes,
    fields: tuple[str, ...],
    *,
    xs: list[float],
    ys: list[float],
    crs_of: dict[int, str],
) -> None:
    """A record that is not a plain reading: into the columns (with its coordinates and its
    CRS, if it names one), or into the rejections."""
    decoded = _decode_other(i, raw)
    if isinstance(decoded, Rejection):
        rejections.append(decoded)
        return
    document, sensor_id, x, y, crs = decoded
    if crs is not None:
        crs_of[len(xs)] = crs
    columns.index.append(i)
    columns.documents.append(document)
    columns.sensor_ids.append(sensor_id)
    xs.append(x)
    ys.append(y)
    if columns.stamps is not None and columns.numbers is not None:
        columns.stamps.append(document["timestamp"])
        columns.numbers.append(fields_of(document, fields))


def _decode_other(
    i: int, raw: bytes
) -> tuple[dict[str, Any], str, float, float, str | None] | Rejection:
    """A record that is not a plain reading: (document, sensor_id, x, y, source CRS or None)
    when valid in some other form, else its rejection."""
    try:
        document = _decoder.decode(raw)
        if type(document) is dict and "crs" in document:
            projected = msgspec.convert(document, _ProjectedReading)
            reading: _Reading | _ProjectedReading = projected
            x, y, crs = projected.x, projected.y, projected.crs
        else:
            reading = msgspec.convert(document, _Reading)
            x, y, crs = reading.longitude, reading.latitude, None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return Rejection(i, *_classify(raw, exc))
    timestamp = reading.timestamp
    if timestamp.utcoffset():
        timestamp = timestamp.astimezone(UTC)
    document["timestamp"] = timestamp
    return document, reading.sensor_id, x, y, crs


_TOO_DEEP = "JSON nested deeper than the decoder allows"


def _too_large(raw: bytes | None, max_bytes: int) -> tuple[DeadLetterCode, str]:
    if raw is None:
        return DeadLetterCode.INVALID_JSON, "record has no value (tombstone)"
    return DeadLetterCode.TOO_LARGE, f"payload of {len(raw)} bytes exceeds {max_bytes}"


def _classify(raw: bytes, exc: Exception) -> tuple[DeadLetterCode, str]:
    """Precise reason for a record the fast path refused (slow path, bad records only).

    msgspec spends one level of Python's recursion limit per level of nesting and raises
    RecursionError past it: at about 1,000 levels (the limit less the stack in use), which
    is 2 KB of brackets, so this is a reason of its own, not a matter of size.
    """
    if isinstance(exc, RecursionError):
        return DeadLetterCode.TOO_DEEP, _TOO_DEEP
    try:
        document = _decoder.decode(raw)
    except RecursionError:
        return DeadLetterCode.TOO_DEEP, _TOO_DEEP
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
    projected = "crs" in document
    required = ("crs", "x", "y") if projected else ("latitude", "longitude")
    for name in ("sensor_id", "timestamp", *required):
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
    if projected and not isinstance(document["crs"], str):
        return DeadLetterCode.WRONG_TYPE, f"crs must be a string, got {_json_type(document['crs'])}"
    if projected and not 1 <= len(document["crs"]) <= CRS_MAX:
        return DeadLetterCode.UNKNOWN_CRS, f"crs must be 1-{CRS_MAX} characters"
    limits = (
        (("x", COORDINATE_MAX), ("y", COORDINATE_MAX))
        if projected
        else (("latitude", 90.0), ("longitude", 180.0))
    )
    for name, limit in limits:
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
