"""The engine's stage port (:class:`processor.core.ports.Stage`) on a stage runner: runs of
fetched records become a job of plain columns, and the runner computes and frames it where it
runs (:mod:`processor.workers.framing`).

:class:`Delayed` slows every batch down by a fixed time, one batch at a time, as a slow stage
would: tests and the demo use it to build backpressure on purpose; the hot path never sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from processor.core.ports import Stage, TopicPartition
from processor.messages.codec import Headers, RecordLike
from processor.messages.jobs import BatchSpec, Framed, Job
from processor.workers.runner import StageRunner


class RunnerStage:
    """The stage where ``runner`` runs it."""

    def __init__(self, runner: StageRunner) -> None:
        self.runner = runner

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
        job = Job(*framing, stamps)
        for tp, run in runs:
            job.extend(tp.topic, tp.partition, run)
        return await self.runner.compute(job)

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

    def describe(self) -> dict[str, int]:
        return self._stage.describe()

    async def close(self) -> None:
        await self._stage.close()
