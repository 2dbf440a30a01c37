"""processor.geofence.Geofences: point-in-polygon tagging equal to geopandas' sjoin, broken files
refused at start, the outside policy, and heavy geometry kept off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import msgspec
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from processor.errors import ConfigError
from processor.geo.geofence import Geofences
from processor.geo.spatial import Reprojector
from processor.geo.stage import SpatialStage
from processor.messages.codec import DeadLetterCode
from processor.messages.encode import ERROR_HEADER

from .records import Record, process, reading, record

TARGETS = ["EPSG:3857", "EPSG:4326"]
GEOFENCES_SETTING = "PROCESSOR_GEOFENCES"
ID_SETTING = "PROCESSOR_GEOFENCE_ID_FIELD"
MAX_BYTES = 1 << 20

Ring = list[list[float]]


# --- test data ---------------------------------------------------------------------------


def box_ring(west: float, south: float, east: float, north: float) -> Ring:
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


def polygon(*rings: Ring) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def feature(fid: Any, geometry: dict[str, Any] | None, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": {"id": fid, **properties}, "geometry": geometry}


def write_geojson(path: Path, features: Iterable[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    return path


def _circle(lon: float, lat: float, radius: float) -> Ring:
    ring = shapely.get_coordinates(shapely.Point(lon, lat).buffer(radius, quad_segs=16).exterior)
    return ring.tolist()


def _star(lon: float, lat: float, outer: float, inner: float, tips: int = 7) -> Ring:
    angles = np.linspace(0, 2 * np.pi, 2 * tips, endpoint=False)
    radii = np.where(np.arange(2 * tips) % 2 == 0, outer, inner)
    ring = np.column_stack([lon + radii * np.cos(angles), lat + radii * np.sin(angles)])
    return [*ring.tolist(), ring[0].tolist()]


#: Overlaps, a hole (with a polygon inside the hole), a multipolygon, shared edges, a concave
#: star and a many-vertex circle; all within 85 deg of latitude so EPSG:3857 holds them.
FENCES = [
    feature("box-a", polygon(box_ring(0, 0, 10, 10))),
    feature("box-b", polygon(box_ring(5, 5, 15, 15))),
    feature("donut", polygon(box_ring(20, 0, 30, 10), box_ring(23, 3, 27, 7))),
    feature(
        "islands",
        {
            "type": "MultiPolygon",
            "coordinates": [
                [box_ring(40, 0, 42, 2)],
                [box_ring(44, 0, 46, 2), box_ring(44.5, 0.5, 45.5, 1.5)],
                [[[40, 4], [46, 4], [43, 8], [40, 4]]],
            ],
        },
    ),
    feature("circle", polygon(_circle(8, 8, 4))),
    feature("in-the-hole", polygon(box_ring(24, 4, 26, 6))),
    feature("star", polygon(_star(35, 12, 5, 2))),
    feature("touching", polygon(box_ring(10, 0, 12, 5))),
    feature("north", polygon(box_ring(-4, 60, 50, 80))),
]
IDS = [f["properties"]["id"] for f in FENCES]
AREA = (-5.0, -5.0, 51.0, 82.0)  # lon/lat box around every fence


@pytest.fixture(scope="module")
def fence_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_geojson(tmp_path_factory.mktemp("fences") / "fences.geojson", FENCES)


def to_target(lon: Any, lat: Any, target: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = Transformer.from_crs("EPSG:4326", target, always_xy=True).transform(
        np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    )
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def points_at(lon: Any, lat: Any, target: str) -> np.ndarray:
    return shapely.points(*to_target(lon, lat, target))


# --- the reference: geopandas' sjoin on the same polygons --------------------------------


@cache
def reference_polygons(path: Path, target: str) -> gpd.GeoDataFrame:
    return gpd.read_file(path).to_crs(target)


def sjoin_regions(polygons: gpd.GeoDataFrame, points: np.ndarray, target: str) -> list[list[str]]:
    left = gpd.GeoDataFrame(geometry=gpd.GeoSeries(points, crs=target))
    joined = gpd.sjoin(left, polygons[["id", "geometry"]], how="inner", predicate="intersects")
    regions: list[list[str]] = [[] for _ in range(len(points))]
    for row, right in sorted(
        zip(joined.index.tolist(), joined["index_right"].tolist(), strict=True)
    ):
        regions[row].append(str(polygons["id"].iloc[right]))
    return regions


def boundary_points(polygons: gpd.GeoDataFrame) -> np.ndarray:
    """Every vertex (of shells and holes), every edge midpoint, and points exactly on the
    edges that are axis-aligned in the target CRS (boxes stay boxes in EPSG:3857)."""
    rings = shapely.get_rings(shapely.get_parts(np.asarray(polygons.geometry.values)))
    points: list[np.ndarray] = []
    for ring in rings:
        xy = shapely.get_coordinates(ring)
        start, end = xy[:-1], xy[1:]
        points += [xy, (start + end) / 2]
        vertical = start[:, 0] == end[:, 0]
        on_edge = start[vertical].copy()
        on_edge[:, 1] = start[vertical, 1] * 0.3 + end[vertical, 1] * 0.7
        horizontal = start[:, 1] == end[:, 1]
        along = start[horizontal].copy()
        along[:, 0] = start[horizontal, 0] * 0.75 + end[horizontal, 0] * 0.25
        points += [on_edge, along]
    return shapely.points(np.concatenate(points))


def random_points(count: int, target: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    west, south, east, north = AREA
    return points_at(rng.uniform(west, east, count), rng.uniform(south, north, count), target)


# --- point in polygon ---------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_random_and_boundary_points_match_sjoin(fence_file: Path, target: str) -> None:
    fences = Geofences.load(fence_file, "id", target)
    assert fences.ids == IDS
    polygons = reference_polygons(fence_file, target)
    points = np.concatenate([random_points(20_000, target, seed=11), boundary_points(polygons)])
    expected = sjoin_regions(polygons, points, target)
    assert fences.tag(points) == expected
    tagged = sum(1 for regions in expected if regions)
    overlapping = sum(1 for regions in expected if len(regions) > 1)
    assert tagged > 2_000  # the comparison is not vacuous
    assert overlapping > 200


@pytest.mark.parametrize("target", TARGETS)
def test_hand_picked_points(fence_file: Path, target: str) -> None:
    fences = Geofences.load(fence_file, "id", target)
    cases = [
        ((0, 0), ["box-a"]),  # a corner
        ((10, 2), ["box-a", "touching"]),  # a shared edge
        ((7, 7), ["box-a", "box-b", "circle"]),  # three overlapping, in file order
        ((13, 13), ["box-b"]),
        ((25, 5), ["in-the-hole"]),  # inside the hole, inside the polygon in the hole
        ((23.5, 5), []),  # inside the hole only
        ((23, 5), ["donut"]),  # on the hole's edge
        ((21, 1), ["donut"]),
        ((41, 1), ["islands"]),  # first part of the multipolygon
        ((45, 1), []),  # the hole of its second part
        ((44.25, 1), ["islands"]),
        ((43, 5), ["islands"]),  # third part
        ((43, 1), []),  # between the parts
        ((35, 12), ["star"]),
        ((35, 16.5), []),  # between two tips of the star
        ((-3, 61), ["north"]),
        ((-4.5, 1), []),
    ]
    points = points_at([c[0][0] for c in cases], [c[0][1] for c in cases], target)
    assert fences.tag(points) == [c[1] for c in cases]


def test_no_points_and_no_hits(fence_file: Path) -> None:
    fences = Geofences.load(fence_file, "id", "EPSG:3857")
    assert fences.tag(np.array([], dtype=object)) == []
    assert fences.tag(points_at([-100.0, 100.0], [-40.0, 40.0], "EPSG:3857")) == [[], []]


@st.composite
def mixed_points(
    draw: st.DrawFn, special: list[tuple[float, float]]
) -> list[tuple[str, tuple[float, float]]]:
    """Random lon/lat (as target coordinates later) and exact boundary/vertex coordinates."""
    west, south, east, north = AREA
    anywhere = st.tuples(st.floats(west, east), st.floats(south, north)).map(lambda p: ("ll", p))
    on_boundary = st.sampled_from(special).map(lambda p: ("xy", p))
    return draw(st.lists(st.one_of(anywhere, on_boundary), min_size=1, max_size=60))


@cache
def _special(path: Path, target: str) -> list[tuple[float, float]]:
    xy = shapely.get_coordinates(boundary_points(reference_polygons(path, target)))
    return [(float(x), float(y)) for x, y in xy]


@pytest.mark.parametrize("target", TARGETS)
def test_any_points_match_sjoin(fence_file: Path, target: str) -> None:
    fences = Geofences.load(fence_file, "id", target)
    polygons = reference_polygons(fence_file, target)
    special = _special(fence_file, target)

    @settings(max_examples=80, deadline=None)
    @given(mixed_points(special))
    def check(picks: list[tuple[str, tuple[float, float]]]) -> None:
        coordinates = []
        for kind, (a, b) in picks:
            if kind == "ll":
                x, y = to_target([a], [b], target)
                coordinates.append((float(x[0]), float(y[0])))
            else:
                coordinates.append((a, b))
        points = shapely.points(np.array(coordinates))
        assert fences.tag(points) == sjoin_regions(polygons, points, target)

    check()


def test_a_geopackage_in_a_projected_crs_is_reprojected(tmp_path: Path) -> None:
    """Fences stored in UTM 32N, tagged in EPSG:3857 and EPSG:4326 like sjoin after to_crs."""
    path = tmp_path / "utm.gpkg"
    lonlat = gpd.read_file(write_geojson(tmp_path / "src.geojson", FENCES[:5]))
    zone = gpd.GeoDataFrame(
        {"id": lonlat["id"]}, geometry=lonlat.geometry.values, crs="EPSG:4326"
    ).to_crs("EPSG:32632")
    zone.to_file(path, driver="GPKG")
    for target in TARGETS:
        fences = Geofences.load(path, "id", target)
        polygons = gpd.read_file(path).to_crs(target)
        points = np.concatenate([random_points(5_000, target, seed=5), boundary_points(polygons)])
        assert fences.tag(points) == sjoin_regions(polygons, points, target)
        inside = points_at([7.0], [7.0], target)
        assert fences.tag(inside) == [["box-a", "box-b", "circle"]]


# --- the antimeridian ---------------------------------------------------------------------

ANTIMERIDIAN = [
    feature("fiji", polygon(box_ring(177, -20, 183, -15))),  # drawn past +180
    feature("chukotka", polygon(box_ring(-183, 62, -177, 66))),  # drawn past -180
    feature("far-east", polygon(box_ring(181, 0, 185, 4))),  # wholly past +180
    feature("greenwich", polygon(box_ring(-1, 50, 1, 52))),  # an ordinary one beside them
]


@pytest.fixture(scope="module")
def antimeridian_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_geojson(tmp_path_factory.mktemp("anti") / "antimeridian.geojson", ANTIMERIDIAN)


@pytest.mark.parametrize("target", TARGETS)
def test_antimeridian_areas_hold_points_on_both_sides(antimeridian_file: Path, target: str) -> None:
    fences = Geofences.load(antimeridian_file, "id", target)
    cases = [
        ((179.0, -17.0), ["fiji"]),
        ((-179.0, -17.0), ["fiji"]),
        ((180.0, -17.0), ["fiji"]),
        ((-180.0, -17.0), ["fiji"]),
        ((177.0, -17.0), ["fiji"]),  # western edge
        ((-177.0, -17.0), ["fiji"]),  # eastern edge (183 - 360)
        ((-177.0, -20.0), ["fiji"]),  # a corner
        ((176.9, -17.0), []),
        ((-176.9, -17.0), []),
        ((0.0, -17.0), []),  # the fold must not span the whole world
        ((100.0, -17.0), []),
        ((-100.0, -17.0), []),
        ((179.5, 64.0), ["chukotka"]),
        ((-179.5, 64.0), ["chukotka"]),
        ((178.0, 64.0), ["chukotka"]),
        ((176.0, 64.0), []),
        ((-178.0, 2.0), ["far-east"]),
        ((-175.0, 2.0), ["far-east"]),
        ((178.0, 2.0), []),
        ((0.0, 51.0), ["greenwich"]),
    ]
    points = points_at([c[0][0] for c in cases], [c[0][1] for c in cases], target)
    assert fences.tag(points) == [c[1] for c in cases]


@pytest.mark.parametrize("target", TARGETS)
def test_antimeridian_matches_sjoin_on_the_split_polygons(
    antimeridian_file: Path, target: str
) -> None:
    """sjoin on the polygons as drawn would disagree; on hand-split ones it must agree."""
    split = gpd.GeoDataFrame(
        {"id": ["fiji", "chukotka", "far-east", "greenwich"]},
        geometry=[
            shapely.MultiPolygon(
                [shapely.box(177, -20, 180, -15), shapely.box(-180, -20, -177, -15)]
            ),
            shapely.MultiPolygon([shapely.box(177, 62, 180, 66), shapely.box(-180, 62, -177, 66)]),
            shapely.box(-179, 0, -175, 4),
            shapely.box(-1, 50, 1, 52),
        ],
        crs="EPSG:4326",
    ).to_crs(target)
    rng = np.random.default_rng(3)
    lon = rng.uniform(-180.0, 180.0, 10_000)
    lon = np.concatenate(
        [lon, rng.uniform(170.0, 180.0, 5_000), rng.uniform(-180.0, -170.0, 5_000)]
    )
    lat = rng.choice([-17.5, 2.0, 64.0, 51.0], len(lon)) + rng.uniform(-4, 4, len(lon))
    points = points_at(lon, lat, target)
    fences = Geofences.load(antimeridian_file, "id", target)
    expected = sjoin_regions(split, points, target)
    assert fences.tag(points) == expected
    assert sum(1 for r in expected if r == ["fiji"]) > 300
    assert sum(1 for r in expected if r == ["chukotka"]) > 300


# --- broken files refused at start ----------------------------------------------------------


def assert_names(error: pytest.ExceptionInfo[ConfigError], *words: str) -> None:
    message = str(error.value)
    assert message.startswith("invalid setting ")
    assert "\n" not in message
    for word in words:
        assert word in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.geojson"
    with pytest.raises(ConfigError) as error:
        Geofences.load(path, "id", "EPSG:3857")
    assert_names(error, GEOFENCES_SETTING, str(path))


def test_a_directory_is_not_a_geofence_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        Geofences.load(tmp_path, "id", "EPSG:3857")
    assert_names(error, GEOFENCES_SETTING)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(bytes(range(256)) * 8, id="garbage-bytes"),
        pytest.param(b'{"type": "FeatureCollection", "features": [', id="truncated-json"),
        pytest.param(b"", id="empty"),
    ],
)
def test_unreadable_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.geojson"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        Geofences.load(path, "id", "EPSG:3857")
    assert_names(error, GEOFENCES_SETTING, "broken.geojson")


def test_no_id_column_names_the_id_setting(tmp_path: Path) -> None:
    path = write_geojson(
        tmp_path / "f.geojson",
        [
            {
                "type": "Feature",
                "properties": {"name": "x"},
                "geometry": polygon(box_ring(0, 0, 1, 1)),
            }
        ],
    )
    with pytest.raises(ConfigError) as error:
        Geofences.load(path, "watershed", "EPSG:3857")
    assert_names(error, ID_SETTING, "'watershed'", "name")


def test_another_id_column_can_be_named(tmp_path: Path) -> None:
    path = write_geojson(
        tmp_path / "f.geojson",
        [feature("ignored", polygon(box_ring(0, 0, 1, 1)), huc="HUC-18040008")],
    )
    fences = Geofences.load(path, "huc", "EPSG:3857")
    assert fences.tag(points_at([0.5], [0.5], "EPSG:3857")) == [["HUC-18040008"]]


def test_numeric_ids_become_their_text(tmp_path: Path) -> None:
    path = write_geojson(
        tmp_path / "f.geojson",
        [feature(7, polygon(box_ring(0, 0, 1, 1))), feature(12, polygon(box_ring(0, 0, 2, 2)))],
    )
    fences = Geofences.load(path, "id", "EPSG:3857")
    assert fences.tag(points_at([0.5], [0.5], "EPSG:3857")) == [["7", "12"]]


def test_a_feature_without_an_id_is_refused(tmp_path: Path) -> None:
    """A feature whose id is null must not tag readings with "nan" (nor turn 7 into "7.0")."""
    path = write_geojson(
        tmp_path / "f.geojson",
        [
            feature(7, polygon(box_ring(0, 0, 1, 1))),
            feature(None, polygon(box_ring(2, 2, 3, 3))),
        ],
    )
    with pytest.raises(ConfigError) as error:
        Geofences.load(path, "id", "EPSG:3857")
    assert_names(error, ID_SETTING)


@pytest.mark.parametrize(
    ("geometry", "kind"),
    [
        ({"type": "Point", "coordinates": [1, 1]}, "Point"),
        ({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "LineString"),
        ({"type": "MultiPoint", "coordinates": [[0, 0], [1, 1]]}, "MultiPoint"),
    ],
)
def test_a_feature_that_is_not_a_polygon_is_refused_by_name(
    tmp_path: Path, geometry: dict[str, Any], kind: str
) -> None:
    path = write_geojson(
        tmp_path / "f.geojson",
        [feature("fine", polygon(box_ring(0, 0, 1, 1))), feature("gauge-station-12", geometry)],
    )
    with pytest.raises(ConfigError) as error:
        Geofences.load(path, "id", "EPSG:3857")
    assert_names(error, GEOFENCES_SETTING, "'gauge-station-12'", kind)


def test_a_feature_without_geometry_is_refused_by_name(tmp_path: Path) -> None:
    path = write_geojson(
        tmp_path / "f.geojson",
        [feature("fine", polygon(box_ring(0, 0, 1, 1))), feature("empty-zone", None)],
    )
    with pytest.raises(ConfigError) as error:
        Geofences.load(path, "id", "EPSG:3857")
    assert_names(error, GEOFENCES_SETTING, "'empty-zone'")


@pytest.mark.parametrize("target", TARGETS)
def test_a_bow_tie_is_repaired(tmp_path: Path, target: str) -> None:
    """A self-intersecting ring (0,0)-(2,2)-(2,0)-(0,2): two triangles meeting at (1,1)."""
    bow_tie = polygon([[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]])
    assert not shapely.from_geojson(json.dumps(bow_tie)).is_valid
    path = write_geojson(
        tmp_path / "f.geojson",
        [feature("bow-tie", bow_tie), feature("box", polygon(box_ring(5, 5, 6, 6)))],
    )
    fences = Geofences.load(path, "id", target)
    assert fences.ids == ["bow-tie", "box"]
    cases = [
        ((0.2, 1.0), ["bow-tie"]),  # left triangle
        ((1.8, 1.0), ["bow-tie"]),  # right triangle
        ((1.0, 0.2), []),  # below the crossing: outside both triangles
        ((1.0, 1.8), []),
        ((0.0, 0.0), ["bow-tie"]),
        ((5.5, 5.5), ["box"]),
    ]
    points = points_at([c[0][0] for c in cases], [c[0][1] for c in cases], target)
    assert fences.tag(points) == [c[1] for c in cases]


def test_overlapping_parts_of_one_multipolygon_are_repaired(tmp_path: Path) -> None:
    """Invalid: two parts that overlap. Repaired, a point in both parts has the id once."""
    geometry = {
        "type": "MultiPolygon",
        "coordinates": [[box_ring(0, 0, 2, 2)], [box_ring(1, 1, 3, 3)]],
    }
    path = write_geojson(tmp_path / "f.geojson", [feature("merged", geometry)])
    fences = Geofences.load(path, "id", "EPSG:3857")
    points = points_at([1.5, 0.5, 2.5, 2.5], [1.5, 0.5, 2.5, 0.5], "EPSG:3857")
    assert fences.tag(points) == [["merged"], ["merged"], ["merged"], []]


@pytest.mark.parametrize(
    "ring",
    [
        pytest.param([[0, 0], [1, 1], [2, 2], [0, 0]], id="collinear"),
        pytest.param([[0, 0], [1, 1], [1, 1], [0, 0]], id="degenerate"),
    ],
)
def test_a_polygon_that_cannot_be_repaired_is_refused_by_name(tmp_path: Path, ring: Ring) -> None:
    path = write_geojson(
        tmp_path / "f.geojson",
        [feature("fine", polygon(box_ring(0, 0, 1, 1))), feature("flat-marsh", polygon(ring))],
    )
    with pytest.raises(ConfigError) as error:
        Geofences.load(path, "id", "EPSG:3857")
    assert_names(error, GEOFENCES_SETTING, "'flat-marsh'")


# --- the outside policy, through the stage ------------------------------------------------

POLICY_FENCES = [
    feature("zurich", polygon(box_ring(8.4, 47.3, 8.7, 47.45))),
    feature("canton", polygon(box_ring(8.3, 47.1, 9.0, 47.7))),
]


@pytest.fixture(scope="module")
def policy_fences(tmp_path_factory: pytest.TempPathFactory) -> Geofences:
    path = write_geojson(tmp_path_factory.mktemp("policy") / "zh.geojson", POLICY_FENCES)
    return Geofences.load(path, "id", "EPSG:3857")


def policy_batch() -> list[Record]:
    return [
        record(reading("in-both", 47.37, 8.54), 0),
        record(reading("outside", 46.2, 6.15), 1),  # Geneva
        record(reading("canton-only", 47.6, 8.9), 2),
        record(b"not json", 3),
        record(reading("polar", 89.9, 8.54), 4),  # outside EPSG:3857's area of use
        record(reading("edge", 47.7, 8.5), 5),  # on the canton's northern edge
        record(reading("far", -33.9, 151.2, pm25=4.0), 6),  # Sydney
    ]


def documents(values: Iterable[tuple[bytes | None, bytes, Any]]) -> Iterator[dict[str, Any]]:
    for _, value, _ in values:
        yield msgspec.json.decode(value)


def test_outside_points_are_dead_lettered(policy_fences: Geofences) -> None:
    stage = SpatialStage(Reprojector("EPSG:3857"), MAX_BYTES, policy_fences, "dead_letter")
    batch = policy_batch()
    result = process(stage, batch)
    points = {d["sensor_id"]: d for d in documents(result.points)}
    assert list(points) == ["in-both", "canton-only", "edge"]
    assert points["in-both"]["regions"] == ["zurich", "canton"]
    assert points["canton-only"]["regions"] == ["canton"]
    assert points["edge"]["regions"] == ["canton"]
    letters = [msgspec.json.decode(value) for _, value, _ in result.dead_letters]
    codes = {letter["source"]["offset"]: letter["error"]["code"] for letter in letters}
    assert codes == {
        1: DeadLetterCode.OUTSIDE_AREA.value,
        3: DeadLetterCode.INVALID_JSON.value,
        4: DeadLetterCode.OUT_OF_RANGE.value,
        6: DeadLetterCode.OUTSIDE_AREA.value,
    }
    outside = next(letter for letter in letters if letter["source"]["offset"] == 1)
    assert outside["payload"] == batch[1].value.decode()  # type: ignore[union-attr]
    headers = {letter[1]: letter[2] for letter in result.dead_letters}
    assert (ERROR_HEADER, b"outside_area") in headers[result.dead_letters[0][1]]
    assert result.codes == {"outside_area": 2, "invalid_json": 1, "out_of_range": 1}


def test_outside_points_pass_with_no_regions(policy_fences: Geofences) -> None:
    stage = SpatialStage(Reprojector("EPSG:3857"), MAX_BYTES, policy_fences, "pass")
    result = process(stage, policy_batch())
    points = {d["sensor_id"]: d for d in documents(result.points)}
    assert list(points) == ["in-both", "outside", "canton-only", "edge", "far"]
    assert points["outside"]["regions"] == []
    assert points["far"]["regions"] == []
    assert points["far"]["pm25"] == 4.0
    assert points["in-both"]["regions"] == ["zurich", "canton"]
    assert result.codes == {"invalid_json": 1, "out_of_range": 1}


@pytest.mark.parametrize("target", TARGETS)
def test_antimeridian_through_the_stage(antimeridian_file: Path, target: str) -> None:
    fences = Geofences.load(antimeridian_file, "id", target)
    stage = SpatialStage(Reprojector(target), MAX_BYTES, fences, "dead_letter")
    batch = [
        record(reading("east", -17.8, 178.4), 0),  # Suva side
        record(reading("west", -16.5, -179.9), 1),  # Taveuni side, across the line
        record(reading("dateline", -17.0, 180.0), 2),
        record(reading("tonga", -21.1, -175.2), 3),  # outside: south of the fence
        record(reading("far-east", 2.0, -177.5), 4),
    ]
    result = process(stage, batch)
    points = {d["sensor_id"]: d["regions"] for d in documents(result.points)}
    assert points == {
        "east": ["fiji"],
        "west": ["fiji"],
        "dateline": ["fiji"],
        "far-east": ["far-east"],
    }
    assert result.codes == {"outside_area": 1}


def test_without_geofences_there_is_no_regions_field() -> None:
    stage = SpatialStage(Reprojector("EPSG:3857"), MAX_BYTES)
    result = process(stage, policy_batch())
    assert all("regions" not in d for d in documents(result.points))
    assert len(result.points) == 5


def test_a_batch_with_nothing_valid(policy_fences: Geofences) -> None:
    for policy in ("dead_letter", "pass"):
        stage = SpatialStage(Reprojector("EPSG:3857"), MAX_BYTES, policy_fences, policy)
        result = process(stage, [record(b"{}", 0), record(reading("polar", 89.9, 0.0), 1)])
        assert result.points == []
        assert result.codes == {"missing_field": 1, "out_of_range": 1}


# --- heavy geometry off the event loop ----------------------------------------------------

HEAVY_POLYGONS = 2_000
HEAVY_RECORDS = 20_000
HEAVY_AREA = (0.0, 40.0, 10.0, 50.0)


@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory) -> tuple[SpatialStage, list[Record]]:
    rng = np.random.default_rng(2026)
    west, south, east, north = HEAVY_AREA
    centres = shapely.points(
        rng.uniform(west, east, HEAVY_POLYGONS), rng.uniform(south, north, HEAVY_POLYGONS)
    )
    shapes = shapely.buffer(centres, rng.uniform(0.15, 0.35, HEAVY_POLYGONS), quad_segs=64)
    assert shapely.get_num_coordinates(shapes).min() > 250
    frame = gpd.GeoDataFrame(
        {"id": [f"ws-{i:04d}" for i in range(HEAVY_POLYGONS)]}, geometry=shapes, crs="EPSG:4326"
    )
    path = tmp_path_factory.mktemp("heavy") / "watersheds.geojson"
    frame.to_file(path, driver="GeoJSON", COORDINATE_PRECISION=7)
    fences = Geofences.load(path, "id", "EPSG:3857")
    stage = SpatialStage(Reprojector("EPSG:3857"), MAX_BYTES, fences, "pass")
    lon = rng.uniform(west, east, HEAVY_RECORDS).round(6).tolist()
    lat = rng.uniform(south, north, HEAVY_RECORDS).round(6).tolist()
    records = [
        record(reading(f"s-{i}", la, lo), i)
        for i, (lo, la) in enumerate(zip(lon, lat, strict=True))
    ]
    return stage, records


async def _ticks_during(work: Any) -> int:
    """How often a ticker on the event loop ran while ``work`` was under way."""
    started = asyncio.Event()
    working = False
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += working
            started.set()

    task = asyncio.create_task(ticker())
    await started.wait()
    working = True
    await work()
    working = False
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return ticks


async def test_tagging_in_a_worker_thread_keeps_the_loop_responsive(
    heavy: tuple[SpatialStage, list[Record]],
) -> None:
    stage, records = heavy
    outcome: list[Any] = []

    async def in_thread() -> None:
        outcome.append(await asyncio.to_thread(process, stage, records))

    async def inline() -> None:
        outcome.append(process(stage, records))

    ticks_thread = await _ticks_during(in_thread)
    ticks_inline = await _ticks_during(inline)

    threaded, blocking = outcome
    assert len(threaded.points) == HEAVY_RECORDS
    tagged = [d["regions"] for d in documents(threaded.points)]
    assert sum(1 for regions in tagged if len(regions) > 1) > 1_000
    assert threaded.points == blocking.points

    # The order of events, not their timing (bench/timing.py measures the gaps): the loop
    # ran while the thread tagged; run inline, it did not run at all until the batch was done.
    assert ticks_thread >= 1
    assert ticks_inline == 0
