"""Windows over real subprocesses and the embedded broker: out-of-order, late and duplicate
readings (duplicates spelled with an offset too, and readings under a millisecond apart that
are not duplicates), ``kill -9`` twice mid-stream, a rebalance to a second member, a graceful
stop and a restart; every aggregate published equals the one an offline reading of the
contract computes from the input, and every duplicate is a dead letter, never a point (issue
17). QC runs beside the windows (pm25: a gross range and a spike test): every copy of every
point carries the flags one uninterrupted pass over its partition gives, and the windows
leave out exactly the values flagged suspect or failed (issue 18)."""

from __future__ import annotations

import json
import math
import random
import signal
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from processor.config import Settings
from processor.kafka.admin import create_topics
from processor.qc import PartitionQc, QcSpec, thresholds_of
from processor.qc.endings import point_endings
from processor.state.aggregates import sensor_keys
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

MINUTE = 60_000  # ms, as the settings take it
LATENESS = 30_000
SECOND_US = 1_000_000  # event times are µs
T0 = 1_796_083_200 * SECOND_US  # 2026-12-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SUSPECT, FAILED = 3, 4
PLUS_ONE = timezone(timedelta(hours=1))
FIELDS = ("pm25", "pm10")
SENSORS = [f"win-{i:03d}" for i in range(40)]
STEPS = 120  # a reading every 5 s per sensor: 10 minutes of event time
SECOND_PART = 84  # produced once a second member shares the partitions
#: pm25 is drawn from 0-80: about one value in eight fails the range, and jumps suspect.
QC_TABLES = {"pm25": {"gross_range_fail": [0, 70], "spike_suspect": 60, "spike_fail": 75}}
QC_SPEC = QcSpec.of(thresholds_of(QC_TABLES))


def _iso(us: int, zone: timezone = UTC) -> str:
    """The instant ``us`` in RFC 3339: ``Z`` (kept as bytes by the processor) or an offset."""
    when = (EPOCH + timedelta(microseconds=us)).astimezone(zone)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _us(text: str) -> int:
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(microseconds=1)


def _reading(sensor: str, event_us: int, rng: random.Random, zone: timezone = UTC) -> bytes:
    document: dict[str, Any] = {
        "sensor_id": sensor,
        "timestamp": _iso(event_us, zone),
        "latitude": 47.0 + rng.random(),
        "longitude": 8.0 + rng.random(),
        "pm25": round(rng.uniform(0, 80), 1),
    }
    if rng.random() < 0.9:  # pm10 missing from some readings: not counted for that field
        document["pm10"] = round(rng.uniform(0, 120), 1)
    return json.dumps(document).encode()


def _input(seed: int = 17) -> list[list[tuple[bytes, bytes]]]:
    """Readings every 5 s per sensor, jittered by up to 8 s (out of order within the
    lateness), plus late ones (4 minutes old), repeats of a recent (sensor, timestamp), half
    of them spelled with an offset, and readings less than a millisecond after another; in
    two parts, the second from the ``SECOND_PART`` th step."""
    rng = random.Random(seed)
    out: list[tuple[bytes, bytes]] = []
    parts = [out]
    recent: dict[str, list[int]] = defaultdict(list)
    for step in range(STEPS):
        if step == SECOND_PART:
            out = []
            parts.append(out)
        for sensor in SENSORS:
            event = T0 + step * 5 * SECOND_US + rng.randint(-8 * SECOND_US, 8 * SECOND_US)
            out.append((sensor.encode(), _reading(sensor, event, rng)))
            recent[sensor] = [*recent[sensor][-3:], event]
            if rng.random() < 0.04:  # a redelivery: same sensor and instant, any value
                again, zone = rng.choice(recent[sensor]), rng.choice([UTC, PLUS_ONE])
                out.append((sensor.encode(), _reading(sensor, again, rng, zone)))
            if rng.random() < 0.03:  # another reading, under a millisecond later
                out.append((sensor.encode(), _reading(sensor, event + rng.randint(1, 999), rng)))
            if rng.random() < 0.02:
                late = event - 240 * SECOND_US
                out.append((sensor.encode(), _reading(sensor, late, rng)))
    return parts


@dataclass
class _Oracle:
    """One input partition, the contract read literally, one record at a time; times in µs."""

    max_event: int | None = None
    open: dict[tuple[str, int], list[Any]] = field(default_factory=dict)
    keys: set[tuple[str, int]] = field(default_factory=set)  # counted (sensor, event)
    closed: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    duplicates: set[int] = field(default_factory=set)  # input offsets

    def read(self, offset: int, value: bytes, pm25_flag: int) -> None:
        document = json.loads(value)
        sensor = document["sensor_id"]
        event = _us(document["timestamp"])
        length, lateness = MINUTE * 1000, LATENESS * 1000
        start = event - event % length
        watermark = None if self.max_event is None else self.max_event - lateness
        if watermark is not None and watermark >= start + length:
            pass  # late: published, not counted
        elif (sensor, event) in self.keys:
            self.duplicates.add(offset)
        else:
            self.keys.add((sensor, event))
            window = self.open.setdefault((sensor, start), [0, {f: [] for f in FIELDS}, 0, 0])
            window[0] += 1
            window[2] += pm25_flag == SUSPECT
            window[3] += pm25_flag == FAILED
            for name in FIELDS:
                number = document.get(name)
                flagged = name == "pm25" and pm25_flag in (SUSPECT, FAILED)
                if isinstance(number, float | int) and math.isfinite(number) and not flagged:
                    window[1][name].append(float(number))
        self.max_event = event if self.max_event is None else max(self.max_event, event)
        watermark = self.max_event - lateness
        for sensor_start in [k for k in self.open if k[1] + length <= watermark]:
            count, values, suspect, failed = self.open.pop(sensor_start)
            qc = {"pm25": {"suspect": suspect, "failed": failed}}
            self.closed[sensor_start] = {"count": count, "fields": values, "qc": qc}


def _flags(inputs: list[Any], duplicates: set[Any]) -> dict[tuple[int, int], dict[str, Any]]:
    """Each input's QC, as one uninterrupted pass over its partition in offset order, without
    the duplicates, gives it: the point's ``qc`` and ``qc_flag``, by (partition, offset)."""
    out = {}
    for partition in {record.partition for record in inputs}:
        mine = sorted(
            (
                r
                for r in inputs
                if r.partition == partition and (partition, r.offset) not in duplicates
            ),
            key=lambda r: r.offset,
        )
        documents = [json.loads(record.value) for record in mine]
        flags = PartitionQc(QC_SPEC).apply(
            np.array([record.offset for record in mine], dtype=np.int64),
            sensor_keys([document["sensor_id"] for document in documents]),
            np.array([_us(document["timestamp"]) for document in documents], dtype=np.int64),
            np.array([[document["pm25"]] for document in documents], dtype=np.float64),
        )
        endings = point_endings(QC_SPEC.fields, flags.flag, flags.failed)
        for record, ending in zip(mine, endings, strict=True):
            out[(partition, record.offset)] = json.loads(b"{" + ending[1:])
    return out


def _offline(
    inputs: list[Any], flags: dict[tuple[int, int], dict[str, Any]]
) -> tuple[dict[tuple[str, int], dict[str, Any]], set[Any]]:
    """Closed windows and duplicate inputs, from the input topic as the broker holds it."""
    partitions: dict[int, _Oracle] = defaultdict(_Oracle)
    for record in sorted(inputs, key=lambda r: (r.partition, r.offset)):
        qc = flags.get((record.partition, record.offset))  # none: a duplicate
        pm25_flag = 1 if qc is None else qc["qc"]["pm25"]["flag"]
        partitions[record.partition].read(record.offset, record.value, pm25_flag)
    closed = {k: v for oracle in partitions.values() for k, v in oracle.closed.items()}
    duplicates = {(p, o) for p, oracle in partitions.items() for o in oracle.duplicates}
    return closed, duplicates


def _matches(published: dict[str, Any], expected: dict[str, Any]) -> bool:
    if published["count"] != expected["count"] or published["qc"] != expected["qc"]:
        return False
    if set(published["fields"]) != {name for name in FIELDS if expected["fields"][name]}:
        return False  # a field with no value counted is left out
    for name, got in published["fields"].items():
        values = expected["fields"][name]
        if got["count"] != len(values):
            return False
        if not (
            math.isclose(got["mean"], sum(values) / len(values), rel_tol=1e-12)
            and got["min"] == min(values)
            and got["max"] == max(values)
        ):
            return False
    return True


def _sources(records: list[Any]) -> set[tuple[int, int]]:
    found = set()
    for record in records:
        source = json.loads(record.value)["source"]
        found.add((source["partition"], source["offset"]))
    return found


async def test_aggregates_survive_kill_9_twice_a_rebalance_and_a_restart(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    aggregates_topic = f"agg-{topics.group}"
    await create_topics(bootstrap, [aggregates_topic], 4)
    first, second = _input()
    await produce(bootstrap, topics.input, first)
    settings = settings_for(
        broker,
        topics,
        tmp_path,
        window=MINUTE,
        allowed_lateness=LATENESS,
        aggregate_fields=FIELDS,
        dedup=True,
        aggregates_topic=aggregates_topic,
        state_dir=tmp_path / "state-a",
        qc=json.dumps(QC_TABLES),
        stage_delay_ms=60,
        batch_max_records=50,
        buffer_max_records=600,
    )
    await _crash_twice(settings, bootstrap, topics, tmp_path)
    await _rebalance_to_a_second_member(settings, bootstrap, topics, tmp_path, second)
    await _restart_and_close_every_window(settings, bootstrap, topics, tmp_path)

    inputs = await read_all(bootstrap, topics.input, None)
    _, duplicates = _offline(inputs, {})  # which are duplicates does not depend on QC
    flags = _flags(inputs, duplicates)
    expected, _ = _offline(inputs, flags)
    expected = {k: v for k, v in expected.items() if not k[0].startswith("flush-")}
    assert duplicates, "the input must have duplicates"
    by_window: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    for record in await read_all(bootstrap, aggregates_topic, None):
        document = json.loads(record.value)
        assert record.key == document["sensor_id"].encode()
        by_window[(document["sensor_id"], _us(document["window_start"]))].add(record.value)
    repeated = {k: v for k, v in by_window.items() if len(v) > 1}
    assert not repeated, "an aggregate published twice must be identical"
    assert set(by_window) == set(expected)
    wrong = [
        k for k, values in by_window.items() if not _matches(json.loads(min(values)), expected[k])
    ]
    assert not wrong, f"{len(wrong)} aggregates differ from the offline ones, e.g. {wrong[:3]}"
    letters = await read_all(bootstrap, topics.dlq, None)
    codes = Counter(json.loads(r.value)["error"]["code"] for r in letters)
    assert set(codes) == {"duplicate"}
    assert _sources(letters) == duplicates
    points = await read_all(bootstrap, topics.output, None)
    assert not _sources(points) & duplicates
    flagged: Counter[int] = Counter()
    for point in points:
        document = json.loads(point.value)
        source = document["source"]
        qc = flags[(source["partition"], source["offset"])]
        assert (document["qc"], document["qc_flag"]) == (qc["qc"], qc["qc_flag"]), source
        flagged[document["qc_flag"]] += 1
    assert flagged[FAILED], flagged
    assert flagged[SUSPECT], flagged
    assert flagged[1], flagged


async def _crash_twice(settings: Settings, bootstrap: str, topics: Topics, tmp: Path) -> None:
    """kill -9 mid-stream, twice, each after more points were published."""
    for crash, points in enumerate((800, 2_000)):
        member = ProcessorProcess(settings, tmp / f"crash-{crash}.log")
        try:
            await read_all(bootstrap, topics.output, points)
            member.kill()
        finally:
            member.stop_now()


async def _rebalance_to_a_second_member(
    settings: Settings,
    bootstrap: str,
    topics: Topics,
    tmp: Path,
    second_part: list[tuple[bytes, bytes]],
) -> None:
    """A member takes over, a second one joins and restores the partitions moved to it, and
    both go on with the input's second part; both stop gracefully once it is committed."""
    second = settings.model_copy(update={"state_dir": tmp / "state-b", "spill_dir": tmp / "b"})
    members = [ProcessorProcess(settings, tmp / "a.log")]
    try:
        await read_all(bootstrap, topics.output, 3_000)
        members.append(ProcessorProcess(second, tmp / "b.log"))
        await wait_for(
            lambda: "state restored" in members[1].log(),
            what="the second member restored a partition's state",
        )
        await produce(bootstrap, topics.input, second_part)
        await wait_committed_at_end(bootstrap, topics)
        # One at a time, each after its join: a member that stops in the middle of one cannot
        # leave the group, and the next join waits the rebalance timeout for it.
        joined = _assignments(members[0])
        members[1].signal(signal.SIGTERM)
        assert await members[1].wait() == 0
        await wait_for(
            lambda: _assignments(members[0]) > joined, what="the first member took all back"
        )
        members[0].signal(signal.SIGTERM)
        assert await members[0].wait() == 0
    finally:
        for member in members:
            member.stop_now()
    summaries = [_summary(member) for member in members]
    assert all(summary["consumed"] for summary in summaries), "both must have worked"
    print(f"\nwindows test: members' summaries {summaries}")


def _assignments(member: ProcessorProcess) -> int:
    """How many joins gave the member partitions."""
    return sum(
        1
        for line in member.lines()
        if line.get("message") == "partitions assigned" and line.get("partitions")
    )


def _summary(member: ProcessorProcess) -> dict[str, Any]:
    """The member's stop summary (its "stopped cleanly" line)."""
    return next(line for line in member.lines() if line.get("message") == "stopped cleanly")


async def _restart_and_close_every_window(
    settings: Settings, bootstrap: str, topics: Topics, tmp: Path
) -> None:
    """A restart after the graceful stop, and a reading an hour later on every partition: the
    watermarks pass every window, so each window the input opened is published."""
    restarted = ProcessorProcess(settings, tmp / "restart.log")
    try:
        rng = random.Random(5)
        for partition in range(4):
            flush = _reading(f"flush-{partition}", T0 + 3_600 * SECOND_US, rng)
            await produce(bootstrap, topics.input, [(b"flush", flush)], partition=partition)
        await wait_committed_at_end(bootstrap, topics)
        restarted.signal(signal.SIGTERM)
        assert await restarted.wait() == 0
    finally:
        restarted.stop_now()
