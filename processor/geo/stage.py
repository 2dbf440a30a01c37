"""The spatial stage: one batch of consumed records in, points and dead letters out.

Pure and synchronous; decoding is per record (inside msgspec), everything geometric is one
vectorized call per batch. :meth:`SpatialStage.compute` takes and returns plain columns (the
values of points and dead letters, by input row), so that it can run in a worker process;
framing them as Kafka produce batches is the next step, :mod:`processor.workers.framing`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from processor.geo.geofence import Geofences
from processor.geo.spatial import Projection, Reprojector
from processor.messages.codec import DeadLetterCode, decode_batch
from processor.messages.encode import encode_dead_letter, encode_points
from processor.messages.jobs import Columns
from processor.messages.measures import Measures, measures

if TYPE_CHECKING:  # a stage worker process never imports the settings (pydantic)
    from processor.config import Settings

_WARM_UP = b'{"sensor_id":"warm-up","timestamp":"2026-01-01T00:00:00Z","latitude":0,"longitude":0}'


@dataclass(frozen=True, slots=True)
class StageSettings:
    """The settings the stage is built from, as plain values: all a worker process is sent,
    so that it never imports pydantic and the settings machinery (~10 MB of each worker)."""

    target_crs: str
    max_payload_bytes: int
    geofences: Path | None
    geofence_id_field: str
    outside_policy: str

    @classmethod
    def of(cls, settings: Settings) -> StageSettings:
        return cls(
            settings.target_crs,
            settings.max_payload_bytes,
            settings.geofences,
            settings.geofence_id_field,
            settings.outside_policy,
        )


@dataclass(slots=True)
class Computed:
    """What the stage made of a batch, by input row: points, then dead letters."""

    rows: list[int] = field(default_factory=list)  # input row of each point, ascending
    keys: list[bytes] = field(default_factory=list)  # each point's key: its sensor_id
    values: list[bytes] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # input row of each dead letter, ascending
    codes: list[DeadLetterCode] = field(default_factory=list)
    letters: list[bytes] = field(default_factory=list)
    measures: Measures | None = None  # of the points, when compute() was given fields


class SpatialStage:
    """Validates and reprojects a batch's columns in one vectorized pass: every row becomes a
    point (its key, its output bytes) or a dead letter (its code and bytes), never neither.
    Synchronous and stateless between batches, so any worker can take any batch."""

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

    @classmethod
    def from_settings(cls, settings: Settings | StageSettings) -> SpatialStage:
        """The stage ``settings`` describe; a bad geofence file raises ConfigError."""
        geofences = (
            Geofences.load(settings.geofences, settings.geofence_id_field, settings.target_crs)
            if settings.geofences is not None
            else None
        )
        return cls(
            Reprojector(settings.target_crs),
            settings.max_payload_bytes,
            geofences,
            settings.outside_policy,
        )

    @property
    def crs(self) -> str:
        return self._reprojector.name

    def warm_up(self) -> None:
        """Build the transformer and fill the caches now, not on the first real batch."""
        self.compute(Columns([_WARM_UP], ["warm-up"], [0], [0]))

    def compute(self, batch: Columns, fields: tuple[str, ...] | None = None) -> Computed:
        """Points (key = sensor_id, input order) and dead letters of ``batch``, as columns;
        with ``fields`` (windows on), also the points' event times and those fields' values."""
        columns, rejections = decode_batch(batch.values, self._max_bytes, fields)
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
        accepted = np.flatnonzero(projection.ok).tolist()
        documents = [columns.documents[row] for row in accepted]
        output = Computed()
        if fields is not None:
            output.measures = measures(columns, accepted, len(fields))
        if columns.source_crs is not None:
            _add_wgs84(columns.documents, columns.source_crs, projection)
        output.rows = rows = [columns.index[row] for row in accepted]
        topics, partitions, offsets = batch.topics, batch.partitions, batch.offsets
        output.values = encode_points(
            documents,
            projection.x[accepted].tolist(),
            projection.y[accepted].tolist(),
            self._reprojector.name,
            ([topics[i] for i in rows], [partitions[i] for i in rows], [offsets[i] for i in rows]),
            [regions[row] for row in accepted] if regions is not None else None,
        )
        sensor_ids = columns.sensor_ids
        output.keys = [sensor_ids[row].encode() for row in accepted]
        for index in sorted(failures):
            code, message = failures[index]
            output.failed.append(index)
            output.codes.append(code)
            output.letters.append(
                encode_dead_letter(batch.where(index), code, message, self._max_bytes)
            )
        return output

    def _regions(self, projection: Projection) -> list[list[str]] | None:
        """Geofence ids per row (one vectorized tree query), or None without geofences."""
        if self._geofences is None:
            return None
        regions: list[list[str]] = [[] for _ in range(len(projection.ok))]
        rows = np.flatnonzero(projection.ok)
        points = shapely.points(projection.x[rows], projection.y[rows])
        for row, tags in zip(rows.tolist(), self._geofences.tag(points), strict=True):
            regions[row] = tags
        return regions


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
