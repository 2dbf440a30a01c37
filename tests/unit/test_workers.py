"""processor.workers: the stage in a thread or in real worker processes, and their lifecycle."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest

from processor.config import Settings
from processor.core.memory import MemoryProbe
from processor.errors import ConfigError, StageWorkerError
from processor.geo.stage import SpatialStage
from processor.messages.jobs import BatchSpec, Framed, Job
from processor.tools.synthetic import readings
from processor.workers.budget import MIB, floor, wanted_workers
from processor.workers.framing import StageThenFrame
from processor.workers.runner import (
    ProcessRunner,
    StageRunner,
    ThreadRunner,
    available_cpus,
    make_runner,
    room_at,
)

from .records import messages, record

DATA = Path(__file__).resolve().parents[1] / "data"
DEADLINE_S = 30.0


SPEC = BatchSpec((0, 1, 2), 16_384)


def batch(count: int = 500) -> Job:
    """``count`` readings from one input partition, every tenth with a stamp of its own."""
    shared = [("traceparent", b"shared")]
    stamps = [[("traceparent", b"own-%d" % i)] if i % 10 == 0 else shared for i in range(count)]
    work = Job(SPEC, BatchSpec((0, 1), 16_384), stamps)
    records = [
        record(value, offset=i, key=key)
        for i, (key, value, _) in enumerate(readings(count, invalid_ratio=0.05))
    ]
    work.extend("sensor.readings", 0, records)
    return work


def in_process(settings: Settings, work: Job) -> Framed:
    return StageThenFrame(SpatialStage.from_settings(settings)).run(work)


def content(done: Framed) -> tuple[Any, ...]:
    """What a job produced, without the batches' timestamps (the time they were built), and
    dead letters in any order (a keyless one goes to a random partition, as with send())."""
    points = [batch.partition for batch in done.points]
    letters = sorted(messages(done.letters), key=repr)
    return (points, messages(done.points), letters, done.codes)


def stage_workers(runner: ProcessRunner) -> list[psutil.Process]:
    return [psutil.Process(pid) for pid in runner.pids()]


def stray_workers() -> list[psutil.Process]:
    """Stage worker processes of this test process that no runner holds any more."""
    return [
        child
        for child in psutil.Process().children()
        if "processor.workers.worker" in child.cmdline()
    ]


@asynccontextmanager
async def started(runner: StageRunner) -> AsyncIterator[None]:
    try:
        await runner.start()
        yield
    finally:
        await runner.close()


async def test_a_worker_process_computes_what_the_stage_computes_in_process() -> None:
    settings = Settings(stage_processes=2)
    work = batch()
    expected = content(in_process(settings, work))
    runner = ProcessRunner(settings, 2)
    async with started(runner):
        assert runner.parallelism == len(stage_workers(runner)) == 2
        outputs = await asyncio.gather(*(runner.compute(work) for _ in range(3)))
    assert all(content(output) == expected for output in outputs)
    partitions, points, letters, codes = expected
    assert set(partitions) == {0, 1, 2}
    assert letters  # both kinds were exercised
    assert sum(codes.values()) == len(letters)
    assert len(points) > 0
    assert {headers[0][1] for _, _, headers in points} >= {b"shared", b"own-10"}


async def test_the_thread_runner_computes_the_same() -> None:
    settings = Settings(stage_processes=0)
    runner = ThreadRunner(settings)
    work = batch(200)
    async with started(runner):
        output = await runner.compute(work)
    assert content(output) == content(in_process(settings, work))


async def test_a_bad_geofence_file_is_one_config_error_at_start(tmp_path: Path) -> None:
    broken = tmp_path / "fences.geojson"
    broken.write_text('{"type": "FeatureCollection", "features": [')
    runner = ProcessRunner(Settings(geofences=broken), 1)
    with pytest.raises(ConfigError, match="PROCESSOR_GEOFENCES") as caught:
        async with started(runner):
            pass
    assert "\n" not in str(caught.value)


async def test_geofences_are_loaded_in_the_worker() -> None:
    settings = Settings(geofences=DATA / "watersheds.geojson", outside_policy="pass")
    work = batch(300)
    runner = ProcessRunner(settings, 1)
    async with started(runner):
        output = await runner.compute(work)
    assert content(output) == content(in_process(settings, work))
    assert any(b'"regions":["' in value for _, value, _ in messages(output.points))


async def test_a_killed_worker_fails_the_next_batch_loudly() -> None:
    runner = ProcessRunner(Settings(), 1)
    async with started(runner):
        [worker] = stage_workers(runner)
        worker.kill()
        worker.wait(DEADLINE_S)
        with pytest.raises(StageWorkerError, match="died"):
            await runner.compute(batch(10))


async def test_a_failing_batch_raises_in_the_parent_and_the_worker_serves_on() -> None:
    runner = ProcessRunner(Settings(), 1)
    good = batch(20)
    bad = Job(good.points, good.letters, [[]], good.columns)  # one stamp for twenty rows
    async with started(runner):
        with pytest.raises(IndexError):
            await runner.compute(bad)
        output = await runner.compute(good)
    assert output.published + output.dead_lettered == 20


async def test_workers_ignore_ctrl_c_so_the_parent_can_drain() -> None:
    runner = ProcessRunner(Settings(), 1)
    async with started(runner):
        [worker] = stage_workers(runner)
        worker.send_signal(signal.SIGINT)
        worker.send_signal(signal.SIGTERM)
        output = await runner.compute(batch(50))
        assert worker.is_running()
    assert output.published + output.dead_lettered == 50


def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, os, signal, sys
            from processor.config import Settings
            from processor.workers.runner import ProcessRunner

            async def main():
                runner = ProcessRunner(Settings(), 2)
                await runner.start()
                for pid in runner.pids():
                    print(pid, flush=True)
                print("ready", flush=True)
                sys.stdin.readline()
                os.kill(os.getpid(), signal.SIGKILL)

            if __name__ == "__main__":
                asyncio.run(main())
            """
        )
    )
    with subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        assert parent.stdin is not None
        lines = iter(parent.stdout.readline, "ready\n")
        workers = [psutil.Process(int(line)) for line in lines]
        parent.stdin.write("die\n")
        parent.stdin.flush()
        parent.wait(DEADLINE_S)
    assert parent.returncode == -signal.SIGKILL
    assert len(workers) == 2
    _, alive = psutil.wait_procs(workers, timeout=DEADLINE_S)
    assert alive == [], "stage workers outlived their killed parent"


def test_a_runner_nobody_closed_does_not_hold_the_exit(tmp_path: Path) -> None:
    """The workers ignore SIGTERM: a runner left open
    by a failure used to keep the interpreter waiting for them forever."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            import psutil
            from processor.config import Settings
            from processor.workers.runner import ProcessRunner

            async def main():
                runner = ProcessRunner(Settings(), 2)
                await runner.start()
                for child in psutil.Process().children():
                    if "processor.workers.worker" in " ".join(child.cmdline()):
                        print(child.pid, flush=True)
                print("ready", flush=True)  # and leave without closing the runner

            if __name__ == "__main__":
                asyncio.run(main())
            """
        )
    )
    with subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        workers = [psutil.Process(int(line)) for line in iter(parent.stdout.readline, "ready\n")]
        try:
            code = parent.wait(DEADLINE_S)
        finally:
            parent.kill()
    assert code == 0
    assert len(workers) == 2
    _, alive = psutil.wait_procs(workers, timeout=DEADLINE_S)
    assert alive == []


async def test_a_worker_loads_the_stage_and_not_the_settings_or_the_parents_modules() -> None:
    runner = ProcessRunner(Settings(), 1)
    async with started(runner):
        [pid] = runner.pids()
        packages = {part for line in _maps(pid) for part in Path(line.split()[-1]).parts}
    assert {"pyproj", "shapely", "numpy", "msgspec"} <= packages  # the stage
    assert not {"pydantic_core", "psutil"} & packages  # not the settings, not the probe


def _maps(pid: int) -> list[str]:
    """The files a process has mapped: its shared libraries, i.e. its extension modules."""
    return Path(f"/proc/{pid}/maps").read_text().splitlines()


async def test_the_runner_has_its_workers_counted_with_this_process() -> None:
    probe = MemoryProbe(limit_mb=4096)
    runner = make_runner(Settings(stage_processes=1), probe)
    async with started(runner):
        [worker] = [psutil.Process(pid) for pid in runner.pids()]
        assert probe.used() >= probe.own() + worker.memory_info().rss * 0.9


def test_available_cpus_follows_the_cgroup_quota(tmp_path: Path) -> None:
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("0::/pod\n")
    (tmp_path / "pod").mkdir()
    cpu_max = tmp_path / "pod" / "cpu.max"
    affinity = float(len(os.sched_getaffinity(0)))
    assert available_cpus(tmp_path, proc_cgroup) == affinity  # no cpu.max
    cpu_max.write_text("max 100000\n")
    assert available_cpus(tmp_path, proc_cgroup) == affinity
    cpu_max.write_text("50000 100000\n")
    assert available_cpus(tmp_path, proc_cgroup) == min(affinity, 0.5)


def test_settings_refuse_a_negative_process_count() -> None:
    with pytest.raises(ValueError, match="stage_processes"):
        Settings(stage_processes=-1)


def budget_mb(probe: MemoryProbe, extra: int) -> int:
    """A budget of the floor of this process as it is now, plus ``extra`` MiB."""
    return floor(probe.own(), partial(room_at, Settings())) // MIB + extra


async def test_a_budget_that_holds_them_gets_the_workers_the_cpus_want() -> None:
    probe = MemoryProbe(limit_mb=budget_mb(MemoryProbe(None), 2048))
    runner = make_runner(Settings(), probe)
    async with started(runner):
        workers = runner.pids()
        expected = wanted_workers(available_cpus())
        assert len(workers) == expected
        assert runner.parallelism == max(expected, 1)
        assert probe.used() >= probe.own() + sum(_rss(pid) for pid in workers) * 0.9


async def test_a_budget_too_small_for_a_worker_runs_the_stage_in_a_thread() -> None:
    probe = MemoryProbe(limit_mb=budget_mb(MemoryProbe(None), 16))  # a worker is ~60 MB
    runner = make_runner(Settings(), probe)
    work = batch(50)
    async with started(runner):
        assert runner.pids() == []
        assert runner.parallelism == 1
        output = await runner.compute(work)
        assert stray_workers() == []  # the one started to be measured has exited
    assert output.published + output.dead_lettered == 50


async def test_a_budget_below_the_floor_is_refused_before_any_worker_starts() -> None:
    probe = MemoryProbe(limit_mb=budget_mb(MemoryProbe(None), -8))
    runner = make_runner(Settings(), probe)
    with pytest.raises(ConfigError) as caught:
        async with started(runner):
            pass
    message = str(caught.value)
    assert message.startswith("invalid setting PROCESSOR_MEMORY_LIMIT_MB (--memory-limit-mb)")
    found = re.search(r"a budget of (\d+) MB is below the floor of (\d+) MB", message)
    assert found is not None, message
    assert int(found[1]) == probe.budget // MIB < int(found[2])
    assert "\n" not in message
    assert stray_workers() == []


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)
