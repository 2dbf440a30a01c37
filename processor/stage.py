"""The spatial stage: one batch of consumed records in, points and dead letters out.

Pure and synchronous; decoding is per record (inside msgspec), everything geometric is one
vectorized call per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from processor.codec import (
    DeadLetterCode,
    Headers,
    RecordLike,
    decode_batch,
    encode_dead_letter,
    encode_points,
)
from processor.geofence import Geofences
from processor.spatial import Projection, Reprojector

#: (key, value, headers) of one record to produce.
Outgoing = tuple[bytes | None, bytes, Headers]

ERROR_HEADER = "dlq.error.code"


@dataclass(slots=True)
class StageResult:
    points: list[Outgoing] = field(default_factory=list)
    dead_letters: list[Outgoing] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)


class SpatialStage:
    def __init__(
        self,
        reprojector: Reprojector,
        max_payload_bytes: int,
        geofences: Geofences | None = None,
        outside_policy: str = "dead_letter",
    ) -> None:
        self._reprojector = reprojector
        self._max_bytes = max_payload_bytes
        self._geofences = geofences
        self._outside_is_dead = outside_policy == "dead_letter"

    @property
    def crs(self) -> str:
        return self._reprojector.name

    def process(
        self, records: Sequence[RecordLike], stamps: Sequence[Headers] | None = None
    ) -> StageResult:
        """Points in input order (key = sensor_id); every other record becomes a dead letter.

        ``stamps[i]``, when given, are the headers of record ``i``'s output (shared, never
        mutated); on a dead letter they replace the input headers of the same names.
        """
        columns, rejections = decode_batch([r.value for r in records], self._max_bytes)
        projection = self._reprojector.project(columns.x, columns.y, columns.source_crs)
        failures = {r.index: (r.code, r.message) for r in rejections}
        for row, code, message in projection.codes:
            failures[columns.index[row]] = (code, message)
        regions = self._regions(projection)
        if regions is not None and self._outside_is_dead:
            for row in np.flatnonzero(projection.ok).tolist():
                if not regions[row]:
                    projection.ok[row] = False
                    message = "point is outside every geofence"
                    failures[columns.index[row]] = (DeadLetterCode.OUTSIDE_AREA, message)
        if columns.source_crs is not None:
            _add_wgs84(columns.documents, columns.source_crs, projection)
        result = StageResult()
        rows = np.flatnonzero(projection.ok).tolist()
        inputs = [columns.index[row] for row in rows]
        values = encode_points(
            [columns.documents[row] for row in rows],
            projection.x[rows].tolist(),
            projection.y[rows].tolist(),
            self._reprojector.name,
            [records[index] for index in inputs],
            [regions[row] for row in rows] if regions is not None else None,
        )
        sensor_ids = columns.sensor_ids
        no_stamp: Headers = []
        result.points = [
            (
                sensor_ids[row].encode(),
                value,
                stamps[index] if stamps is not None else no_stamp,
            )
            for row, index, value in zip(rows, inputs, values, strict=True)
        ]
        for index in sorted(failures):
            code, message = failures[index]
            stamp = stamps[index] if stamps is not None else []
            result.dead_letters.append(self._dead_letter(records[index], code, message, stamp))
            result.codes[code.value] += 1
        return result

    def _regions(self, projection: Projection) -> list[list[str]] | None:
        """Geofence ids per row (one vectorized tree query), or None without geofences."""
        if self._geofences is None:
            return None
        regions: list[list[str]] = [[] for _ in range(len(projection.ok))]
        rows = np.flatnonzero(projection.ok)
        for row, tags in zip(
            rows.tolist(), self._geofences.tag(projection.points[rows]), strict=True
        ):
            regions[row] = tags
        return regions

    @staticmethod
    def _dead_letter(
        record: RecordLike, code: DeadLetterCode, message: str, stamp: Headers
    ) -> Outgoing:
        replaced = {name for name, _ in stamp}
        kept = [header for header in record.headers or () if header[0] not in replaced]
        headers = [*kept, *stamp, (ERROR_HEADER, code.value.encode())]
        return record.key, encode_dead_letter(record, code, message), headers


def _add_wgs84(
    documents: list[dict[str, Any] | bytes], source_crs: list[str | None], projection: Projection
) -> None:
    """Records given in a source CRS get latitude/longitude and keep their CRS as source_crs."""
    lon = projection.lon.tolist()
    lat = projection.lat.tolist()
    for row, name in enumerate(source_crs):
        document = documents[row]
        if name is not None and isinstance(document, dict):  # never appended bytes: has a crs
            document["source_crs"] = name
            document["longitude"] = lon[row]
            document["latitude"] = lat[row]
