"""Where the spatial stage runs: a thread of this process, or worker processes.

The event loop's thread does the Kafka side (unpacking fetched records, sending produce
batches), and that alone keeps one core busy at full speed. Decoding, reprojecting,
encoding and framing a batch into produce batches costs about as much again and holds the
GIL, so in a thread it halves the rate; in a worker process it runs on a core of its own.
Work crosses the process boundary as columns and bytes (:class:`StageJob` in: lists of
bytes and ints; :class:`StageDone` out: finished record batches), which pickle at memcpy
speed, over a socket pair the event loop reads and writes itself.

A worker ignores SIGINT/SIGTERM (the parent drains and then stops it) and exits when the
parent's end of its socket closes, so a ``kill -9`` of the processor leaves no orphans.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing
import multiprocessing.process
import os
import pickle
import signal
import socket
import struct
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from processor.config import Settings
from processor.errors import ConfigError, StageWorkerError
from processor.lifecycle import all_or_none
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
    """The stage in ``processes`` worker processes, each with its own copy of the stage.

    Each worker is a spawned process joined to the event loop by a socket pair: a job is
    pickled and written by the loop itself, and the result is read back by the loop. There
    is no feeder or result thread, so a hand-off never waits for the GIL to change threads
    (up to ``sys.getswitchinterval()``, 5 ms, per hop while the loop is busy), which is what
    a process pool's hand-offs cost here. A job goes to the worker with the fewest jobs
    queued; each worker answers its jobs in order.
    """

    def __init__(self, settings: Settings, processes: int) -> None:
        self.parallelism = processes
        self._settings = settings
        self._workers: list[_Worker] = []

    async def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a threaded process
        for _ in range(self.parallelism):
            ours, theirs = socket.socketpair()
            process = context.Process(
                target=_serve, args=(theirs, self._settings), name="stage-worker", daemon=True
            )
            process.start()
            theirs.close()
            self._workers.append(_Worker(process, ours))  # before any await: close() sees it
        # multiprocessing joins its children at exit, and they ignore SIGTERM: a runner left
        # open would hold the exit forever. Registered after the first start, so it runs
        # before multiprocessing's own exit handler.
        atexit.register(self._abandon)
        await all_or_none(*(worker.ready() for worker in self._workers))

    async def compute(self, job: StageJob) -> StageDone:
        worker = min(self._workers, key=_Worker.load)
        return await worker.compute(job)

    async def close(self) -> None:
        atexit.unregister(self._abandon)
        await asyncio.gather(*(worker.close() for worker in self._workers))
        self._workers = []

    def _abandon(self) -> None:
        """At exit, unclosed: end each worker's input, so that it exits by itself."""
        for worker in self._workers:
            worker.abandon()


_FRAME = struct.Struct("!Q")  # the length of the pickle that follows
_READ_LIMIT = 16 * 1024 * 1024  # results of a few MiB are read without pausing the socket
_EXIT_S = 10.0


class _Worker:
    """One worker process, seen from the event loop: jobs out, results back in order."""

    def __init__(self, process: multiprocessing.process.BaseProcess, channel: socket.socket):
        self._process = process
        self._channel = channel
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._waiting: deque[asyncio.Future[StageDone]] = deque()
        self._reading: asyncio.Task[None] | None = None
        self._gone: StageWorkerError | None = None

    def load(self) -> int:
        return len(self._waiting)

    async def ready(self) -> None:
        """Wait for the worker's stage; its ConfigError is raised here, in the parent."""
        self._streams = await asyncio.open_connection(sock=self._channel, limit=_READ_LIMIT)
        try:
            failure = _unpickle(await self._receive())
        except (asyncio.IncompleteReadError, ConnectionError):
            raise StageWorkerError(
                f"a stage worker process failed to start (exit code {self._exit_code()})"
            ) from None
        if failure is not None:
            raise failure
        self._reading = asyncio.create_task(self._read_results(), name="stage-results")

    async def compute(self, job: StageJob) -> StageDone:
        if self._gone is not None:
            raise self._gone
        _, writer = self._connected()
        data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)  # before it takes a turn
        answer: asyncio.Future[StageDone] = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        try:
            writer.write(_FRAME.pack(len(data)))
            writer.write(data)
            await writer.drain()
        except ConnectionError:
            pass  # the reader sees the same end and fails every waiting job
        return await answer

    def _connected(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            raise StageWorkerError("a stage worker was used before it started")
        return self._streams

    async def _receive(self) -> bytes:
        reader, _ = self._connected()
        (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
        return await reader.readexactly(size)

    async def _read_results(self) -> None:
        try:
            while True:
                ok, outcome = _unpickle(await self._receive())
                answer = self._waiting.popleft()
                if answer.done():  # its caller was cancelled
                    continue
                if ok:
                    answer.set_result(outcome)
                else:
                    answer.set_exception(outcome)
        except (asyncio.IncompleteReadError, ConnectionError):
            if self._gone is None:  # not closed by us: it died
                self._gone = StageWorkerError(
                    f"a stage worker process died (exit code {self._exit_code()})"
                )
            while self._waiting:
                answer = self._waiting.popleft()
                if not answer.done():
                    answer.set_exception(self._gone)

    def _exit_code(self) -> int | None:
        self._process.join(0.1)  # it closed its end: it is exiting, if not gone already
        return self._process.exitcode

    async def close(self) -> None:
        """End of input tells a started worker to exit; one that does not is killed, and so
        is one still starting (it has nothing to finish, and may take seconds to notice)."""
        self._gone = self._gone or StageWorkerError("the stage workers are closed")
        if self._reading is None:
            self._process.kill()
        if self._streams is None:
            self._channel.close()
        else:
            _, writer = self._streams
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if self._reading is not None:
            await self._reading
        await asyncio.to_thread(self._process.join, _EXIT_S)
        if self._process.is_alive():
            self._process.kill()
            await asyncio.to_thread(self._process.join)

    def abandon(self) -> None:
        """End the worker's input without the event loop (at exit, when nobody closed it):
        the transport, if any, is on this very socket."""
        self._channel.close()


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


def _serve(channel: socket.socket, settings: Settings) -> None:
    """A worker's life: build the stage, then run jobs until the parent closes its end.

    The parent's end closes when it stops the workers and when it dies however it died, so
    a ``kill -9`` of the processor leaves no worker behind.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent drains first, then closes
    with contextlib.suppress(ConnectionError):  # the parent is gone: nobody to answer
        try:
            stage = SpatialStage.from_settings(settings)
            stage.warm_up()
        except ConfigError as exc:  # reported by the parent as one line
            _send(channel, exc)
            return
        _send(channel, None)
        while (job := _receive(channel)) is not None:
            try:
                outcome: tuple[bool, object] = (True, stage.run(job))
            except Exception as exc:  # the parent raises it where it awaits the result
                outcome = (False, exc)
            _send(channel, outcome)


def _unpickle(data: bytes | bytearray) -> Any:
    return pickle.loads(data)  # noqa: S301 - written by this program, over a private socket pair


def _send(channel: socket.socket, value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    channel.sendall(_FRAME.pack(len(data)))
    channel.sendall(data)


def _receive(channel: socket.socket) -> Any:
    """The next pickled value, or None at the end of input."""
    header = _read(channel, _FRAME.size)
    if header is None:
        return None
    (size,) = _FRAME.unpack(header)
    data = _read(channel, size)
    return None if data is None else _unpickle(data)


def _read(channel: socket.socket, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = channel.recv_into(view[got:])
        if not count:
            return None
        got += count
    return buffer
