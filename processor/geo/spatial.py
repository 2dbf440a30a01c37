"""Vectorized spatial validation and reprojection: whole columns per call, no per-record Python.

Knows nothing of Kafka: it takes lon/lat arrays and answers x/y arrays plus a reason per
rejected row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError, ProjError

from processor.errors import ConfigError
from processor.messages.codec import DeadLetterCode

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Projection:
    """Result of one batch: coordinates for every row, ``ok`` where they may be published.

    ``lon``/``lat`` are WGS-84 for every row (computed for rows given in a source CRS).
    """

    x: FloatArray
    y: FloatArray
    lon: FloatArray
    lat: FloatArray
    ok: BoolArray
    codes: list[tuple[int, DeadLetterCode, str]]


_WGS84 = CRS.from_epsg(4326)
_TRANSFORMER_CACHE = 64


class Reprojector:
    """WGS-84 (or a record's own source CRS) to the target CRS, refusing points outside the
    target CRS's area of use. One pyproj call per CRS present in a batch."""

    def __init__(self, target_crs: str) -> None:
        try:
            crs = CRS.from_user_input(target_crs)
        except CRSError:
            raise ConfigError(
                f"invalid setting PROCESSOR_TARGET_CRS (--target-crs): unknown CRS {target_crs!r}"
            ) from None
        self.name = crs.to_string()
        self._transformer = Transformer.from_crs(_WGS84, crs, always_xy=True)
        self._sources: dict[str, Transformer | None] = {}
        area = crs.area_of_use
        west, south, east, north = area.bounds if area is not None else (-180, -90, 180, 90)
        self._bounds = (float(west), float(south), float(east), float(north))

    def _from_source(self, name: str) -> Transformer | None:
        """Source CRS -> WGS-84 transformer, cached; None if the CRS is unknown.

        Going through WGS-84 gives every row the lon/lat the area check and the output need.
        """
        if name not in self._sources:
            if len(self._sources) >= _TRANSFORMER_CACHE:
                self._sources.clear()
            try:
                source = CRS.from_user_input(name)
                self._sources[name] = Transformer.from_crs(source, _WGS84, always_xy=True)
            except (CRSError, ProjError):  # unknown, or no way from it to WGS-84
                self._sources[name] = None
        return self._sources[name]

    def project(
        self, x_in: FloatArray, y_in: FloatArray, source_crs: list[str | None] | None = None
    ) -> Projection:
        """Reproject a batch; rows with a ``source_crs`` are grouped and done per CRS."""
        unknown = np.zeros(len(x_in), dtype=bool)
        if source_crs is None:
            lon, lat = x_in, y_in
        else:
            lon, lat, unknown = self._to_wgs84(x_in, y_in, source_crs)
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
        # A point's geometry is valid exactly when its coordinates are finite (GEOS agrees:
        # tests/unit/test_spatial.py); building the GEOS points only to ask would cost
        # ~0.6 us per record, more than the reprojection. Geofences build them (ok rows).
        valid_geometry = np.isfinite(x) & np.isfinite(y)
        ok = inside & valid_geometry & ~unknown
        codes: list[tuple[int, DeadLetterCode, str]] = []
        if not ok.all():
            area = f"{south:g}..{north:g} lat, {west:g}..{east:g} lon"
            for row in np.flatnonzero(~ok).tolist():
                if unknown[row]:
                    message = f"unknown source CRS {source_crs[row]!r}"  # type: ignore[index]
                    codes.append((row, DeadLetterCode.UNKNOWN_CRS, message))
                elif not inside[row]:
                    message = (
                        f"latitude {float(lat[row])!r}, longitude {float(lon[row])!r} "
                        f"outside the area of use of {self.name} ({area})"
                    )
                    codes.append((row, DeadLetterCode.OUT_OF_RANGE, message))
                else:
                    message = f"reprojection to {self.name} gave no finite point"
                    codes.append((row, DeadLetterCode.INVALID_GEOMETRY, message))
        return Projection(x=x, y=y, lon=lon, lat=lat, ok=ok, codes=codes)

    def _to_wgs84(
        self, x_in: FloatArray, y_in: FloatArray, source_crs: list[str | None]
    ) -> tuple[FloatArray, FloatArray, BoolArray]:
        lon = x_in.copy()
        lat = y_in.copy()
        unknown = np.zeros(len(x_in), dtype=bool)
        names = np.array(source_crs, dtype=object)
        given = np.flatnonzero(names != None)  # noqa: E711 - elementwise comparison
        for name in set(names[given].tolist()):
            rows = given[names[given] == name]
            transformer = self._from_source(name)
            if transformer is None:
                unknown[rows] = True
                lon[rows] = lat[rows] = np.nan
                continue
            lon[rows], lat[rows] = transformer.transform(x_in[rows], y_in[rows], errcheck=False)
        return lon, lat, unknown
