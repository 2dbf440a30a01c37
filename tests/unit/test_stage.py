"""processor.stage.SpatialStage: one batch in, points and dead letters out, per the schemas."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from processor.geo.spatial import Reprojector
from processor.geo.stage import SpatialStage
from processor.messages.codec import DeadLetterCode
from processor.messages.encode import ERROR_HEADER
from processor.tools.synthetic import BAD_INPUTS, readings

from .records import Record, process, reading, record

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
MAX_BYTES = 1_048_576
STAGE = SpatialStage(Reprojector("EPSG:3857"), MAX_BYTES)


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def check(name: str, document: Any) -> None:
    errors = sorted(validator(name).iter_errors(document), key=str)
    assert not errors, f"{name}: {[e.message for e in errors]}"
    if name in ("reading", "point"):
        # "format": "date-time" is only annotated without rfc3339-validator: check it here.
        parsed = datetime.fromisoformat(document["timestamp"])
        assert parsed.utcoffset() is not None
        if name == "point":
            assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("name", ["reading", "point", "dead-letter"])
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    assert validator(name).schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_dead_letter_schema_names_every_code_and_no_other() -> None:
    properties = validator("dead-letter").schema["properties"]
    assert properties["error"]["properties"]["code"]["enum"] == [c.value for c in DeadLetterCode]


def test_crs() -> None:
    assert STAGE.crs == "EPSG:3857"


def test_points_in_input_order_keyed_by_sensor_id() -> None:
    records = [
        record(reading(sensor_id=f"s-{i}", latitude=i, longitude=-i), offset=100 + i, key=None)
        for i in range(20)
    ]
    result = process(STAGE, records)
    assert result.dead_letters == []
    assert result.codes == Counter()
    assert [key for key, _, _ in result.points] == [f"s-{i}".encode() for i in range(20)]
    for i, (_, value, headers) in enumerate(result.points):
        assert headers == []
        point = json.loads(value)
        check("point", point)
        assert point["source"] == {"topic": "sensor.readings", "partition": 0, "offset": 100 + i}
        assert point["crs"] == "EPSG:3857"
        assert point["sensor_id"] == f"s-{i}"


def test_point_key_is_sensor_id_not_record_key() -> None:
    result = process(STAGE, [record(reading(sensor_id="real"), key=b"other")])
    assert [key for key, _, _ in result.points] == [b"real"]


def test_mixed_batch_points_and_dead_letters() -> None:
    headers = [("traceparent", b"00-abc-def-01"), ("origin", b"\x00\xff")]
    records = [
        record(reading(sensor_id="a"), 0),
        record(b"not json", 1, key=b"k1", headers=headers),
        record(reading(sensor_id="b", latitude=89.9), 2, key=b"b"),
        record(reading(sensor_id="c"), 3),
        record(None, 4, key=b"tomb"),
        record(reading(sensor_id="d", latitude=-90.5), 5, key=None),
        record(reading(sensor_id="e"), 6),
    ]
    result = process(STAGE, records)
    assert [key for key, _, _ in result.points] == [b"a", b"c", b"e"]
    assert [json.loads(v)["source"]["offset"] for _, v, _ in result.points] == [0, 3, 6]
    letters = [(key, json.loads(value), hdrs) for key, value, hdrs in result.dead_letters]
    assert [letter["source"]["offset"] for _, letter, _ in letters] == [1, 2, 4, 5]
    assert [key for key, _, _ in letters] == [b"k1", b"b", b"tomb", None]
    assert [letter["error"]["code"] for _, letter, _ in letters] == [
        "invalid_json",
        "out_of_range",
        "invalid_json",
        "out_of_range",
    ]
    assert letters[0][2] == [*headers, (ERROR_HEADER, b"invalid_json")]
    assert letters[1][2] == [(ERROR_HEADER, b"out_of_range")]
    assert letters[2][1]["payload"] is None
    assert result.codes == Counter({"invalid_json": 2, "out_of_range": 2})
    for _, value, _ in result.points:
        check("point", json.loads(value))
    for _, letter, _ in letters:
        check("dead-letter", letter)


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_each_bad_input_gives_one_dead_letter_with_its_code(kind: str) -> None:
    payload, code = BAD_INPUTS[kind]
    headers = [("h", b"v")]
    result = process(STAGE, [record(payload, offset=7, key=b"key", headers=headers)])
    assert result.points == []
    assert result.codes == Counter({code: 1})
    [(key, value, out_headers)] = result.dead_letters
    assert key == b"key"
    assert out_headers == [("h", b"v"), (ERROR_HEADER, code.encode())]
    letter = json.loads(value)
    assert letter["error"]["code"] == code
    assert letter["source"] == {"topic": "sensor.readings", "partition": 0, "offset": 7}
    check("dead-letter", letter)


def test_all_bad_inputs_in_one_batch_keep_their_order() -> None:
    kinds = sorted(BAD_INPUTS)
    records = [record(BAD_INPUTS[k][0], offset=i) for i, k in enumerate(kinds)]
    result = process(STAGE, records)
    assert result.points == []
    codes = [json.loads(v)["error"]["code"] for _, v, _ in result.dead_letters]
    assert codes == [BAD_INPUTS[k][1] for k in kinds]
    assert [h[-1] for _, _, h in result.dead_letters] == [(ERROR_HEADER, c.encode()) for c in codes]
    assert result.codes == Counter(BAD_INPUTS[k][1] for k in kinds)


def test_sample_stream_every_record_published_or_dead_lettered() -> None:
    samples = list(readings(400, sensors=20, invalid_ratio=0.25, seed=3))
    records = [
        Record("sensor.readings", 2, 1000 + i, key, value, [("n", str(i).encode())])
        for i, (key, value, _) in enumerate(samples)
    ]
    result = process(STAGE, records)
    valid = [i for i, (_, _, code) in enumerate(samples) if code is None]
    invalid = [i for i, (_, _, code) in enumerate(samples) if code is not None]
    assert invalid, "the sample should contain bad records"
    points = [json.loads(v) for _, v, _ in result.points]
    assert [p["source"]["offset"] - 1000 for p in points] == valid
    letters = [json.loads(v) for _, v, _ in result.dead_letters]
    assert [d["source"]["offset"] - 1000 for d in letters] == invalid
    assert [d["error"]["code"] for d in letters] == [samples[i][2] for i in invalid]
    for i, point in zip(valid, points, strict=True):
        check("reading", json.loads(samples[i][1]))
        check("point", point)
        original = json.loads(samples[i][1])
        assert {k: point[k] for k in original if k != "timestamp"} == {
            k: v for k, v in original.items() if k != "timestamp"
        }
    for letter in letters:
        check("dead-letter", letter)


def test_empty_batch() -> None:
    result = process(STAGE, [])
    assert result.points == []
    assert result.dead_letters == []
    assert result.codes == Counter()


def test_valid_reading_fixture_matches_the_reading_schema() -> None:
    check("reading", json.loads(reading(timestamp="2026-11-23T10:00:00+05:30", pm25=1)))
