"""Vectorized spatial validation and reprojection: whole columns per call, no per-record Python.

Knows nothing of Kafka: it takes lon/lat arrays and answers x/y arrays plus a reason per
rejected row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from processor.codec import DeadLetterCode
from processor.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Projection:
    """Result of one batch: coordinates for every row, ``ok`` where they may be published."""

    x: FloatArray
    y: FloatArray
    ok: BoolArray
    codes: list[tuple[int, DeadLetterCode, str]]


class Reprojector:
    """WGS-84 lon/lat to the target CRS, refusing points outside the CRS's area of use."""

    def __init__(self, target_crs: str) -> None:
        try:
            crs = CRS.from_user_input(target_crs)
        except CRSError:
            raise ConfigError(
                f"invalid setting PROCESSOR_TARGET_CRS (--target-crs): unknown CRS {target_crs!r}"
            ) from None
        self.name = crs.to_string()
        self._transformer = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        area = crs.area_of_use
        west, south, east, north = area.bounds if area is not None else (-180, -90, 180, 90)
        self._bounds = (float(west), float(south), float(east), float(north))

    def project(self, lon: FloatArray, lat: FloatArray) -> Projection:
        west, south, east, north = self._bounds
        inside_lat = (lat >= south) & (lat <= north)
        if west <= east:
            inside_lon = (lon >= west) & (lon <= east)
        else:  # an area of use that crosses the antimeridian
            inside_lon = (lon >= west) | (lon <= east)
        inside = inside_lat & inside_lon
        x, y = self._transformer.transform(lon, lat, errcheck=False)
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        finite = np.isfinite(x) & np.isfinite(y)
        points = shapely.points(np.where(finite, x, 0.0), np.where(finite, y, 0.0))
        valid_geometry = finite & shapely.is_valid(points)
        ok = inside & valid_geometry
        codes: list[tuple[int, DeadLetterCode, str]] = []
        if not ok.all():
            area = f"{south:g}..{north:g} lat, {west:g}..{east:g} lon"
            for row in np.flatnonzero(~ok).tolist():
                if not inside[row]:
                    message = (
                        f"latitude {float(lat[row])!r}, longitude {float(lon[row])!r} "
                        f"outside the area of use of {self.name} ({area})"
                    )
                    codes.append((row, DeadLetterCode.OUT_OF_RANGE, message))
                else:
                    message = f"reprojection to {self.name} gave no finite point"
                    codes.append((row, DeadLetterCode.INVALID_GEOMETRY, message))
        return Projection(x=x, y=y, ok=ok, codes=codes)
