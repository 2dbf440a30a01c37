"""Readings in a source CRS of their own (`crs` + `x`/`y`): mixed batches against direct pyproj
transforms, unknown CRSs dead-lettered without harming the batch, transformers cached."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from pyproj import Transformer

import processor.geo.spatial
from processor.geo.spatial import Reprojector
from processor.geo.stage import SpatialStage
from processor.messages.codec import DeadLetterCode

from .records import Processed, Record, process, reading, record

TARGET = "EPSG:3857"
MAX_BYTES = 1 << 20
METRES = 1e-6
DEGREES = 1e-9
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

#: Source CRS -> (easting range, northing range) inside its area of use.
GRIDS = {
    "EPSG:32632": ((300_000.0, 700_000.0), (4_800_000.0, 5_600_000.0)),  # UTM 32N
    "EPSG:2056": ((2_490_000.0, 2_830_000.0), (1_080_000.0, 1_290_000.0)),  # Swiss LV95
    "EPSG:27700": ((100_000.0, 650_000.0), (20_000.0, 1_200_000.0)),  # British National Grid
}

_encoder = msgspec.json.Encoder()


def projected(sensor_id: str, crs: Any, x: Any, y: Any, **fields: Any) -> bytes:
    document: dict[str, Any] = {"sensor_id": sensor_id, "timestamp": "2026-11-23T10:00:00+01:00"}
    if crs is not None:
        document["crs"] = crs
    if x is not None:
        document["x"] = x
    if y is not None:
        document["y"] = y
    return _encoder.encode({**document, **fields})


@cache
def direct(source: str, target: str) -> Transformer:
    return Transformer.from_crs(source, target, always_xy=True)


@cache
def point_schema() -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / "point.schema.json").read_text()))


def stage() -> SpatialStage:
    return SpatialStage(Reprojector(TARGET), MAX_BYTES)


def decoded(result: Processed) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]]]:
    points = [msgspec.json.decode(value) for _, value, _ in result.points]
    letters = [msgspec.json.decode(value) for _, value, _ in result.dead_letters]
    return points, {letter["source"]["offset"]: letter for letter in letters}


def mixed_batch(
    count: int, seed: int
) -> tuple[list[Record], list[tuple[str | None, float, float]]]:
    """Interleaved WGS-84 and grid readings; the inputs as (crs or None, x|lon, y|lat)."""
    rng = np.random.default_rng(seed)
    kinds = [None, *GRIDS]
    records: list[Record] = []
    inputs: list[tuple[str | None, float, float]] = []
    for i in range(count):
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind is None:
            lon, lat = float(rng.uniform(-179.0, 179.0)), float(rng.uniform(-80.0, 80.0))
            records.append(record(reading(f"wgs-{i}", lat, lon), i))
            inputs.append((None, lon, lat))
        else:
            (e0, e1), (n0, n1) = GRIDS[kind]
            x, y = round(float(rng.uniform(e0, e1)), 3), round(float(rng.uniform(n0, n1)), 3)
            records.append(record(projected(f"grid-{i}", kind, x, y, pm25=1.5), i))
            inputs.append((kind, x, y))
    return records, inputs


def check_point(point: dict[str, Any], given: tuple[str | None, float, float]) -> None:
    source, a, b = given
    assert point["crs"] == TARGET
    assert not list(point_schema().iter_errors(point))
    if source is None:
        x, y = direct("EPSG:4326", TARGET).transform(a, b)
        assert "source_crs" not in point
        assert (point["longitude"], point["latitude"]) == (a, b)
    else:
        x, y = direct(source, TARGET).transform(a, b)
        lon, lat = direct(source, "EPSG:4326").transform(a, b)
        assert point["source_crs"] == source
        assert abs(point["longitude"] - lon) <= DEGREES
        assert abs(point["latitude"] - lat) <= DEGREES
    assert abs(point["x"] - x) <= METRES
    assert abs(point["y"] - y) <= METRES


def test_mixed_batch_matches_direct_transforms() -> None:
    records, inputs = mixed_batch(2_000, seed=32632)
    assert {kind for kind, _, _ in inputs} == {None, *GRIDS}
    result = process(stage(), records)
    points, letters = decoded(result)
    assert letters == {}
    assert len(points) == len(records)
    for point in points:
        offset = point["source"]["offset"]
        check_point(point, inputs[offset])
        if inputs[offset][0] is not None:
            assert point["pm25"] == 1.5  # measurements carried through
    assert [p["source"]["offset"] for p in points] == list(range(len(records)))
    for (key, _, _), point in zip(result.points, points, strict=True):
        assert key == point["sensor_id"].encode()


@pytest.mark.parametrize(
    ("crs", "x", "y"),
    [
        pytest.param("EPSG:32632", 465_000, 5_247_000, id="utm32n-zurich-ints"),
        pytest.param("EPSG:2056", 2_683_000.0, 1_247_000.0, id="lv95-zurich"),
        pytest.param("EPSG:27700", 530_000.0, 180_000.0, id="bng-london"),
        pytest.param("epsg:32632", 500_000.0, 5_300_000.0, id="lower-case-authority"),
        pytest.param("EPSG:4326", 8.54, 47.37, id="explicit-wgs84"),
    ],
)
def test_one_grid_reading(crs: str, x: float, y: float) -> None:
    result = process(stage(), [record(projected("g-1", crs, x, y), 0)])
    points, letters = decoded(result)
    assert letters == {}
    check_point(points[0], (crs, float(x), float(y)))
    assert result.points[0][0] == b"g-1"


def test_a_grid_reading_far_outside_the_target_area_is_out_of_range() -> None:
    """UTM northing near the pole: lat beyond EPSG:3857's 85.06 deg."""
    result = process(stage(), [record(projected("polar", "EPSG:32632", 500_000.0, 9_900_000.0), 0)])
    _, letters = decoded(result)
    assert letters[0]["error"]["code"] == DeadLetterCode.OUT_OF_RANGE.value


@pytest.mark.parametrize(
    "crs",
    [
        pytest.param("EPSG:9999999", id="no-such-code"),
        pytest.param("not a crs", id="text"),
        pytest.param("EPSG:", id="empty-code"),
        pytest.param("+proj=nonsense", id="bad-proj-string"),
        pytest.param("ESRI:104903", id="moon-geographic"),  # a real CRS with no way to WGS 84
        pytest.param("IAU_2015:30100", id="moon-iau"),
        pytest.param("E" * 65, id="too-long"),
    ],
)
def test_unknown_crs_is_a_dead_letter_and_spares_the_batch(crs: str) -> None:
    batch = [
        record(reading("wgs-0", 47.37, 8.54), 0),
        record(projected("bad", crs, 500_000.0, 5_300_000.0), 1, key=b"bad"),
        record(projected("utm-2", "EPSG:32632", 465_000.0, 5_247_000.0), 2),
        record(projected("bad-again", crs, 1.0, 2.0), 3),
        record(reading("wgs-4", 51.5, -0.12), 4),
    ]
    result = process(stage(), batch)
    points, letters = decoded(result)
    assert [p["sensor_id"] for p in points] == ["wgs-0", "utm-2", "wgs-4"]
    check_point(points[1], ("EPSG:32632", 465_000.0, 5_247_000.0))
    check_point(points[0], (None, 8.54, 47.37))
    assert set(letters) == {1, 3}
    for offset in (1, 3):
        assert letters[offset]["error"]["code"] == DeadLetterCode.UNKNOWN_CRS.value
        assert letters[offset]["payload"] == batch[offset].value.decode()  # type: ignore[union-attr]
    assert result.codes == {"unknown_crs": 2}
    assert result.dead_letters[0][0] == b"bad"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(projected("a", "EPSG:2056", None, 1_200_000.0), "missing_field", id="no-x"),
        pytest.param(projected("a", "EPSG:2056", 2_600_000.0, None), "missing_field", id="no-y"),
        pytest.param(
            projected("a", "EPSG:2056", None, None, latitude=47.0, longitude=8.0),
            "missing_field",
            id="crs-with-lat-lon-only",
        ),
        pytest.param(
            projected("a", "EPSG:2056", "2600000", 1_200_000.0), "wrong_type", id="x-text"
        ),
        pytest.param(
            projected("a", "EPSG:2056", 2_600_000.0, "1200000"), "wrong_type", id="y-text"
        ),
        pytest.param(projected("a", "EPSG:2056", True, 1_200_000.0), "wrong_type", id="x-bool"),
        pytest.param(projected("a", "EPSG:2056", [1], 1.0), "wrong_type", id="x-array"),
        pytest.param(projected("a", 2056, 2_600_000.0, 1_200_000.0), "wrong_type", id="crs-number"),
        pytest.param(projected("a", "", 2_600_000.0, 1_200_000.0), "unknown_crs", id="crs-empty"),
        pytest.param(
            b'{"sensor_id": "a", "timestamp": "2026-11-23T10:00:00Z", "crs": "EPSG:2056",'
            b' "x": 1e999, "y": 1200000}',
            "out_of_range",
            id="x-overflow",
        ),
        pytest.param(projected("a", "EPSG:2056", 1e16, 1_200_000.0), "out_of_range", id="x-huge"),
        pytest.param(
            b'{"timestamp": "2026-11-23T10:00:00Z", "crs": "EPSG:2056", "x": 1, "y": 2}',
            "missing_field",
            id="no-sensor-id",
        ),
    ],
)
def test_broken_grid_readings(payload: bytes, code: str) -> None:
    batch = [record(payload, 0), record(projected("ok", "EPSG:2056", 2_600_000.0, 1_200_000.0), 1)]
    result = process(stage(), batch)
    points, letters = decoded(result)
    assert letters[0]["error"]["code"] == code, letters[0]["error"]
    assert [p["sensor_id"] for p in points] == ["ok"]


# --- transformers are cached -------------------------------------------------------------


class _Counting:
    """Wraps a pyproj Transformer, counting transform calls (one per CRS group expected)."""

    def __init__(self, inner: Transformer, name: str, calls: list[tuple[str, int]]) -> None:
        self._inner = inner
        self._name = name
        self._calls = calls

    def transform(self, x: Any, y: Any, **kwargs: Any) -> Any:
        self._calls.append((self._name, int(np.size(x))))
        return self._inner.transform(x, y, **kwargs)


def test_transformers_are_cached_and_each_crs_is_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    reprojector = Reprojector(TARGET)
    built: list[str] = []
    calls: list[tuple[str, int]] = []
    real = Transformer.from_crs

    def from_crs(source: Any, target: Any, **kwargs: Any) -> Any:
        name = str(source)
        built.append(name)
        return _Counting(real(source, target, **kwargs), name, calls)

    monkeypatch.setattr(processor.geo.spatial.Transformer, "from_crs", staticmethod(from_crs))
    subject = SpatialStage(reprojector, MAX_BYTES)
    first = reprojector._from_source("EPSG:32632")
    assert first is not None
    for batch_seed in range(3):
        records, inputs = mixed_batch(300, seed=batch_seed)
        calls.clear()
        result = process(subject, records)
        assert len(result.points) == len(records)
        groups = {kind for kind, _, _ in inputs if kind is not None}
        assert sorted(name for name, _ in calls) == sorted(groups)  # one call per CRS
        assert sum(size for _, size in calls) == sum(1 for k, _, _ in inputs if k is not None)
    assert sorted(built) == sorted(GRIDS)  # built once each, over three batches
    assert reprojector._from_source("EPSG:32632") is first
    assert reprojector._from_source("EPSG:9999999") is None
    assert reprojector._from_source("EPSG:9999999") is None
    assert sorted(built) == sorted(GRIDS)


def test_the_same_transformer_serves_later_batches() -> None:
    reprojector = Reprojector(TARGET)
    subject = SpatialStage(reprojector, MAX_BYTES)
    process(subject, [record(projected("a", "EPSG:2056", 2_600_000.0, 1_200_000.0), 0)])
    cached = reprojector._from_source("EPSG:2056")
    process(subject, [record(projected("b", "EPSG:2056", 2_700_000.0, 1_250_000.0), 1)])
    assert reprojector._from_source("EPSG:2056") is cached
