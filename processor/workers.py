"""Where the spatial stage runs: a thread of this process, or worker processes.

The event loop's thread does the Kafka side (unpacking fetched records, sending produce
batches), and that alone keeps one core busy at full speed. Decoding, reprojecting,
encoding and framing a batch into produce batches costs about as much again and holds the
GIL, so in a thread it halves the rate; in a worker process it runs on a core of its own.
Work crosses the process boundary as columns and bytes (:class:`StageJob` in: lists of
bytes and ints; :class:`StageDone` out: finished record batches), which pickle at memcpy
speed, and results come back in submission order because the pipeline awaits them in that
order.

A worker ignores SIGINT/SIGTERM (the parent drains and then stops it) and exits by itself
if the parent dies, so a ``kill -9`` of the processor leaves no orphans behind.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait
from pathlib import Path
from typing import Protocol

from processor.config import Settings
from processor.errors import ConfigError, StageWorkerError
from processor.memory import CGROUP_ROOT, cgroup_path
from processor.stage import SpatialStage, StageDone, StageJob

#: The smallest memory budget that gets two stage workers by default.
TWO_WORKERS_BUDGET = 1024 * 1024 * 1024


class StageRunner(Protocol):
    #: Batches worth computing ahead of the one being published.
    parallelism: int

    async def start(self) -> None:
        """Ready to compute (raises ConfigError for a stage the settings cannot build)."""

    async def compute(self, job: StageJob) -> StageDone: ...

    async def close(self) -> None: ...


class ThreadRunner:
    """The stage in a worker thread of this process (one CPU, or ``STAGE_PROCESSES=0``)."""

    parallelism = 1

    def __init__(self, settings: Settings) -> None:
        self._stage = SpatialStage.from_settings(settings)

    async def start(self) -> None:
        await asyncio.to_thread(self._stage.warm_up)

    async def compute(self, job: StageJob) -> StageDone:
        # A thread, not the loop: heavy geometry (shapely releases the GIL) must not stall
        # the loop that heartbeats, fetches and acknowledges.
        return await asyncio.to_thread(self._stage.run, job)

    async def close(self) -> None:
        return None


class ProcessRunner:
    """The stage in ``processes`` worker processes, each with its own copy of the stage."""

    def __init__(self, settings: Settings, processes: int) -> None:
        self.parallelism = processes
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),  # never fork a threaded process
            initializer=_start_worker,
            initargs=(settings,),
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(
                *(loop.run_in_executor(self._pool, _ready) for _ in range(self.parallelism))
            )
        except BrokenProcessPool as exc:
            raise StageWorkerError(f"a stage worker process failed to start: {exc}") from None

    async def compute(self, job: StageJob) -> StageDone:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, _run, job)
        except BrokenProcessPool as exc:
            raise StageWorkerError(f"a stage worker process died: {exc}") from None

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)


def make_runner(settings: Settings, memory_budget: int) -> StageRunner:
    """A process runner when the settings (or, by default, the CPUs and memory) allow one."""
    processes = settings.stage_processes
    if processes is None:
        processes = default_processes(available_cpus(), memory_budget)
    return ProcessRunner(settings, processes) if processes else ThreadRunner(settings)


def default_processes(cpus: float, memory_budget: int) -> int:
    """Workers for ``cpus`` and a memory budget (bytes): two, one, or none (a thread).

    A worker costs about twice the event loop's time per record, so one event loop feeds
    two. Two beat one even on 2 CPUs (the loop is not always busy, and a worker waiting on
    its next batch leaves the other running): +15 % measured here. But a worker is ~100 MiB
    of interpreter and libraries before any record, so a budget under 1 GiB gets one.
    """
    if cpus < 2:
        return 0
    return 2 if memory_budget >= TWO_WORKERS_BUDGET else 1


def available_cpus(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota (``cpu.max``)."""
    cpus = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = (cgroup_path(root, proc_cgroup) / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return min(cpus, int(quota) / int(period))


# in the worker process ---------------------------------------------------------------------

_stage: SpatialStage | None = None
_failure: ConfigError | None = None


def _start_worker(settings: Settings) -> None:
    global _stage, _failure  # noqa: PLW0603 - one stage per worker process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    try:
        _stage = SpatialStage.from_settings(settings)
        _stage.warm_up()
    except ConfigError as exc:  # reported by _ready, in the parent, as one line
        _failure = exc


def _exit_with(parent_sentinel: int) -> None:
    wait([parent_sentinel])  # readable once the parent is gone, however it died
    os._exit(1)


def _ready() -> None:
    if _failure is not None:
        raise _failure


def _run(job: StageJob) -> StageDone:
    if _stage is None:
        raise _failure or StageWorkerError("stage worker not initialised")
    return _stage.run(job)
