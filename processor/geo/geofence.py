"""Geofences: tag each point with the ids of every polygon that contains it.

Loaded once at start with geopandas (GeoJSON, GeoPackage, Shapefile: whatever it reads),
repaired or refused, moved to the target CRS and indexed in a shapely STRtree. Tagging is one
vectorized tree query per batch; boundary points count as inside (``intersects``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import CRS
from shapely import affinity

from processor.errors import ConfigError

_SETTING = "PROCESSOR_GEOFENCES (--geofences)"
_WORLD = shapely.box(-180.0, -90.0, 180.0, 90.0)


def _refuse(message: str) -> ConfigError:
    return ConfigError(f"invalid setting {_SETTING}: {message}")


def _unwrap_antimeridian(geometry: Any) -> Any:
    """Fold the parts of a lon/lat polygon drawn past ±180° back onto the map.

    An area across the antimeridian is often drawn with longitudes beyond 180 (177..183);
    points arrive with -180..180, so the part east of 180 must move by -360 (and vice versa).
    """
    west, _, east, _ = geometry.bounds
    if west >= -180.0 and east <= 180.0:
        return geometry
    parts = [shapely.intersection(geometry, _WORLD)]
    for shift in (-360.0, 360.0):
        moved = affinity.translate(geometry, xoff=shift)
        parts.append(shapely.intersection(moved, _WORLD))
    return shapely.union_all([p for p in parts if not p.is_empty])


class Geofences:
    """An indexed set of polygons with ids, in the target CRS."""

    def __init__(self, ids: Sequence[str], geometries: npt.NDArray[Any]) -> None:
        self.ids = list(ids)
        self._ids = np.array(self.ids, dtype=object)
        self._geometries = geometries
        # Prepared polygons answer point-in-polygon from an edge index instead of walking
        # every vertex: about 4x faster on watershed-like polygons of a few hundred vertices.
        shapely.prepare(geometries)
        self._tree = shapely.STRtree(geometries)

    @classmethod
    def load(cls, path: Path, id_field: str, target_crs: str) -> Geofences:
        try:  # the `geo` extra, imported only when geofences are configured
            import geopandas  # noqa: PLC0415
        except ImportError:
            raise _refuse(
                "geofences need the 'geo' extra (pip install 'geo-stream-processor[geo]')"
            ) from None

        if not path.is_file():
            raise _refuse(f"no such file: {path}")
        try:
            frame = geopandas.read_file(path)
        except Exception as exc:  # pyogrio/fiona raise many types for unreadable files
            raise _refuse(f"cannot read {path}: {exc}") from None
        if id_field not in frame.columns:
            raise ConfigError(
                "invalid setting PROCESSOR_GEOFENCE_ID_FIELD (--geofence-id-field): "
                f"{path} has no column {id_field!r} (columns: {', '.join(map(str, frame.columns))})"
            )
        if frame.crs is None:
            frame = frame.set_crs("EPSG:4326")  # GeoJSON without a crs member is WGS-84
        missing = frame[id_field].isna()
        if missing.any():
            raise ConfigError(
                "invalid setting PROCESSOR_GEOFENCE_ID_FIELD (--geofence-id-field): "
                f"feature #{int(missing.to_numpy().argmax())} of {path} has no {id_field!r}"
            )
        ids = [str(v) for v in frame[id_field]]
        geometries = np.array(frame.geometry.values, dtype=object)
        for index, geometry in enumerate(geometries):
            geometries[index] = _checked(geometry, ids[index])
        if CRS.from_user_input(frame.crs).is_geographic:
            geometries = np.array([_unwrap_antimeridian(g) for g in geometries], dtype=object)
        projected = geopandas.GeoSeries(geometries, crs=frame.crs).to_crs(target_crs)
        return cls(ids, np.asarray(projected.values, dtype=object))

    def tag(self, points: npt.NDArray[Any]) -> list[list[str]]:
        """Ids of the polygons containing each point, in file order; [] outside all."""
        candidates = self._tree.query(points)  # bounding boxes only
        inside = shapely.intersects(self._geometries[candidates[1]], points[candidates[0]])
        hits = candidates[:, inside]
        regions: list[list[str]] = [[] for _ in range(len(points))]
        if hits.shape[1] == 0:
            return regions
        order = np.lexsort((hits[1], hits[0]))  # by point, then in file order
        rows = hits[0][order]
        names = self._ids[hits[1][order]].tolist()
        bounds = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1], True]).tolist()
        points_of = rows.tolist()
        for start, end in itertools.pairwise(bounds):
            regions[points_of[start]] = names[start:end]
        return regions


def _checked(geometry: Any, feature: str) -> Any:
    """Polygons pass, invalid ones are repaired; anything else is refused by name."""
    if geometry is None or geometry.is_empty:
        raise _refuse(f"feature {feature!r} has no geometry")
    if geometry.geom_type not in ("Polygon", "MultiPolygon"):
        raise _refuse(f"feature {feature!r} is a {geometry.geom_type}, not a polygon")
    if geometry.is_valid:
        return geometry
    # "structure" keeps the union of overlapping parts (the default "linework" drops overlaps)
    repaired = shapely.make_valid(geometry, method="structure", keep_collapsed=False)
    polygons = shapely.get_parts(repaired)
    keep = (shapely.get_type_id(polygons) == shapely.GeometryType.POLYGON) & ~shapely.is_empty(
        polygons
    )
    polygons = polygons[keep]
    if len(polygons) == 0:
        raise _refuse(f"feature {feature!r} is invalid and cannot be repaired")
    return shapely.multipolygons(polygons) if len(polygons) > 1 else polygons[0]
