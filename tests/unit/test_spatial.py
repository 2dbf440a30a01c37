"""processor.spatial.Reprojector: vectorized reprojection and the CRS's area of use."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from processor.errors import ConfigError
from processor.geo.spatial import Projection, Reprojector
from processor.messages.codec import DeadLetterCode

WEB_MERCATOR = Reprojector("EPSG:3857")
DIRECT = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
HALF_WORLD = 20037508.342789244  # x of lon 180 in EPSG:3857
TOLERANCE_M = 1e-6

lons = st.floats(-180.0, 180.0, allow_nan=False)
lats = st.floats(-85.06, 85.06, allow_nan=False)


def project(
    lon: list[float], lat: list[float], reprojector: Reprojector = WEB_MERCATOR
) -> Projection:
    return reprojector.project(np.array(lon, dtype=np.float64), np.array(lat, dtype=np.float64))


def direct(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = DIRECT.transform(lon, lat)
    return np.asarray(x), np.asarray(y)


def test_name_is_the_crs() -> None:
    assert WEB_MERCATOR.name == "EPSG:3857"


def test_random_points_match_a_direct_transform() -> None:
    rng = np.random.default_rng(20261123)
    lon = rng.uniform(-180.0, 180.0, 5_000)
    lat = rng.uniform(-85.06, 85.06, 5_000)
    result = WEB_MERCATOR.project(lon, lat)
    x, y = direct(lon, lat)
    assert result.ok.all()
    assert result.codes == []
    np.testing.assert_allclose(result.x, x, rtol=0, atol=TOLERANCE_M)
    np.testing.assert_allclose(result.y, y, rtol=0, atol=TOLERANCE_M)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(lons, lats), min_size=1, max_size=40))
def test_any_point_in_the_area_matches_a_direct_transform(
    points: list[tuple[float, float]],
) -> None:
    lon = np.array([p[0] for p in points])
    lat = np.array([p[1] for p in points])
    result = WEB_MERCATOR.project(lon, lat)
    assert result.ok.all()
    assert result.codes == []
    for i, (lo, la) in enumerate(points):
        x, y = DIRECT.transform(lo, la)
        assert abs(result.x[i] - x) <= TOLERANCE_M
        assert abs(result.y[i] - y) <= TOLERANCE_M


def test_antimeridian_both_sides() -> None:
    result = project([180.0, -180.0], [0.0, 0.0])
    assert result.ok.tolist() == [True, True]
    assert result.x[0] == pytest.approx(HALF_WORLD, abs=TOLERANCE_M)
    assert result.x[1] == pytest.approx(-HALF_WORLD, abs=TOLERANCE_M)
    assert result.y.tolist() == pytest.approx([0.0, 0.0], abs=TOLERANCE_M)


@pytest.mark.parametrize(("lon", "lat"), [(0.0, 0.0), (-0.0, -0.0), (-0.0, 0.0), (0.0, -0.0)])
def test_equator_and_prime_meridian(lon: float, lat: float) -> None:
    result = project([lon], [lat])
    assert result.ok.tolist() == [True]
    assert result.codes == []
    assert abs(result.x[0]) <= TOLERANCE_M
    assert abs(result.y[0]) <= TOLERANCE_M
    assert math.isfinite(result.x[0])


@pytest.mark.parametrize("lat", [85.05, -85.05, 85.06, -85.06])
def test_latitudes_inside_web_mercator_are_accepted(lat: float) -> None:
    result = project([8.0], [lat])
    assert result.ok.tolist() == [True]
    _, y = DIRECT.transform(8.0, lat)
    assert result.y[0] == pytest.approx(y, abs=TOLERANCE_M)


@pytest.mark.parametrize("lat", [85.07, -85.07, 89.9, -89.9, 90.0, -90.0])
def test_latitudes_beyond_web_mercator_are_out_of_range(lat: float) -> None:
    result = project([8.0], [lat])
    assert result.ok.tolist() == [False]
    assert [(row, code) for row, code, _ in result.codes] == [(0, DeadLetterCode.OUT_OF_RANGE)]
    assert "EPSG:3857" in result.codes[0][2]


def test_rejections_name_their_rows() -> None:
    result = project([0.0, 1.0, 2.0, 3.0, 4.0], [10.0, 86.0, 20.0, -89.0, 85.05])
    assert result.ok.tolist() == [True, False, True, False, True]
    assert [(row, code) for row, code, _ in result.codes] == [
        (1, DeadLetterCode.OUT_OF_RANGE),
        (3, DeadLetterCode.OUT_OF_RANGE),
    ]


def test_narrow_crs_refuses_a_far_away_point() -> None:
    utm32 = Reprojector("EPSG:32632")
    result = project([9.0, -100.0, 9.0], [45.0, 40.0, -30.0], utm32)
    assert result.ok.tolist() == [True, False, False]
    assert [(row, code) for row, code, _ in result.codes] == [
        (1, DeadLetterCode.OUT_OF_RANGE),
        (2, DeadLetterCode.OUT_OF_RANGE),
    ]
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(9.0, 45.0)
    assert result.x[0] == pytest.approx(x, abs=TOLERANCE_M)
    assert result.y[0] == pytest.approx(y, abs=TOLERANCE_M)


def test_empty_batch() -> None:
    result = project([], [])
    assert result.ok.shape == (0,)
    assert result.codes == []


@pytest.mark.parametrize("crs", ["EPSG:999999", "not a crs", "", "EPSG:"])
def test_unknown_crs_is_a_config_error_naming_the_setting(crs: str) -> None:
    with pytest.raises(ConfigError, match="PROCESSOR_TARGET_CRS") as info:
        Reprojector(crs)
    assert "\n" not in str(info.value)


coordinates = st.floats(allow_nan=True, allow_infinity=True, width=64)


@given(st.lists(st.tuples(coordinates, coordinates), min_size=1, max_size=30))
def test_geos_calls_a_point_valid_exactly_when_its_coordinates_are_finite(
    pairs: list[tuple[float, float]],
) -> None:
    """Why the reprojector checks finiteness instead of building GEOS points to ask."""
    x, y = (np.array(column, dtype=np.float64) for column in zip(*pairs, strict=True))
    assert (shapely.is_valid(shapely.points(x, y)) == (np.isfinite(x) & np.isfinite(y))).all()
