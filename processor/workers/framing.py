"""A worker's job in two steps: the spatial stage's columns, then framing them for Kafka.

The geometry (:mod:`processor.geo.stage`) knows nothing of Kafka; :class:`Framer` turns its
points and dead letters into produce batches through one function for both
(:func:`~processor.kafka.batches.encode_batches`): points keyed by sensor id with their stamp,
dead letters keyed and headed as their input was, plus the error code. Both steps run where
the job runs (a worker process or a thread), so the event loop only queues finished batches.
"""

from __future__ import annotations

from collections import Counter

from processor.geo.stage import Computed, SpatialStage, StageSettings
from processor.kafka.batches import KeyPartitioner, encode_batches
from processor.messages.codec import Headers
from processor.messages.encode import dead_letter_headers
from processor.messages.jobs import BatchSpec, Framed, Job

_PARTITIONERS_MAX = 8  # two topics' partition lists, and a few changes of them


class Framer:
    """A job's points and dead letters as produce batches of their topics."""

    def __init__(self) -> None:
        self._partitioners: dict[tuple[int, ...], KeyPartitioner] = {}

    def frame(self, job: Job, computed: Computed) -> Framed:
        stamps = job.stamps
        none: Headers = []
        stamped = [stamps[row] for row in computed.rows] if stamps else [none] * len(computed.rows)
        points = encode_batches(
            job.points, computed.keys, computed.values, stamped, self._partitioner(job.points)
        )
        own = job.headers
        headers = [
            dead_letter_headers(own.get(row, none), stamps[row] if stamps else none, code)
            for row, code in zip(computed.failed, computed.codes, strict=True)
        ]
        keys = [job.keys[row] for row in computed.failed]
        letters = encode_batches(
            job.letters, keys, computed.letters, headers, self._partitioner(job.letters)
        )
        codes = Counter(code.value for code in computed.codes)
        return Framed(points, letters, len(computed.values), codes)

    def _partitioner(self, spec: BatchSpec) -> KeyPartitioner:
        partitioner = self._partitioners.get(spec.partitions)
        if partitioner is None:
            if len(self._partitioners) >= _PARTITIONERS_MAX:
                self._partitioners.clear()
            partitioner = self._partitioners[spec.partitions] = KeyPartitioner(spec.partitions)
        return partitioner


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
        return self._framer.frame(job, self._stage.compute(job.columns))
