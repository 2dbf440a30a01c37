"""The engine's stage port (:class:`processor.core.ports.Stage`) on a stage runner: runs of
fetched records become a job of plain columns, and the runner computes and frames it where it
runs (:mod:`processor.workers.framing`). The window state's duplicates go to the dead letters
here, on the event loop, from the job kept beside its result: rare, and after the worker
framed the batch.

:class:`Delayed` slows every batch down by a fixed time, one batch at a time, as a slow stage
would: tests and the demo use it to build backpressure on purpose; the hot path never sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from processor.core.ports import Stage, Staged, TopicPartition
from processor.messages.codec import DeadLetterCode, Headers, RecordLike
from processor.messages.jobs import BatchSpec, Framed, Job
from processor.workers.framing import Framer
from processor.workers.runner import StageRunner

#: The message of a dead letter the engine asks for, by its code.
_REASONS = {
    DeadLetterCode.DUPLICATE: "sensor_id and timestamp of a reading already counted in an "
    "open window",
}


class RunnerStage:
    """The stage where ``runner`` runs it. ``state_fields`` (windows or QC on: the fields the
    state reads) asks for the points' readings; ``keep_points`` keeps the job, which revising
    the points after the fact takes too (QC's endings, duplicates to the dead letters);
    ``max_payload_bytes`` is the stage's, for those dead letters."""

    def __init__(
        self,
        runner: StageRunner,
        max_payload_bytes: int,
        *,
        state_fields: tuple[str, ...] | None = None,
        keep_points: bool = False,
    ) -> None:
        self.runner = runner
        self._max_bytes = max_payload_bytes
        self._state_fields = state_fields
        self._keep_points = keep_points
        self._framer = Framer()

    @property
    def parallelism(self) -> int:
        return self.runner.parallelism

    async def start(self) -> None:
        await self.runner.start()

    async def compute(
        self,
        runs: Sequence[tuple[TopicPartition, Sequence[RecordLike]]],
        records: Sequence[RecordLike],
        stamps: Sequence[Headers] | None,
        framing: tuple[BatchSpec, BatchSpec],
    ) -> Framed:
        """``framing``: how to frame the points and the dead letters."""
        job = Job(*framing, stamps, state_fields=self._state_fields)
        for tp, run in runs:
            job.extend(tp.topic, tp.partition, run)
        framed = await self.runner.compute(job)
        if self._keep_points:
            framed.job = job  # here, after the round trip: never pickled
        return framed

    def revise(
        self, staged: Staged, endings: Sequence[bytes] | None, rows: Sequence[int], code: str
    ) -> Framed:
        """``staged`` (computed here, with ``keep_points``) with its points' QC ``endings``
        and the points of input ``rows`` sent to the dead letters instead, with ``code``:
        built and framed as the worker does its own."""
        if not isinstance(staged, Framed) or staged.job is None:
            raise ValueError("only a batch computed here with keep_points can be revised")
        letter = DeadLetterCode(code)
        reason = _REASONS.get(letter)
        if reason is None:
            raise ValueError(f"dead letters of code {code} come from the stage, not the engine")
        return self._framer.revise(
            staged.job,
            staged,
            endings,
            rows,
            code=letter,
            message=reason,
            max_bytes=self._max_bytes,
        )

    def describe(self) -> dict[str, int]:
        return self.runner.describe()

    async def close(self) -> None:
        await self.runner.close()


class Delayed:
    """``stage``, with each batch held ``delay_s`` first, one batch at a time."""

    def __init__(self, stage: Stage, delay_s: float) -> None:
        self._stage = stage
        self._delay_s = delay_s
        self._one_at_a_time = asyncio.Lock()

    @property
    def parallelism(self) -> int:
        return self._stage.parallelism

    async def start(self) -> None:
        await self._stage.start()

    async def compute(
        self,
        runs: Sequence[tuple[TopicPartition, Sequence[RecordLike]]],
        records: Sequence[RecordLike],
        stamps: Sequence[Headers] | None,
        framing: Any,
    ) -> Any:
        async with self._one_at_a_time:
            await asyncio.sleep(self._delay_s)
        return await self._stage.compute(runs, records, stamps, framing)

    def revise(
        self, staged: Staged, endings: Sequence[bytes] | None, rows: Sequence[int], code: str
    ) -> Staged:
        return self._stage.revise(staged, endings, rows, code)

    def describe(self) -> dict[str, int]:
        return self._stage.describe()

    async def close(self) -> None:
        await self._stage.close()
