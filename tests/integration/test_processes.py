"""`processor run` as real subprocesses: kill -9 and restart, two members sharing a group,
SIGTERM drains, and bad settings failing fast with one line."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from processor.tools.synthetic import readings
from tests.integration.broker import TestBroker
from tests.integration.kafka import (
    ProcessorProcess,
    Topics,
    produce,
    read_all,
    settings_for,
    wait_committed_at_end,
    wait_for,
)

pytestmark = pytest.mark.integration
COUNT = 20_000


def _sources(records: list[Any]) -> Counter[tuple[int, int]]:
    found: Counter[tuple[int, int]] = Counter()
    for record in records:
        source = json.loads(record.value)["source"]
        found[(source["partition"], source["offset"])] += 1
    return found


async def _produce_sample(bootstrap: str, topics: Topics) -> tuple[int, int]:
    sample = list(readings(COUNT, sensors=300, invalid_ratio=0.02))
    await produce(bootstrap, topics.input, ((k, v) for k, v, _ in sample))
    invalid = sum(1 for *_, code in sample if code)
    return COUNT - invalid, invalid


async def _all_accounted(bootstrap: str, topics: Topics, valid: int, invalid: int) -> None:
    """Every input on the output or the DLQ at least once, and commits at the end offsets."""
    points = await read_all(bootstrap, topics.output, lambda got: len(_sources(got)) >= valid)
    letters = await read_all(bootstrap, topics.dlq, lambda got: len(_sources(got)) >= invalid)
    assert len(_sources(points)) == valid
    assert len(_sources(letters)) == invalid
    assert not set(_sources(points)) & set(_sources(letters))
    await wait_committed_at_end(bootstrap, topics)


async def test_kill_9_mid_stream_then_restart_loses_nothing(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path, record_property: Any
) -> None:
    valid, invalid = await _produce_sample(bootstrap, topics)
    settings = settings_for(
        broker,
        topics,
        tmp_path,
        stage_delay_ms=25,
        batch_max_records=400,
        buffer_max_records=2_000,
    )
    first = ProcessorProcess(settings, tmp_path / "first.log")
    try:
        await read_all(bootstrap, topics.output, 4_000)
        first.kill()
    finally:
        first.stop_now()
    written_before = len(await read_all(bootstrap, topics.output, None))
    assert written_before < valid, "the kill must land mid-stream"

    second = ProcessorProcess(settings, tmp_path / "second.log")
    try:
        await _all_accounted(bootstrap, topics, valid, invalid)
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0
    finally:
        second.stop_now()
    points = await read_all(bootstrap, topics.output, valid)
    letters = await read_all(bootstrap, topics.dlq, invalid)
    duplicates = len(points) + len(letters) - COUNT
    record_property("duplicates_after_kill_9", duplicates)
    print(f"\nkill -9 test: {duplicates} duplicates out of {COUNT} records")
    # A crash repeats what was in flight (the buffer) and what was acknowledged since the
    # last commit, which follows the acknowledgements within the commit floor (a few batches).
    # With commits on a 1 s timer this was up to a second of work: 16,000 records here.
    assert 0 <= duplicates <= settings.buffer_max_records + 2 * settings.batch_max_records


async def test_two_members_share_the_group_and_lose_nothing_when_one_stops(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    valid, invalid = await _produce_sample(bootstrap, topics)
    settings = settings_for(broker, topics, tmp_path, stage_delay_ms=40, batch_max_records=250)
    members = [
        ProcessorProcess(
            settings.model_copy(update={"spill_dir": tmp_path / f"spill-{i}"}),
            tmp_path / f"member-{i}.log",
        )
        for i in range(2)
    ]
    try:

        def both_working() -> bool:
            return all('"message":"batch"' in m.log() or _assigned(m) for m in members)

        await wait_for(both_working, what="both members assigned partitions")
        members[0].signal(signal.SIGTERM)
        assert await members[0].wait() == 0
        await _all_accounted(bootstrap, topics, valid, invalid)
        members[1].signal(signal.SIGTERM)
        assert await members[1].wait() == 0
    finally:
        for member in members:
            member.stop_now()
    assert "stopped cleanly" in members[0].log()


def _assigned(member: ProcessorProcess) -> bool:
    """The member's log shows a non-empty assignment."""
    for line in member.log().splitlines():
        if '"partitions assigned"' in line and json.loads(line).get("partitions"):
            return True
    return False


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--buffer-high", "1.5"], "PROCESSOR_BUFFER_HIGH"),
        (["--memory-hysteresis", "0.05"], "PROCESSOR_MEMORY_HYSTERESIS"),
        (["--acks", "2"], "PROCESSOR_ACKS"),
        (["--target-crs", "EPSG:999999"], "PROCESSOR_TARGET_CRS"),
        (["--bootstrap-servers", "127.0.0.1:9"], "PROCESSOR_BOOTSTRAP_SERVERS"),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_setting(
    flags: list[str], named: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "processor.cli",
            "run",
            "--http-port",
            "0",
            "--spill-dir",
            str(tmp_path),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert named in lines[0]
    assert "Traceback" not in done.stderr


def test_a_budget_below_the_floor_is_refused_with_one_line_naming_the_floor(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "processor.cli",
            "run",
            "--http-port",
            "0",
            "--spill-dir",
            str(tmp_path),
            "--memory-limit-mb",
            "64",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    found = re.fullmatch(
        r"processor: invalid setting PROCESSOR_MEMORY_LIMIT_MB \(--memory-limit-mb\): "
        r"a budget of 64 MB is below the floor of (\d+) MB: .*",
        line,
    )
    assert found is not None, line
    assert int(found[1]) > 64
