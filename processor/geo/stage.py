"""The spatial stage: one batch of consumed records in, points and dead letters out.

Pure and synchronous; decoding is per record (inside msgspec), everything geometric is one
vectorized call per batch. :meth:`SpatialStage.compute` takes and returns plain columns so
that it can run in a worker process; :func:`assemble` turns its output into messages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from processor.geo.geofence import Geofences
from processor.geo.spatial import Projection, Reprojector
from processor.kafka.batches import BatchSpec, EncodedBatch, KeyPartitioner, encode_batches
from processor.messages.codec import (
    DeadLetterCode,
    Headers,
    RecordLike,
    Where,
    decode_batch,
)
from processor.messages.encode import encode_dead_letter, encode_points

if TYPE_CHECKING:  # a stage worker process never imports the settings (pydantic)
    from processor.config import Settings

#: (key, value, headers) of one record to produce.
Outgoing = tuple[bytes | None, bytes, Headers]

ERROR_HEADER = "dlq.error.code"
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
class StageInput:
    """A batch as the stage needs it: plain columns, cheap to hand to a worker process."""

    values: list[bytes | None]
    topics: list[str]
    partitions: list[int]
    offsets: list[int]

    def extend(self, topic: str, partition: int, records: Sequence[RecordLike]) -> None:
        """Add a run of records of one partition."""
        self.values += [r.value for r in records]
        self.topics += [topic] * len(records)
        self.partitions += [partition] * len(records)
        self.offsets += [r.offset for r in records]


@dataclass(slots=True)
class StageOutput:
    """What the stage made of a batch, by input row: points, then dead letters."""

    rows: list[int] = field(default_factory=list)  # input row of each point, ascending
    keys: list[bytes] = field(default_factory=list)  # each point's key: its sensor_id
    values: list[bytes] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # input row of each dead letter, ascending
    codes: list[DeadLetterCode] = field(default_factory=list)
    letters: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class StageJob:
    """A batch, and what its points need to become produce batches: what a worker gets."""

    batch: StageInput
    stamps: Sequence[Headers] | None  # headers of each input row's output, or None
    spec: BatchSpec  # of the output topic


@dataclass(slots=True)
class StageDone:
    """A job's points as finished produce batches; its dead letters by input row."""

    points: list[EncodedBatch]
    published: int
    failed: list[int]
    codes: list[DeadLetterCode]
    letters: list[bytes]


@dataclass(slots=True)
class StageResult:
    """What to produce for a batch: the points' batches and the dead letters."""

    points: list[EncodedBatch] = field(default_factory=list)
    published: int = 0
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
        self._partitioners: dict[tuple[int, ...], KeyPartitioner] = {}

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
        self.compute(StageInput([_WARM_UP], ["warm-up"], [0], [0]))

    def run(self, job: StageJob) -> StageDone:
        """Points (key = sensor_id, input order) framed as produce batches; dead letters."""
        output = self.compute(job.batch)
        stamps = job.stamps
        no_stamp: Headers = []
        headers = [stamps[row] for row in output.rows] if stamps else [no_stamp] * len(output.rows)
        partitioner = self._partitioners.get(job.spec.partitions)
        if partitioner is None:
            partitioner = KeyPartitioner(job.spec.partitions)
            self._partitioners = {job.spec.partitions: partitioner}  # the topic's current list
        points = encode_batches(job.spec, output.keys, output.values, headers, partitioner)
        return StageDone(points, len(output.values), output.failed, output.codes, output.letters)

    def compute(self, batch: StageInput) -> StageOutput:
        """The pure part of :meth:`process`: columns in, columns out (runs in any process)."""
        columns, rejections = decode_batch(batch.values, self._max_bytes)
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
        accepted = np.flatnonzero(projection.ok).tolist()
        output = StageOutput()
        output.rows = rows = [columns.index[row] for row in accepted]
        topics, partitions, offsets = batch.topics, batch.partitions, batch.offsets
        output.values = encode_points(
            [columns.documents[row] for row in accepted],
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
            where = Where(topics[index], partitions[index], offsets[index], batch.values[index])
            output.failed.append(index)
            output.codes.append(code)
            output.letters.append(encode_dead_letter(where, code, message, self._max_bytes))
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


def finish(
    records: Sequence[RecordLike], stamps: Sequence[Headers] | None, done: StageDone
) -> StageResult:
    """The job's result with its dead letters as messages: keys and headers of ``records``.

    ``stamps[i]``, when given, are the headers of record ``i``'s output (shared, never
    mutated); on a dead letter they replace the input headers of the same names.
    """
    result = StageResult(done.points, done.published)
    for row, code, letter in zip(done.failed, done.codes, done.letters, strict=True):
        record = records[row]
        stamp = stamps[row] if stamps is not None else []
        replaced = {name for name, _ in stamp}
        kept = [header for header in record.headers or () if header[0] not in replaced]
        headers = [*kept, *stamp, (ERROR_HEADER, code.value.encode())]
        result.dead_letters.append((record.key, letter, headers))
        result.codes[code.value] += 1
    return result


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
