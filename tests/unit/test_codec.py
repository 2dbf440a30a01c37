"""processor.codec: bytes to columns and back, against the README's record contracts."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from processor.messages.codec import (
    Columns,
    DeadLetterCode,
    Rejection,
    decode_batch,
)
from processor.messages.encode import (
    CUT_PAYLOAD_KEPT_BYTES,
    NO_QC,
    encode_dead_letter,
    encode_point,
    encode_points,
)
from processor.tools.synthetic import BAD_INPUTS

from .records import reading, record

MAX_BYTES = 1_048_576

#: Bad inputs the codec cannot see: they are valid JSON readings that only a CRS's area of use
#: refuses (checked through the spatial stage in test_stage.py).
SPATIAL_ONLY = {"polar_latitude"}
CODEC_BAD = sorted(set(BAD_INPUTS) - SPATIAL_ONLY)


def decode_one(raw: bytes | None, max_bytes: int = MAX_BYTES) -> tuple[Columns, list[Rejection]]:
    return decode_batch([raw], max_bytes)


def accepted_document(raw: bytes | None) -> dict | bytes:
    """What the codec keeps of an accepted record: its object, or its original bytes when
    the point will be published by appending to them."""
    columns, rejections = decode_one(raw)
    assert rejections == []
    assert columns.index == [0]
    return columns.documents[0]


def accepted(raw: bytes | None) -> dict:
    document = accepted_document(raw)
    return msgspec.json.decode(document) if isinstance(document, bytes) else document


def rejected_code(raw: bytes | None, max_bytes: int = MAX_BYTES) -> DeadLetterCode:
    columns, rejections = decode_one(raw, max_bytes)
    assert columns.index == []
    assert len(rejections) == 1
    assert rejections[0].index == 0
    assert rejections[0].message
    return rejections[0].code


def letter_of(
    payload: bytes | None,
    max_bytes: int = MAX_BYTES,
    code: DeadLetterCode = DeadLetterCode.INVALID_JSON,
) -> dict:
    return json.loads(encode_dead_letter(record(payload), code, "m", max_bytes))


def carried(letter: dict) -> bytes:
    if "payload" in letter:
        return letter["payload"].encode("utf-8")
    return base64.b64decode(letter["payload_b64"], validate=True)


# bad inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CODEC_BAD)
def test_each_bad_input_gives_exactly_one_rejection_with_its_code(kind: str) -> None:
    payload, code = BAD_INPUTS[kind]
    columns, rejections = decode_batch([payload], MAX_BYTES)
    assert [(r.index, r.code.value) for r in rejections] == [(0, code)]
    assert "\n" not in rejections[0].message
    assert columns.index == []
    assert columns.documents == []
    assert columns.x.shape == (0,)
    assert columns.y.shape == (0,)


@pytest.mark.parametrize("kind", sorted(SPATIAL_ONLY))
def test_spatial_only_bad_inputs_pass_the_codec(kind: str) -> None:
    payload, _ = BAD_INPUTS[kind]
    accepted(payload)


def test_rejections_point_at_their_rows_in_a_mixed_batch() -> None:
    kinds = CODEC_BAD
    values: list[bytes | None] = []
    expected: list[tuple[int, str]] = []
    valid_rows: list[int] = []
    for i, kind in enumerate(kinds):
        values.append(reading(sensor_id=f"ok-{i}"))
        valid_rows.append(len(values) - 1)
        payload, code = BAD_INPUTS[kind]
        values.append(payload)
        expected.append((len(values) - 1, code))
    columns, rejections = decode_batch(values, MAX_BYTES)
    assert [(r.index, r.code.value) for r in rejections] == expected
    assert columns.index == valid_rows
    assert columns.sensor_ids == [f"ok-{i}" for i in range(len(kinds))]
    assert columns.x.dtype == np.float64
    assert columns.y.dtype == np.float64
    assert len(columns.x) == len(columns.y) == len(valid_rows)


def test_tombstone_is_invalid_json() -> None:
    assert rejected_code(None) == DeadLetterCode.INVALID_JSON


def test_empty_payload_is_invalid_json() -> None:
    assert rejected_code(b"") == DeadLetterCode.INVALID_JSON


def test_payload_size_bound_is_inclusive() -> None:
    raw = reading()
    accepted_columns, rejections = decode_batch([raw], len(raw))
    assert rejections == []
    assert accepted_columns.index == [0]
    assert rejected_code(raw, max_bytes=len(raw) - 1) == DeadLetterCode.TOO_LARGE


# valid records ------------------------------------------------------------------------


EXTRA_FIELDS = {
    "pm25": 12.5,
    "no2": 0.1,
    "count": 7,
    "huge": 123456789012345678901234567890,
    "tiny": 1e-300,
    "negative_zero": -0.0,
    "flag": True,
    "missing": None,
    "unit": "µg/m³ 🌫",
    "nested": {"a": [1, {"b": None}], "c": "d"},
    "list": [1, 2.5, "three"],
    "local_time": "2026-11-23T10:00:00+02:00",
}


def test_extra_measurement_fields_are_carried_through_untouched() -> None:
    raw = reading(**EXTRA_FIELDS)
    document = accepted(raw)
    out = json.loads(encode_point(document, 1.0, 2.0, "EPSG:3857", record(raw, offset=3)))
    original = json.loads(raw)
    for name, value in EXTRA_FIELDS.items():
        assert out[name] == original[name] == value, name
    assert math.copysign(1.0, out["negative_zero"]) == -1.0
    assert out["sensor_id"] == "aq-1"
    assert out["latitude"] == original["latitude"]
    assert out["longitude"] == original["longitude"]


def test_columns_hold_the_coordinates() -> None:
    raws = [reading(latitude=1.5, longitude=-2.25), reading(latitude=-33.0, longitude=151.2)]
    columns, rejections = decode_batch(raws, MAX_BYTES)
    assert rejections == []
    np.testing.assert_array_equal(columns.y, [1.5, -33.0])
    np.testing.assert_array_equal(columns.x, [-2.25, 151.2])


def test_integer_coordinates_are_accepted_as_floats() -> None:
    columns, rejections = decode_batch(
        [b'{"sensor_id":"a","timestamp":"2026-11-23T10:00:00Z","latitude":47,"longitude":-8}'],
        MAX_BYTES,
    )
    assert rejections == []
    assert columns.y.tolist() == [47.0]
    assert columns.x.tolist() == [-8.0]


@pytest.mark.parametrize(
    ("timestamp", "instant"),
    [
        ("2026-11-23T10:00:00Z", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T10:00:00+00:00", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T10:00:00-00:00", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T10:00:00+05:30", datetime(2026, 11, 23, 4, 30, tzinfo=UTC)),
        ("2026-11-23T01:15:00-08:00", datetime(2026, 11, 23, 9, 15, tzinfo=UTC)),
        ("2026-11-23T23:30:00-02:00", datetime(2026, 11, 24, 1, 30, tzinfo=UTC)),
        ("2026-11-23T10:00:00.5Z", datetime(2026, 11, 23, 10, 0, 0, 500_000, tzinfo=UTC)),
        (
            "2026-11-23T10:00:00.123456+00:00",
            datetime(2026, 11, 23, 10, 0, 0, 123_456, tzinfo=UTC),
        ),
        (
            "2026-11-23T12:00:00.250+02:00",
            datetime(2026, 11, 23, 10, 0, 0, 250_000, tzinfo=UTC),
        ),
        ("2024-02-29T00:30:00+01:00", datetime(2024, 2, 28, 23, 30, tzinfo=UTC)),
    ],
)
def test_timestamps_are_normalised_to_utc_z(timestamp: str, instant: datetime) -> None:
    document = accepted(reading(timestamp=timestamp))
    encoded = msgspec.json.decode(msgspec.json.encode(document))["timestamp"]
    assert isinstance(encoded, str)
    assert encoded.endswith("Z"), encoded
    parsed = datetime.fromisoformat(encoded)
    assert parsed.utcoffset() == timedelta(0)
    assert parsed == instant


def test_point_timestamp_is_utc_z() -> None:
    raw = reading(timestamp="2026-11-23T10:00:00.75+09:00")
    out = json.loads(encode_point(accepted_document(raw), 0.0, 0.0, "EPSG:3857", record(raw)))
    assert out["timestamp"].endswith("Z")
    assert datetime.fromisoformat(out["timestamp"]) == datetime(
        2026, 11, 23, 1, 0, 0, 750_000, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("latitude", "longitude"),
    [
        (90.0, 0.0),
        (-90.0, 0.0),
        (0.0, 180.0),
        (0.0, -180.0),
        (90.0, 180.0),
        (-90.0, -180.0),
        (0.0, 0.0),
        (-0.0, -0.0),
        (-0.0, 0.0),
        (0.0, -0.0),
    ],
)
def test_exact_range_bounds_are_accepted_by_the_codec(latitude: float, longitude: float) -> None:
    columns, rejections = decode_one(reading(latitude=latitude, longitude=longitude))
    assert rejections == []
    assert columns.y[0] == latitude
    assert columns.x[0] == longitude
    assert math.copysign(1.0, columns.y[0]) == math.copysign(1.0, latitude)
    assert math.copysign(1.0, columns.x[0]) == math.copysign(1.0, longitude)


@pytest.mark.parametrize(
    ("latitude", "longitude"),
    [(90.000001, 0.0), (-90.000001, 0.0), (0.0, 180.000001), (0.0, -180.000001)],
)
def test_just_outside_the_range_is_out_of_range(latitude: float, longitude: float) -> None:
    assert rejected_code(reading(latitude=latitude, longitude=longitude)) == (
        DeadLetterCode.OUT_OF_RANGE
    )


@pytest.mark.parametrize("sensor_id", ["a", "s" * 128, "é" * 128, "0"])
def test_sensor_id_lengths_accepted(sensor_id: str) -> None:
    columns, rejections = decode_one(reading(sensor_id=sensor_id))
    assert rejections == []
    assert columns.sensor_ids == [sensor_id]


@pytest.mark.parametrize("sensor_id", ["", "s" * 129, "é" * 129])
def test_sensor_id_lengths_refused(sensor_id: str) -> None:
    assert rejected_code(reading(sensor_id=sensor_id)) == DeadLetterCode.OUT_OF_RANGE


@pytest.mark.parametrize("sensor_id", [7, None, ["a"], {"id": "a"}, True])
def test_non_string_sensor_id_is_wrong_type(sensor_id: object) -> None:
    raw = msgspec.json.encode(
        {"sensor_id": sensor_id, "timestamp": "2026-11-23T10:00:00Z", "latitude": 1, "longitude": 2}
    )
    assert rejected_code(raw) == DeadLetterCode.WRONG_TYPE


# encoders -----------------------------------------------------------------------------


def test_encode_point_adds_x_y_crs_and_source() -> None:
    raw = reading(sensor_id="alps-00001", pm25=3.5)
    rec = record(raw, offset=42, topic="sensor.readings", partition=3)
    out = json.loads(encode_point(accepted_document(raw), 1234.5, -6789.25, "EPSG:3857", rec))
    assert out["x"] == 1234.5
    assert out["y"] == -6789.25
    assert out["crs"] == "EPSG:3857"
    assert out["source"] == {"topic": "sensor.readings", "partition": 3, "offset": 42}
    assert out["sensor_id"] == "alps-00001"
    assert out["pm25"] == 3.5


@pytest.mark.parametrize("with_regions", [False, True])
def test_encode_points_is_encode_point_row_by_row_across_partitions(with_regions: bool) -> None:
    """The batch path (plain bytes appended to, one source prefix per run of a partition)
    gives what the per-record path gives, whatever the mix of partitions, topics and forms."""
    raws = [reading(sensor_id=f"s-{i}", pm25=i / 3) for i in range(6)]
    raws[4] = reading(sensor_id="s-4", timestamp="2026-11-23T11:00:00+01:00")  # object path
    documents = [accepted_document(raw) for raw in raws]
    assert [isinstance(d, bytes) for d in documents] == [True] * 4 + [False, True]
    topics = ["a", "a", "a", "b", "a", "a"]
    partitions = [0, 0, 1, 1, 1, 0]
    offsets = [7, 8, 3, 3, 10**12, 9]
    x = [1.5 * i - 2 for i in range(6)]
    y = [1e-7 * i for i in range(6)]
    regions = [[f"r{i}"] * (i % 3) for i in range(6)] if with_regions else None
    batch = encode_points(documents, x, y, "EPSG:3857", (topics, partitions, offsets), regions)
    for i, raw in enumerate(raws):
        where = record(raw, offset=offsets[i], topic=topics[i], partition=partitions[i])
        tags = regions[i] if regions is not None else None
        one = encode_point(accepted_document(raw), x[i], y[i], "EPSG:3857", where, tags)
        assert json.loads(batch[i]) == json.loads(one)
        assert json.loads(batch[i])["source"] == {
            "topic": topics[i],
            "partition": partitions[i],
            "offset": offsets[i],
        }


def test_dead_letter_of_utf8_payload_is_text() -> None:
    raw = b'{"sensor_id": "caf\xc3\xa9", "oops"'
    rec = record(raw, offset=9, partition=1)
    letter = json.loads(encode_dead_letter(rec, DeadLetterCode.INVALID_JSON, "bad json", MAX_BYTES))
    assert letter["payload"] == raw.decode("utf-8")
    assert "payload_b64" not in letter
    assert letter["error"] == {"code": "invalid_json", "message": "bad json"}
    assert letter["source"] == {"topic": "sensor.readings", "partition": 1, "offset": 9}


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe\x00", b'{"sensor_id": "\xff"}', bytes(range(256)), b"\xc3"]
)
def test_dead_letter_of_non_utf8_payload_is_base64(raw: bytes) -> None:
    letter = letter_of(raw)
    assert "payload" not in letter
    assert base64.b64decode(letter["payload_b64"], validate=True) == raw


def test_dead_letter_of_tombstone_has_null_payload() -> None:
    letter = letter_of(None)
    assert letter["payload"] is None
    assert "payload_b64" not in letter


def test_dead_letter_of_empty_payload_is_empty_text() -> None:
    letter = letter_of(b"")
    assert letter["payload"] == ""


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_dead_letter_payload_round_trips_every_bad_input(kind: str) -> None:
    payload, code = BAD_INPUTS[kind]
    letter = letter_of(payload, code=DeadLetterCode(code))
    assert letter["error"]["code"] == code
    if len(payload) >= MAX_BYTES:
        assert carried(letter) == payload[:CUT_PAYLOAD_KEPT_BYTES]
        assert letter["payload_truncated"] is True
    else:
        assert carried(letter) == payload
        assert "payload_truncated" not in letter


def test_deeply_nested_json_is_too_deep_not_too_large() -> None:
    payload = b'{"sensor_id": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert len(payload) > 10_000
    assert rejected_code(payload) is DeadLetterCode.TOO_DEEP
    letter = letter_of(payload, code=DeadLetterCode.TOO_DEEP)
    assert carried(letter) == payload
    assert letter.keys() == {"error", "source", "payload"}


@pytest.mark.parametrize("size", [CUT_PAYLOAD_KEPT_BYTES + 1, 100_000, MAX_BYTES - 1])
def test_dead_letter_under_the_maximum_payload_size_is_complete(size: int) -> None:
    payload = b"{" + b"x" * (size - 1)
    for code in DeadLetterCode:
        letter = letter_of(payload, code=code)
        assert carried(letter) == payload
        assert letter.keys() == {"error", "source", "payload"}


@pytest.mark.parametrize("extra", [0, 1, 5_000])
def test_dead_letter_at_or_over_the_maximum_is_cut_with_size_and_sha256(extra: int) -> None:
    max_bytes = 10_000
    payload = bytes(range(256)) * ((max_bytes + extra) // 256) + b"z" * ((max_bytes + extra) % 256)
    letter = letter_of(payload, max_bytes, DeadLetterCode.TOO_LARGE)
    assert carried(letter) == payload[:CUT_PAYLOAD_KEPT_BYTES]
    assert letter["payload_truncated"] is True
    assert letter["payload_size"] == len(payload) == max_bytes + extra
    assert letter["payload_sha256"] == hashlib.sha256(payload).hexdigest()


def test_a_cut_never_ends_text_mid_character() -> None:
    payload = b"a" + "\u00e9".encode() * MAX_BYTES  # the cut falls inside an é
    letter = letter_of(payload)
    assert letter["payload"] == "a" + "\u00e9" * ((CUT_PAYLOAD_KEPT_BYTES - 2) // 2)
    assert letter["payload_size"] == len(payload)


def test_a_cut_of_non_utf8_payload_is_a_base64_prefix() -> None:
    payload = b"\xff" * (MAX_BYTES * 2)
    letter = letter_of(payload)
    assert base64.b64decode(letter["payload_b64"]) == payload[:CUT_PAYLOAD_KEPT_BYTES]
    assert letter["payload_truncated"] is True


def test_a_payload_over_a_small_maximum_but_within_the_kept_bytes_is_whole() -> None:
    payload = b"x" * 1_000
    letter = letter_of(payload, max_bytes=64)
    assert carried(letter) == payload
    assert "payload_truncated" not in letter


def test_plain_records_keep_their_bytes_and_others_are_normalised() -> None:
    """A UTC-Z reading without output field names is appended to, byte for byte; a reading
    with an offset timestamp or a field the output sets goes through the object path."""
    plain = reading(timestamp="2026-11-23T10:00:00.5Z")
    assert accepted_document(plain) == plain
    assert isinstance(accepted_document(reading(timestamp="2026-11-23T10:00:00+00:00")), dict)
    assert isinstance(accepted_document(reading(x=1)), dict)
    assert isinstance(accepted_document(reading(source="lab")), dict)
    out = json.loads(encode_point(plain, 1.0, 2.0, "EPSG:3857", record(plain), ["a", "b"]))
    assert out["timestamp"] == "2026-11-23T10:00:00.5Z"
    assert (out["x"], out["y"], out["crs"], out["regions"]) == (1.0, 2.0, "EPSG:3857", ["a", "b"])
    assert json.loads(plain).items() <= out.items()


@pytest.mark.parametrize("own", [{"qc": {"pm25": {"flag": 4}}}, {"qc_flag": 4}, {"qc": "ok"}])
def test_an_input_with_quality_control_of_its_own_gets_the_processors_once(
    own: dict[str, object],
) -> None:
    """The point's ``qc`` and ``qc_flag`` are the processor's (replaced with QC on): an
    input's own are replaced, never sent beside them as a second key of the same name."""
    raw = reading(**own)
    document = accepted_document(raw)
    assert isinstance(document, dict)
    point = encode_point(document, 1.0, 2.0, "EPSG:3857", record(raw))
    pairs = json.loads(point, object_pairs_hook=lambda items: items)
    names = [name for name, _ in pairs]
    assert names.count("qc") == 1
    assert names.count("qc_flag") == 1
    assert point.endswith(NO_QC)


def test_plain_path_still_validates_the_timestamp() -> None:
    assert (
        rejected_code(reading(timestamp="2026-13-45T10:00:00Z")) is DeadLetterCode.INVALID_TIMESTAMP
    )
