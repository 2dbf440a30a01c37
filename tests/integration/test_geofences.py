"""Geofences end to end through a real broker: readings tagged with the watersheds shipped as
test data, readings outside every watershed dead-lettered, a national-grid reading included."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import geopandas as gpd
import jsonschema
import msgspec
import pytest
import shapely
from pyproj import Transformer

from processor.tools.synthetic import REGIONS, readings
from processor.wiring import kafka_processor
from tests.integration.broker import TestBroker
from tests.integration.kafka import Topics, produce, read_all, settings_for, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WATERSHEDS = ROOT / "tests" / "data" / "watersheds.geojson"
SCHEMAS = ROOT / "schemas"

#: Region of processor.samples -> the id every reading from it must carry (None: uncovered).
BASIN = {"sierra": "sierra-nevada", "alps": "alps", "murray": None, "fiji": None}
SUB_BASINS = {
    "sierra": {"upper-sacramento", "san-joaquin"},
    "alps": {"rhine", "po", "lakes"},
}
NEAR_EDGE_DEG = 1e-6  # reprojection may move a point this close to an edge across it

_encoder = msgspec.json.Encoder()


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _grid_reading(sensor_id: str, crs: str, x: float, y: float) -> bytes:
    return _encoder.encode(
        {
            "sensor_id": sensor_id,
            "timestamp": "2026-11-23T11:00:00+01:00",
            "crs": crs,
            "x": x,
            "y": y,
            "discharge_m3s": 12.5,
        }
    )


def test_the_shipped_watersheds_cover_two_sample_regions() -> None:
    frame = gpd.read_file(WATERSHEDS)
    assert frame.crs.to_epsg() == 4326
    assert list(frame["id"])[:1] == ["sierra-nevada"]
    for region, (west, south, east, north) in REGIONS.items():
        area = shapely.box(west, south, east, north)
        basin = BASIN[region]
        if basin is None:
            assert not frame.geometry.intersects(area).any(), region
        else:
            assert frame.geometry[frame["id"] == basin].iloc[0].contains(area), region
            subs = frame.geometry[frame["id"].isin(SUB_BASINS[region])]
            assert shapely.union_all(subs.values).contains(area), region


#: Zurich in UTM 32N and in Swiss LV95: inside "alps", on the rhine/po overlap.
ZURICH = [
    ("utm-1", "EPSG:32632", 465_000.0, 5_247_000.0),
    ("lv95-1", "EPSG:2056", 2_683_000.0, 1_247_000.0),
]


def _grid_inputs() -> list[tuple[bytes, bytes, str | None]]:
    """(key, value, expected dead-letter code or None) of the readings in a source CRS."""
    return [
        *((s.encode(), _grid_reading(s, crs, x, y), None) for s, crs, x, y in ZURICH),
        # London on the British National Grid: valid, but outside every watershed.
        (b"bng-1", _grid_reading("bng-1", "EPSG:27700", 530_000.0, 180_000.0), "outside_area"),
        (b"bad-1", _grid_reading("bad-1", "EPSG:9999999", 1.0, 2.0), "unknown_crs"),
    ]


def _region(document: dict[str, Any]) -> str:
    return str(document["sensor_id"]).rsplit("-", 1)[0]


def _expected_codes(
    sample: list[tuple[bytes | None, bytes, str | None]],
) -> tuple[Counter[str], int]:
    """Dead-letter codes the whole input must produce, and how many readings are tagged."""
    codes: Counter[str] = Counter(code for _, _, code in sample if code)
    tagged = 0
    for _, value, code in sample:
        if code is None:
            if BASIN.get(_region(json.loads(value)), "grid") is None:
                codes["outside_area"] += 1
            else:
                tagged += 1
    return codes, tagged


class _Watersheds:
    """The shipped file, read independently of the processor: expected ids in lon/lat."""

    def __init__(self) -> None:
        frame = gpd.read_file(WATERSHEDS)
        self.ids = [str(i) for i in frame["id"]]
        self.polygons = list(frame.geometry)
        self.boundaries = [p.boundary for p in self.polygons]

    def expected(self, lon: float, lat: float) -> list[str] | None:
        """Ids containing the point; None when it is too close to an edge to be sure."""
        point = shapely.Point(lon, lat)
        if any(b.distance(point) < NEAR_EDGE_DEG for b in self.boundaries):
            return None
        return [i for i, p in zip(self.ids, self.polygons, strict=True) if p.intersects(point)]


def _check_points(points: list[Any], watersheds: _Watersheds) -> int:
    """Every output tagged as expected; the number checked exactly (away from any edge)."""
    point_schema = _validator("point.schema.json")
    exact = 0
    seen: set[str] = set()
    for record in points:
        document = json.loads(record.value)
        point_schema.validate(document)
        assert record.key == document["sensor_id"].encode()
        regions = document["regions"]
        assert regions, document
        assert regions == [i for i in watersheds.ids if i in regions]  # file order, no repeats
        seen.update(regions)
        if "source_crs" in document:
            continue
        region = _region(document)
        assert BASIN[region] in regions
        assert SUB_BASINS[region] & set(regions), document
        expected = watersheds.expected(document["longitude"], document["latitude"])
        if expected is not None:
            assert regions == expected, document
            exact += 1
    assert seen == set(watersheds.ids)  # every watershed is hit by some reading
    return exact


def _check_grid_points(points: list[Any]) -> None:
    documents = {d["sensor_id"]: d for d in (json.loads(r.value) for r in points)}
    for sensor, crs, x_in, y_in in ZURICH:
        document = documents[sensor]
        assert document["source_crs"] == crs
        assert document["crs"] == "EPSG:3857"
        assert document["regions"] == ["alps", "rhine", "po"]
        assert document["discharge_m3s"] == 12.5
        assert document["timestamp"] == "2026-11-23T10:00:00Z"
        x, y = Transformer.from_crs(crs, "EPSG:3857", always_xy=True).transform(x_in, y_in)
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x_in, y_in)
        assert abs(document["x"] - x) < 1e-6
        assert abs(document["y"] - y) < 1e-6
        assert abs(document["longitude"] - lon) < 1e-9
        assert abs(document["latitude"] - lat) < 1e-9


async def test_readings_are_tagged_or_dead_lettered_outside(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    sample = [*readings(5_000, sensors=200, invalid_ratio=0.01, seed=17), *_grid_inputs()]
    produced = await produce(bootstrap, topics.input, ((k, v) for k, v, _ in sample))
    assert produced == len(sample)
    expected_codes, tagged = _expected_codes(sample)
    assert expected_codes["outside_area"] > 1_000
    assert tagged > 2_000

    settings = settings_for(
        broker,
        topics,
        tmp_path,
        geofences=WATERSHEDS,
        geofence_id_field="id",
        outside_policy="dead_letter",
    )
    processor = kafka_processor(settings)
    running = asyncio.create_task(processor.run())
    try:
        await wait_for(lambda: processor.stats.finished >= produced, what="all processed")
    finally:
        processor.stop()
        exit_code = await running
    assert exit_code == 0
    assert processor.stats.published + processor.stats.dead_lettered_total == produced

    points = await read_all(bootstrap, topics.output, processor.stats.published)
    letters = await read_all(bootstrap, topics.dlq, processor.stats.dead_lettered_total)
    assert len(points) + len(letters) == produced
    assert len(points) == tagged

    assert Counter(json.loads(r.value)["error"]["code"] for r in letters) == expected_codes
    for letter in (json.loads(r.value) for r in letters):
        if letter["error"]["code"] == "outside_area":
            region = _region(json.loads(letter["payload"]))
            assert region == "bng" or BASIN[region] is None, letter

    exact = _check_points(points, _Watersheds())
    assert exact > tagged - 10
    _check_grid_points(points)


async def test_a_crs_without_a_way_to_wgs84_is_a_dead_letter_not_a_stop(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    """ESRI:104903 (Moon 2000) parses as a CRS but has no transformation to WGS 84."""
    batch = [
        (b"utm-1", _grid_reading("utm-1", "EPSG:32632", 465_000.0, 5_247_000.0)),
        (b"moon-1", _grid_reading("moon-1", "ESRI:104903", 10.0, 20.0)),
        (b"utm-2", _grid_reading("utm-2", "EPSG:32632", 466_000.0, 5_248_000.0)),
    ]
    produced = await produce(bootstrap, topics.input, batch, partition=0)
    settings = settings_for(
        broker, topics, tmp_path, geofences=WATERSHEDS, outside_policy="dead_letter"
    )
    processor = kafka_processor(settings)
    running = asyncio.create_task(processor.run())
    try:
        await wait_for(
            lambda: processor.stats.finished >= produced or running.done(), what="processed"
        )
        assert not running.done(), "the processor stopped on one reading's CRS"
    finally:
        processor.stop()
        exit_code = await running
    assert exit_code == 0
    letters = await read_all(bootstrap, topics.dlq, 1)
    assert [json.loads(r.value)["error"]["code"] for r in letters] == ["unknown_crs"]
    points = await read_all(bootstrap, topics.output, 2)
    assert sorted(json.loads(r.value)["sensor_id"] for r in points) == ["utm-1", "utm-2"]
