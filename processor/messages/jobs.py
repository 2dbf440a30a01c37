"""What crosses to the spatial stage and back: a :class:`Job` in, a :class:`Framed` result out.

Both are plain columns and bytes, because a stage worker is another process and they are
pickled on the event loop's thread, per batch: lists of bytes and ints pickle at memcpy
speed, record objects would not. The framing types (:class:`BatchSpec`, :class:`EncodedBatch`,
:class:`RecordRun`) are plain too: the Kafka side fills and reads them
(:mod:`processor.kafka.batches`), the engine only passes them through.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from processor.messages.codec import Headers, RecordLike, Where

#: (key, value, headers) of one record to produce.
Outgoing = tuple[bytes | None, bytes, Headers]


@dataclass(frozen=True, slots=True)
class BatchSpec:
    """How a topic's produce batches are framed: its partitions, the producer's batch size and
    codec, and whether they are built as finished record batches (``prebuilt``, aiokafka's
    fast path) or handed over as records for the producer's public batch API."""

    partitions: tuple[int, ...]
    max_bytes: int
    codec: int = 0  # the v2 record batch codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
    prebuilt: bool = True


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A finished v2 record batch for one partition (base offset 0, no producer state)."""

    partition: int
    data: bytes
    records: int


@dataclass(frozen=True, slots=True)
class RecordRun:
    """A partition's records in order, for the producer to frame (the public fallback)."""

    partition: int
    rows: list[Outgoing]


#: One partition's share of a topic's output, framed one way or the other.
ProduceBatch = EncodedBatch | RecordRun


@dataclass(slots=True)
class Columns:
    """The records of a batch as the spatial stage reads them, by row."""

    values: list[bytes | None] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def where(self, row: int) -> Where:
        """Where ``row`` came from, with its payload: what its dead letter names and carries."""
        return Where(self.topics[row], self.partitions[row], self.offsets[row], self.values[row])


@dataclass(slots=True)
class Job:
    """A batch, and what its outputs need to become produce batches: what a worker gets.

    ``keys`` and ``headers`` (only rows that have any) are the input records' own: a dead
    letter keeps them. ``stamps[row]``, when given, are the headers of that row's output.
    ``state_fields`` (windows or QC on: the reading fields the state reads) asks for the
    points' readings (:attr:`Framed.readings`), which revising the points also takes.
    """

    points: BatchSpec  # of the output topic
    letters: BatchSpec  # of the dead-letter topic
    stamps: Sequence[Headers] | None = None
    columns: Columns = field(default_factory=Columns)
    keys: list[bytes | None] = field(default_factory=list)
    headers: dict[int, Headers] = field(default_factory=dict)
    state_fields: tuple[str, ...] | None = None

    def extend(self, topic: str, partition: int, records: Sequence[RecordLike]) -> None:
        """Add a run of records of one partition."""
        columns = self.columns
        base = len(self.keys)
        columns.values += [r.value for r in records]
        columns.topics += [topic] * len(records)
        columns.partitions += [partition] * len(records)
        columns.offsets += [r.offset for r in records]
        self.keys += [r.key for r in records]
        heads = [r.headers for r in records]
        if any(heads):  # most inputs have none: one pass at C speed, and nothing to send
            self.headers.update((base + row, list(h)) for row, h in enumerate(heads) if h)


@dataclass(frozen=True, slots=True)
class PointReadings:
    """What the window state needs of a job's points (valid rows only, dead letters never),
    by point, in input row order: numpy columns, which pickle as one buffer each."""

    rows: npt.NDArray[np.int64]  # input row of each point
    offsets: npt.NDArray[np.int64]  # its input record's offset (of the row's partition)
    sensors: npt.NDArray[np.bytes_]  # processor.state.aggregates.sensor_keys of the points
    event_us: npt.NDArray[np.int64]  # UTC epoch microseconds
    values: npt.NDArray[np.float64]  # (points, fields), NaN: missing or not a finite number


@dataclass(frozen=True, slots=True)
class PointOutputs:
    """A job's points as records, by point in input row order, so that they can be framed
    again revised: QC's endings in place of the stage's, without some rows (dedup drops
    duplicates after the worker framed them). Made on the event loop, never pickled."""

    rows: list[int]
    keys: list[bytes]
    values: list[bytes]


@dataclass(slots=True)
class Framed:
    """What a job came to: its points and dead letters as produce batches, and the counts."""

    points: list[ProduceBatch] = field(default_factory=list)
    letters: list[ProduceBatch] = field(default_factory=list)
    published: int = 0
    codes: Counter[str] = field(default_factory=Counter)  # dead letters by error code
    readings: PointReadings | None = None  # when the job had state_fields
    outputs: PointOutputs | None = None  # the points a revision left
    #: The job itself, when the stage keeps it for revising: set in the process that sent
    #: it, after it came back (never pickled either way), so that points can be dead-lettered
    #: from their input.
    job: Job | None = field(default=None, repr=False, compare=False)

    @property
    def dead_lettered(self) -> int:
        return sum(self.codes.values())
