"""Where the spatial stage runs: worker processes, as many as the memory budget holds, or a
thread of this process.

The event loop's thread does the Kafka side (unpacking fetched records, sending produce
batches), and that alone keeps one core busy at full speed. Decoding, reprojecting,
encoding and framing a batch into produce batches
(:class:`~processor.workers.framing.StageThenFrame`) costs about as much again and holds the
GIL, so in a thread it halves the rate; in a worker
process it runs on a core of its own. Work crosses the process boundary as columns and bytes
(:class:`~processor.messages.jobs.Job` in: lists of bytes and ints;
:class:`~processor.messages.jobs.Framed` out: finished record batches), which pickle at
memcpy speed, over a socket pair the event loop reads and writes itself.

How many: two with 2+ CPUs (:func:`~processor.workers.budget.wanted_workers`), as many of them as
the budget holds. At start the runner measures this process, starts one worker and measures
it once its stage is built, and keeps as many as fit beside a burst's working memory under
``MEMORY_HIGH`` of the budget (:mod:`processor.workers.budget`); if none fits, the stage runs in a
thread; if even that does not fit the budget, start-up fails with one line that names the
floor. ``PROCESSOR_STAGE_PROCESSES`` sets
the count instead (0: a thread). The workers' pids go to the memory probe: they, and no
other child, count against the budget with this process.

A worker (:mod:`processor.workers.worker`) ignores SIGINT/SIGTERM (the parent drains and then
stops it) and exits when the parent's end of its socket closes, so a ``kill -9`` of the
processor leaves no orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import sys
from collections import deque
from pathlib import Path
from typing import Protocol

import psutil

from processor.config import Settings
from processor.core.lifecycle import all_or_none
from processor.core.memory import CGROUP_ROOT, MemoryProbe, cgroup_path
from processor.errors import ConfigError, StageWorkerError
from processor.geo.stage import StageSettings
from processor.kafka.clients import fetch_bytes
from processor.messages.jobs import Framed, Job
from processor.workers.budget import (
    MIB,
    WORKER_WORK_BYTES,
    burst_room,
    floor,
    wanted_workers,
    workers_that_fit,
)
from processor.workers.framing import StageThenFrame
from processor.workers.worker import FRAME, unpickle

log = logging.getLogger(__name__)
#: Where this ``processor`` package lives: a worker imports the same one.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class StageRunner(Protocol):
    """Computes jobs, in the order given, where the stage runs: ``start`` before the first,
    ``close`` after the last; a worker that dies fails its job with StageWorkerError."""

    #: Batches worth computing ahead of the one being published.
    parallelism: int

    async def start(self) -> None:
        """Ready to compute (raises ConfigError for a stage the settings cannot build)."""

    async def compute(self, job: Job) -> Framed: ...

    def pids(self) -> list[int]:
        """The worker processes (none for a thread)."""

    def describe(self) -> dict[str, int]:
        """Where the stage runs and on what measurements: for the log, once connected."""

    async def close(self) -> None: ...


class ThreadRunner:
    """The stage in a worker thread of this process (one CPU, or ``STAGE_PROCESSES=0``)."""

    parallelism = 1

    def __init__(self, settings: Settings) -> None:
        self._stage = StageThenFrame.of(StageSettings.of(settings))

    async def start(self) -> None:
        await asyncio.to_thread(self._stage.warm_up)

    async def compute(self, job: Job) -> Framed:
        # A thread, not the loop: heavy geometry (shapely releases the GIL) must not stall
        # the loop that heartbeats, fetches and acknowledges.
        return await asyncio.to_thread(self._stage.run, job)

    def pids(self) -> list[int]:
        return []

    def describe(self) -> dict[str, int]:
        return {"stage_workers": 0}

    async def close(self) -> None:
        return None


class ProcessRunner:
    """The stage in worker processes, each with its own copy of the stage.

    Each worker is a process joined to the event loop by a socket pair: a job is pickled and
    written by the loop itself, and the result is read back by the loop. There is no feeder
    or result thread, so a hand-off never waits for the GIL to change threads (up to
    ``sys.getswitchinterval()``, 5 ms, per hop while the loop is busy), which is what a
    process pool's hand-offs cost here. A job goes to the worker with the fewest jobs
    queued; each worker answers its jobs in order.
    """

    def __init__(self, settings: Settings, processes: int) -> None:
        self.parallelism = processes
        self._stage = StageSettings.of(settings)
        self._workers: list[_Worker] = []

    async def start(self) -> None:
        await self.grow(self.parallelism)

    async def grow(self, count: int) -> None:
        """Start ``count`` more workers and wait until their stages are built."""
        started: list[_Worker] = []
        for _ in range(count):
            started.append(await _Worker.spawn(self._stage))
            self._workers.append(started[-1])  # before the next await: close() sees it
        self.parallelism = len(self._workers)
        await all_or_none(*(worker.ready() for worker in started))

    def pids(self) -> list[int]:
        return [worker.pid for worker in self._workers]

    def describe(self) -> dict[str, int]:
        return {"stage_workers": len(self._workers)}

    async def compute(self, job: Job) -> Framed:
        worker = min(self._workers, key=_Worker.load)
        return await worker.compute(job)

    async def close(self) -> None:
        await asyncio.gather(*(worker.close() for worker in self._workers))
        self._workers = []


class BudgetRunner:
    """The stage in as many worker processes as the memory budget holds, else in a thread.

    What it decided, and on what measurements, is in :meth:`describe` (the processor logs it
    as "stage placed" once connected: before that, the only line is a start-up error's).
    """

    def __init__(self, settings: Settings, probe: MemoryProbe) -> None:
        self.parallelism = 1
        self._settings = settings
        self._probe = probe
        self._runner: StageRunner | None = None
        self._placement: dict[str, int] = {}

    async def start(self) -> None:
        settings, probe = self._settings, self._probe
        main = probe.own()
        self._refuse_below_floor(main)  # not even this process fits, stage or no stage
        chosen = settings.stage_processes
        wanted = wanted_workers(available_cpus()) if chosen is None else chosen
        room = self._room(probe.budget)
        worker = 0
        if wanted:
            processes = ProcessRunner(settings, 0)
            self._runner = processes
            await processes.grow(1 if chosen is None else chosen)
            worker = _rss(processes.pids()[0])
            limit = int(probe.budget * settings.memory_high)
            fit = workers_that_fit(wanted, limit, main, worker, room)
            if chosen is None and fit > 1:
                await processes.grow(fit - 1)
            if chosen is not None or fit:
                probe.count(processes.pids())
                self.parallelism = processes.parallelism
                self._placed(main, worker, room, fit)
                return
            await processes.close()
        thread = ThreadRunner(settings)
        self._runner = thread
        await thread.start()
        main = probe.own()
        self._refuse_below_floor(main)
        self._placed(main, worker, room, 0)

    def _room(self, budget: int) -> int:
        return room_at(self._settings, budget)

    def _refuse_below_floor(self, main: int) -> None:
        budget = self._probe.budget
        least = floor(main, self._room)
        if budget >= least:
            return
        source = {"cgroup": " (the cgroup's limit)", "machine": " (a quarter of the RAM)"}
        raise ConfigError(
            "invalid setting PROCESSOR_MEMORY_LIMIT_MB (--memory-limit-mb): a budget of "
            f"{budget / MIB:.0f} MB{source.get(self._probe.source, '')} is below the floor of "
            f"{least // MIB} MB: the processor after start-up ({main / MIB:.0f} MB) and a "
            f"burst's working memory ({self._room(least) / MIB:.0f} MB)"
        )

    def _placed(self, main: int, worker: int, room: int, fit: int) -> None:
        """Note where the stage went, on what measurements; warn if a set count does not fit."""
        workers = len(self.pids())
        needed = main + workers * (worker + WORKER_WORK_BYTES) + room
        self._placement = {
            "stage_workers": workers,
            "processor_mb": round(main / MIB),
            "worker_mb": round(worker / MIB),
            "burst_room_mb": round(room / MIB),
            "budget_mb": round(self._probe.budget / MIB),
        }
        if workers > fit:
            log.warning(
                "PROCESSOR_STAGE_PROCESSES (--stage-processes) %d needs about %.0f MB of a "
                "%.0f MB budget: expect memory pauses",
                workers,
                needed / MIB,
                self._probe.budget / MIB,
            )

    async def compute(self, job: Job) -> Framed:
        if self._runner is None:
            raise StageWorkerError("the stage is not started")
        return await self._runner.compute(job)

    def pids(self) -> list[int]:
        return self._runner.pids() if self._runner is not None else []

    def describe(self) -> dict[str, int]:
        return self._placement

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.close()


_READ_LIMIT = 16 * 1024 * 1024  # results of a few MiB are read without pausing the socket
_EXIT_S = 10.0


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


class _Worker:
    """One worker process, seen from the event loop: jobs out, results back in order."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._process = process
        self._reader = reader
        self._writer = writer
        self._waiting: deque[asyncio.Future[Framed]] = deque()
        self._reading: asyncio.Task[None] | None = None
        self._gone: StageWorkerError | None = None

    @classmethod
    async def spawn(cls, stage: StageSettings) -> _Worker:
        """Start a worker on the same interpreter and ``processor`` package, and send it
        what its stage is built from."""
        ours, theirs = socket.socketpair()
        path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        try:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-P", "-m", "processor.workers.worker", str(theirs.fileno())),
                pass_fds=[theirs.fileno()],  # -P: the package root, not the working directory
                env={**os.environ, "PYTHONPATH": path},
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours, limit=_READ_LIMIT)
        worker = cls(process, reader, writer)
        worker._write(stage)
        return worker

    @property
    def pid(self) -> int:
        return self._process.pid

    def load(self) -> int:
        return len(self._waiting)

    async def ready(self) -> None:
        """Wait for the worker's stage; its ConfigError is raised here, in the parent."""
        try:
            failure = unpickle(await self._receive())
        except (asyncio.IncompleteReadError, ConnectionError):
            code = await self._exit_code()
            raise StageWorkerError(
                f"a stage worker process failed to start (exit code {code})"
            ) from None
        if failure is not None:
            raise failure
        self._reading = asyncio.create_task(self._read_results(), name="stage-results")

    async def compute(self, job: Job) -> Framed:
        if self._gone is not None:
            raise self._gone
        answer: asyncio.Future[Framed] = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        try:
            self._write(job)
            await self._writer.drain()
        except ConnectionError:
            pass  # the reader sees the same end and fails every waiting job
        return await answer

    def _write(self, value: object) -> None:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(FRAME.pack(len(data)))
        self._writer.write(data)

    async def _receive(self) -> bytes:
        (size,) = FRAME.unpack(await self._reader.readexactly(FRAME.size))
        return await self._reader.readexactly(size)

    async def _read_results(self) -> None:
        try:
            while True:
                ok, outcome = unpickle(await self._receive())
                answer = self._waiting.popleft()
                if answer.done():  # its caller was cancelled
                    continue
                if ok:
                    answer.set_result(outcome)
                else:
                    answer.set_exception(outcome)
        except (asyncio.IncompleteReadError, ConnectionError):
            if self._gone is None:  # not closed by us: it died
                code = await self._exit_code()
                self._gone = StageWorkerError(f"a stage worker process died (exit code {code})")
            while self._waiting:
                answer = self._waiting.popleft()
                if not answer.done():
                    answer.set_exception(self._gone)

    async def _exit_code(self) -> int | None:
        with contextlib.suppress(TimeoutError):  # it closed its end: it is exiting, if not gone
            await asyncio.wait_for(self._process.wait(), 0.1)
        return self._process.returncode

    async def close(self) -> None:
        """End of input tells the worker to exit; one that does not is killed."""
        self._gone = self._gone or StageWorkerError("the stage workers are closed")
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        if self._reading is not None:
            await self._reading
        try:
            await asyncio.wait_for(self._process.wait(), _EXIT_S)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


def room_at(settings: Settings, budget: int) -> int:
    """A burst's working memory with ``settings`` and a budget of ``budget`` bytes (the
    fetch size follows from the budget)."""
    return burst_room(fetch_bytes(settings, budget)[0])


def make_runner(settings: Settings, probe: MemoryProbe) -> StageRunner:
    """The stage where ``probe``'s budget holds it (see the module doc)."""
    return BudgetRunner(settings, probe)


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
