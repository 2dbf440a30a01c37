"""processor.workers: the stage in a thread or in real worker processes, and their lifecycle."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from processor.batches import BatchSpec
from processor.config import Settings
from processor.errors import ConfigError, StageWorkerError
from processor.memory import MemoryProbe
from processor.samples import readings
from processor.stage import SpatialStage, StageDone, StageInput, StageJob
from processor.workers import (
    TWO_WORKERS_BUDGET,
    ProcessRunner,
    ThreadRunner,
    available_cpus,
    default_processes,
    make_runner,
)

from .records import messages, record

DATA = Path(__file__).resolve().parents[1] / "data"
DEADLINE_S = 30.0


SPEC = BatchSpec((0, 1, 2), 16_384)


def batch(count: int = 500) -> StageJob:
    """``count`` readings from one input partition, every tenth with a stamp of its own."""
    work = StageInput([], [], [], [])
    records = [
        record(value, offset=i, key=key)
        for i, (key, value, _) in enumerate(readings(count, invalid_ratio=0.05))
    ]
    work.extend("sensor.readings", 0, records)
    shared = [("traceparent", b"shared")]
    stamps = [[("traceparent", b"own-%d" % i)] if i % 10 == 0 else shared for i in range(count)]
    return StageJob(work, stamps, SPEC)


def content(done: StageDone) -> tuple[Any, ...]:
    """What a job produced, without the batches' timestamps (the time they were built)."""
    partitions = [batch.partition for batch in done.points]
    return (partitions, messages(done.points), done.published, done.failed, done.letters)


def stage_workers() -> list[psutil.Process]:
    """This test process's stage workers (not multiprocessing's resource tracker)."""
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "spawn_main" in " ".join(child.cmdline())
    ]


@asynccontextmanager
async def started(runner: ProcessRunner | ThreadRunner) -> AsyncIterator[None]:
    try:
        await runner.start()
        yield
    finally:
        await runner.close()


async def test_a_worker_process_computes_what_the_stage_computes_in_process() -> None:
    settings = Settings(stage_processes=2)
    work = batch()
    expected = content(SpatialStage.from_settings(settings).run(work))
    runner = make_runner(settings, TWO_WORKERS_BUDGET)
    assert isinstance(runner, ProcessRunner)
    assert runner.parallelism == 2
    async with started(runner):
        outputs = await asyncio.gather(*(runner.compute(work) for _ in range(3)))
    assert all(content(output) == expected for output in outputs)
    partitions, points, published, failed, _ = expected
    assert set(partitions) == {0, 1, 2}
    assert failed  # both kinds were exercised
    assert published == len(points) > 0
    assert {headers[0][1] for _, _, headers in points} >= {b"shared", b"own-10"}


async def test_the_thread_runner_computes_the_same() -> None:
    settings = Settings(stage_processes=0)
    runner = make_runner(settings, TWO_WORKERS_BUDGET)
    assert isinstance(runner, ThreadRunner)
    work = batch(200)
    async with started(runner):
        output = await runner.compute(work)
    assert content(output) == content(SpatialStage.from_settings(settings).run(work))


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
    assert content(output) == content(SpatialStage.from_settings(settings).run(work))
    assert any(b'"regions":["' in value for _, value, _ in messages(output.points))


async def test_a_killed_worker_fails_the_next_batch_loudly() -> None:
    runner = ProcessRunner(Settings(), 1)
    async with started(runner):
        [worker] = stage_workers()
        worker.kill()
        worker.wait(DEADLINE_S)
        with pytest.raises(StageWorkerError, match="died"):
            await runner.compute(batch(10))


async def test_a_failing_batch_raises_in_the_parent_and_the_worker_serves_on() -> None:
    runner = ProcessRunner(Settings(), 1)
    good = batch(20)
    bad = StageJob(good.batch, [[]], good.spec)  # one stamp for twenty rows: a bug upstream
    async with started(runner):
        with pytest.raises(IndexError):
            await runner.compute(bad)
        output = await runner.compute(good)
    assert output.published + len(output.failed) == 20


async def test_workers_ignore_ctrl_c_so_the_parent_can_drain() -> None:
    runner = ProcessRunner(Settings(), 1)
    async with started(runner):
        [worker] = stage_workers()
        worker.send_signal(signal.SIGINT)
        worker.send_signal(signal.SIGTERM)
        output = await runner.compute(batch(50))
        assert worker.is_running()
    assert output.published + len(output.failed) == 50


def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, os, signal, sys
            import psutil
            from processor.config import Settings
            from processor.workers import ProcessRunner

            async def main():
                runner = ProcessRunner(Settings(), 2)
                await runner.start()
                for child in psutil.Process().children():
                    if "spawn_main" in " ".join(child.cmdline()):
                        print(child.pid, flush=True)
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
    """The workers ignore SIGTERM and multiprocessing joins them at exit: a runner left open
    by a failure used to keep the interpreter waiting for them forever."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            import psutil
            from processor.config import Settings
            from processor.workers import ProcessRunner

            async def main():
                runner = ProcessRunner(Settings(), 2)
                await runner.start()
                for child in psutil.Process().children():
                    if "spawn_main" in " ".join(child.cmdline()):
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


async def test_memory_used_counts_the_workers() -> None:
    probe = MemoryProbe(limit_mb=4096)
    own = psutil.Process().memory_info().rss
    runner = ProcessRunner(Settings(), 1)
    async with started(runner):
        [worker] = stage_workers()
        assert probe.used() >= own + worker.memory_info().rss * 0.9


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


@pytest.mark.parametrize(
    ("cpus", "budget_mib", "processes"),
    [(1.0, 4096, 0), (1.5, 4096, 0), (2.0, 1024, 2), (8.0, 4096, 2), (2.0, 512, 1), (4, 256, 1)],
)
def test_two_workers_from_two_cpus_and_a_gib_on(
    cpus: float, budget_mib: int, processes: int
) -> None:
    assert default_processes(cpus, budget_mib * 1024 * 1024) == processes


def test_the_default_runner_follows_the_cpus_and_the_budget() -> None:
    runner = make_runner(Settings(), TWO_WORKERS_BUDGET)
    expected = default_processes(available_cpus(), TWO_WORKERS_BUDGET)
    assert runner.parallelism == max(expected, 1)
    assert isinstance(runner, ProcessRunner if expected else ThreadRunner)
