"""The spatial stage: one batch of consumed records in, points and dead letters out.

Pure and synchronous; decoding is per record (inside msgspec), everything geometric is one
vectorized call per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from processor.codec import (
    DeadLetterCode,
    Headers,
    RecordLike,
    decode_batch,
    encode_dead_letter,
    encode_point,
)
from processor.spatial import Reprojector

#: (key, value, headers) of one record to produce.
Outgoing = tuple[bytes | None, bytes, Headers]

ERROR_HEADER = "dlq.error.code"


@dataclass(slots=True)
class StageResult:
    points: list[Outgoing] = field(default_factory=list)
    dead_letters: list[Outgoing] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)


class SpatialStage:
    def __init__(self, reprojector: Reprojector, max_payload_bytes: int) -> None:
        self._reprojector = reprojector
        self._max_bytes = max_payload_bytes

    @property
    def crs(self) -> str:
        return self._reprojector.name

    def process(self, records: Sequence[RecordLike]) -> StageResult:
        """Points in input order (key = sensor_id); every other record becomes a dead letter."""
        columns, rejections = decode_batch([r.value for r in records], self._max_bytes)
        projection = self._reprojector.project(columns.longitude, columns.latitude)
        failures = {r.index: (r.code, r.message) for r in rejections}
        for row, code, message in projection.codes:
            failures[columns.index[row]] = (code, message)
        result = StageResult()
        crs = self._reprojector.name
        xs = projection.x.tolist()
        ys = projection.y.tolist()
        ok = projection.ok.tolist()
        for row, index in enumerate(columns.index):
            if ok[row]:
                record = records[index]
                value = encode_point(columns.documents[row], xs[row], ys[row], crs, record)
                key = columns.sensor_ids[row].encode()
                result.points.append((key, value, []))
        for index in sorted(failures):
            code, message = failures[index]
            result.dead_letters.append(self._dead_letter(records[index], code, message))
            result.codes[code.value] += 1
        return result

    @staticmethod
    def _dead_letter(record: RecordLike, code: DeadLetterCode, message: str) -> Outgoing:
        headers = [*(record.headers or ()), (ERROR_HEADER, code.value.encode())]
        return record.key, encode_dead_letter(record, code, message), headers
