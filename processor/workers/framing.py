"""A worker's job in two steps: the spatial stage's columns, then framing them for Kafka.

The geometry (:mod:`processor.geo.stage`) knows nothing of Kafka; :class:`Framer` turns its
points and dead letters into produce batches through one function for both
(:func:`~processor.kafka.batches.encode_batches`): points keyed by sensor id with their stamp,
dead letters keyed and headed as their input was, plus the error code. Both steps run where
the job runs (a worker process or a thread), so the event loop only queues finished batches.

With windows or QC on, the result also carries the points' readings as numpy columns for the
state (:class:`~processor.messages.jobs.PointReadings`), so that the state can revise the
points (:meth:`Framer.revise`, on the event loop): each point's QC flags in place of the
stage's "no test" ending, and a duplicate sent to the dead letters instead, its dead letter
made and framed by the same functions that made and framed the stage's own here. The points
to revise are read back from the produce batches (:meth:`Framer.points`), not sent twice:
as a second copy, pickled with every batch, they cost ~1.3 us a record (dumped in the
worker, loaded on the event loop), against ~0.15 us to read back the batches revised.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

import numpy as np

from processor.geo.stage import Computed, SpatialStage, StageSettings
from processor.kafka.batches import KeyPartitioner, encode_batches, produced_values
from processor.messages.codec import DeadLetterCode, Headers
from processor.messages.encode import NO_QC, dead_letter_headers, encode_dead_letter
from processor.messages.jobs import (
    BatchSpec,
    Framed,
    Job,
    PointOutputs,
    PointReadings,
    ProduceBatch,
)
from processor.state.aggregates import encoded_sensor_keys

_PARTITIONERS_MAX = 8  # two topics' partition lists, and a few changes of them


class Framer:
    """A job's points and dead letters as produce batches of their topics."""

    def __init__(self) -> None:
        self._partitioners: dict[tuple[int, ...], KeyPartitioner] = {}

    def frame(self, job: Job, computed: Computed) -> Framed:
        points = self._points(job, computed.rows, computed.keys, computed.values)
        letters = self._letters(job, computed.failed, computed.codes, computed.letters)
        codes = Counter(code.value for code in computed.codes)
        framed = Framed(points, letters, len(computed.values), codes)
        if computed.measures is not None:
            rows = np.array(computed.rows, dtype=np.int64)
            framed.readings = PointReadings(
                rows,
                np.array(job.columns.offsets, dtype=np.int64)[rows],
                encoded_sensor_keys(computed.keys),
                computed.measures.event_us,
                computed.measures.values,
            )
        return framed

    def points(self, job: Job, framed: Framed) -> PointOutputs:
        """``framed``'s points as records, by point in input row order: those a revision
        left, or read back from its produce batches, each partition's in order, the points'
        order given by its readings (a point's key is its sensor key, less its end)."""
        if framed.outputs is not None:
            return framed.outputs
        readings = framed.readings
        if readings is None:
            raise ValueError("the job was framed without readings: its points cannot be revised")
        keys = [key[:-1] for key in readings.sensors.tolist()]
        produced = produced_values(framed.points)
        if sum(map(len, produced.values())) != len(keys):
            raise ValueError("the points framed are not the points read")
        partition_of = self._partitioner(job.points)
        taken = {partition: iter(values) for partition, values in produced.items()}
        try:
            values = [next(taken[partition_of(key)]) for key in keys]
        except (KeyError, StopIteration):
            raise ValueError("the points framed are not the points read") from None
        return PointOutputs(readings.rows.tolist(), keys, values)

    def revise(
        self,
        job: Job,
        framed: Framed,
        endings: Sequence[bytes] | None,
        rows: Collection[int],
        *,
        code: DeadLetterCode,
        message: str,
        max_bytes: int,
    ) -> Framed:
        """``framed`` (of ``job``, with readings) with each point's ending
        (:data:`~processor.messages.encode.NO_QC`) replaced by ``endings`` (by point, in
        its order; None: kept), and the points of input ``rows`` sent to the dead letters
        instead, as the stage's own dead letters are made (with ``code`` and ``message``;
        ``max_bytes``: the stage's maximum payload size): its other points framed again in
        their order, the new dead letters after its own. The readings stay as they were:
        whoever asked for this has read them."""
        outputs = self.points(job, framed)
        moved = sorted(set(rows))
        if endings is not None:
            outputs = _ended(outputs, endings)
        elif not moved:
            return framed
        kept = _without(outputs, moved)
        if len(outputs.rows) - len(kept.rows) != len(moved):
            raise ValueError("only a job's points can be sent to the dead letters instead")
        where = job.columns.where
        values = [encode_dead_letter(where(row), code, message, max_bytes) for row in moved]
        letters = self._letters(job, moved, [code] * len(moved), values)
        codes = framed.codes.copy()
        if moved:
            codes[code.value] += len(moved)
        return Framed(
            self._points(job, kept.rows, kept.keys, kept.values),
            framed.letters + letters,
            len(kept.rows),
            codes,
            framed.readings,
            kept,
            framed.job,
        )

    def _points(
        self, job: Job, rows: list[int], keys: Sequence[bytes], values: Sequence[bytes]
    ) -> list[ProduceBatch]:
        """Points of input ``rows`` framed for the output topic, each with its row's stamp."""
        stamps = job.stamps
        none: Headers = []
        stamped = [stamps[row] for row in rows] if stamps else [none] * len(rows)
        return encode_batches(job.points, keys, values, stamped, self._partitioner(job.points))

    def _letters(
        self, job: Job, rows: list[int], codes: list[DeadLetterCode], values: list[bytes]
    ) -> list[ProduceBatch]:
        """Dead letters of input ``rows`` framed for the dead-letter topic: keyed as their
        input, with its headers, the row's stamp and the error code."""
        stamps = job.stamps
        own = job.headers
        none: Headers = []
        headers = [
            dead_letter_headers(own.get(row, none), stamps[row] if stamps else none, code)
            for row, code in zip(rows, codes, strict=True)
        ]
        keys = [job.keys[row] for row in rows]
        return encode_batches(job.letters, keys, values, headers, self._partitioner(job.letters))

    def _partitioner(self, spec: BatchSpec) -> KeyPartitioner:
        partitioner = self._partitioners.get(spec.partitions)
        if partitioner is None:
            if len(self._partitioners) >= _PARTITIONERS_MAX:
                self._partitioners.clear()
            partitioner = self._partitioners[spec.partitions] = KeyPartitioner(spec.partitions)
        return partitioner


def _ended(outputs: PointOutputs, endings: Sequence[bytes]) -> PointOutputs:
    """``outputs`` with each point's stage ending replaced by its own in ``endings``."""
    if len(endings) != len(outputs.values):
        raise ValueError(f"{len(endings)} endings for {len(outputs.values)} points")
    cut = -len(NO_QC)
    values = [value[:cut] + ending for value, ending in zip(outputs.values, endings, strict=True)]
    return PointOutputs(outputs.rows, outputs.keys, values)


def _without(outputs: PointOutputs, drop_rows: Collection[int]) -> PointOutputs:
    """``outputs`` but the points of input ``drop_rows``, in their order."""
    if not drop_rows:
        return outputs
    drop = np.fromiter(drop_rows, dtype=np.int64, count=len(drop_rows))
    keep = np.flatnonzero(np.isin(outputs.rows, drop, invert=True)).tolist()
    rows, keys, values = outputs.rows, outputs.keys, outputs.values
    return PointOutputs([rows[i] for i in keep], [keys[i] for i in keep], [values[i] for i in keep])


class StageThenFrame:
    """What a worker runs per job: the spatial stage, then the framing."""

    def __init__(self, stage: SpatialStage) -> None:
        self._stage = stage
        self._framer = Framer()

    @classmethod
    def of(cls, settings: StageSettings) -> StageThenFrame:
        """Raises ConfigError for a stage ``settings`` cannot build."""
        return cls(SpatialStage.from_settings(settings))

    def warm_up(self) -> None:
        self._stage.warm_up()

    def run(self, job: Job) -> Framed:
        return self._framer.frame(job, self._stage.compute(job.columns, job.state_fields))
