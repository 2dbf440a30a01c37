"""Points sent to the dead letters after the worker framed them (the window state's
duplicates): ``Stage.revise`` of the stage runners, through a thread and a worker
process, against the batch framed without those inputs and the dead-letter contract."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from processor.config import Settings
from processor.core.ports import TopicPartition
from processor.geo.stage import SpatialStage
from processor.kafka import batches
from processor.messages.codec import DeadLetterCode, Headers
from processor.messages.encode import ERROR_HEADER
from processor.messages.jobs import (
    BatchSpec,
    Framed,
    Job,
    PointOutputs,
    PointReadings,
    ProduceBatch,
)
from processor.tools.synthetic import readings
from processor.wiring import kafka_processor
from processor.workers.framing import Framer, StageThenFrame
from processor.workers.runner import ProcessRunner, ThreadRunner
from processor.workers.stage_port import Delayed, RunnerStage
from tests.support.memory_broker import Counted, CountingStage, run

from .records import Record, messages, reading, record

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "dead-letter.schema.json"
MAX_BYTES = 1_048_576
FIELDS = ("pm25",)
REASON = "sensor_id and timestamp of a reading already counted in an open window"
DUPLICATE = "duplicate"
TPS = (TopicPartition("in", 3), TopicPartition("in", 5))


def framing(prebuilt: bool = True) -> tuple[BatchSpec, BatchSpec]:
    """Points to three partitions, dead letters to two; small batches, so several a partition."""
    return BatchSpec((0, 1, 2), 4096, prebuilt=prebuilt), BatchSpec((0, 1), 4096)


def inputs() -> tuple[list[tuple[TopicPartition, list[Record]]], list[Headers]]:
    """Two runs of readings (a tenth of them invalid), some keyless, some with headers of
    their own (one of them named as the stamp is), and the stamps, every third row's own."""
    runs: list[tuple[TopicPartition, list[Record]]] = [(tp, []) for tp in TPS]
    stamps: list[Headers] = []
    for row, (key, value, _) in enumerate(readings(160, sensors=30, invalid_ratio=0.1)):
        own = [("trace", b"in-%d" % row), ("traceparent", b"old")] if row % 4 == 0 else []
        tp, records = runs[row * len(runs) // 160]
        offset = 1_000 + len(records)
        records.append(record(value, offset, topic=tp.topic, partition=tp.partition, headers=own))
        records[-1].key = None if row % 11 == 0 else key
        stamps.append([("traceparent", b"stamp-%d" % row)] if row % 3 == 0 else [])
    return runs, stamps


def flat(runs: Sequence[tuple[TopicPartition, list[Record]]]) -> list[Record]:
    return [r for _, records in runs for r in records]


def without(
    runs: Sequence[tuple[TopicPartition, list[Record]]], stamps: list[Headers], rows: set[int]
) -> tuple[list[tuple[TopicPartition, list[Record]]], list[Headers]]:
    """The batch as if input ``rows`` had never come (their neighbours keep their offsets)."""
    left, row = [], 0
    for tp, records in runs:
        left.append((tp, [r for i, r in enumerate(records, row) if i not in rows]))
        row += len(records)
    return left, [stamp for i, stamp in enumerate(stamps) if i not in rows]


def by_partition(framed: Sequence[ProduceBatch]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for batch in framed:
        out.setdefault(batch.partition, []).extend(messages([batch]))
    return out


@pytest.fixture(scope="module", params=["thread", "process"])
async def stage(request: pytest.FixtureRequest) -> AsyncIterator[RunnerStage]:
    runner = ThreadRunner(Settings()) if request.param == "thread" else ProcessRunner(Settings(), 1)
    stage = RunnerStage(runner, MAX_BYTES, state_fields=FIELDS, keep_points=True)
    await stage.start()
    yield stage
    await stage.close()


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches carry the time they were built: fixed, so two framings compare as bytes."""
    monkeypatch.setattr(batches, "time", SimpleNamespace(time=lambda: 1_764_000_000.0))


async def computed(stage: RunnerStage, prebuilt: bool = True) -> tuple[Framed, list[Record]]:
    runs, stamps = inputs()
    records = flat(runs)
    framed = await stage.compute(runs, records, stamps, framing(prebuilt))
    return framed, records


def points(framed: Framed) -> PointOutputs:
    """The points of a batch the stage kept the job of, as the revision reads them back."""
    assert framed.job is not None
    return Framer().points(framed.job, framed)


def some_points(framed: Framed) -> list[int]:
    """The first and last points' rows and every seventh between: in both runs."""
    rows = points(framed).rows
    return sorted({rows[0], rows[-1], *rows[::7]})


@pytest.mark.parametrize("prebuilt", [True, False])
@pytest.mark.usefixtures("fixed_clock")
async def test_the_points_left_are_the_batch_framed_without_those_inputs(
    prebuilt: bool,
) -> None:
    stage = RunnerStage(ThreadRunner(Settings()), MAX_BYTES, state_fields=FIELDS, keep_points=True)
    await stage.start()
    try:
        framed, _ = await computed(stage, prebuilt)
        rows = some_points(framed)
        runs, stamps = without(*inputs(), set(rows))
        alone = await stage.compute(runs, flat(runs), stamps, framing(prebuilt))
    finally:
        await stage.close()
    dead = stage.revise(framed, None, rows, DUPLICATE)
    assert len(by_partition(dead.points)) == 3
    assert dead.points == alone.points  # the same bytes, batch for batch
    assert dead.outputs is not None
    assert (dead.outputs.keys, dead.outputs.values) == (points(alone).keys, points(alone).values)
    assert dead.published == alone.published == framed.published - len(rows)


async def test_the_points_left_keep_their_order_in_every_partition(stage: RunnerStage) -> None:
    framed, _ = await computed(stage)
    rows = some_points(framed)
    read = points(framed)
    dropped = {v for r, v in zip(read.rows, read.values, strict=True) if r in rows}
    dead = stage.revise(framed, None, rows, DUPLICATE)
    expected = {
        partition: [point for point in points if point[1] not in dropped]
        for partition, points in by_partition(framed.points).items()
    }
    assert by_partition(dead.points) == expected
    assert len(messages(dead.points)) == dead.published == framed.published - len(rows)


async def test_a_duplicates_dead_letter_carries_its_input_as_the_stages_own_do(
    stage: RunnerStage,
) -> None:
    framed, records = await computed(stage)
    _, stamps = inputs()
    rows = some_points(framed)
    dead = stage.revise(framed, None, [*rows, rows[0]], DUPLICATE)  # a row twice: one letter
    assert dead.letters[: len(framed.letters)] == framed.letters  # the stage's own, untouched
    added = messages(dead.letters[len(framed.letters) :])
    schema = Draft202012Validator(json.loads(SCHEMA.read_text()))
    at = {(r.topic, r.partition, r.offset): row for row, r in enumerate(records)}
    found = []
    for key, value, headers in added:
        letter = json.loads(value)
        schema.validate(letter)
        source = letter["source"]
        row = at[source["topic"], source["partition"], source["offset"]]
        found.append(row)
        stamp = stamps[row]
        own = [h for h in records[row].headers if h[0] not in {name for name, _ in stamp}]
        assert letter["error"] == {"code": DUPLICATE, "message": REASON}
        assert letter["payload"].encode() == records[row].value
        assert key == records[row].key
        assert headers == [*own, *stamp, (ERROR_HEADER, b"duplicate")]
    assert sorted(found) == rows
    assert any(records[row].headers for row in rows)
    assert any(stamps[row] for row in rows)
    assert any(records[row].key is None for row in rows)
    assert any(records[row].headers and stamps[row] for row in rows)  # a stamp replaces one
    assert dead.codes == framed.codes + Counter({DUPLICATE: len(rows)})
    assert dead.dead_lettered == framed.dead_lettered + len(rows) == len(messages(dead.letters))
    assert dead.readings is framed.readings  # the engine has read them


async def test_no_rows_leave_the_batch_as_it_was(stage: RunnerStage) -> None:
    framed, _ = await computed(stage)
    same = stage.revise(framed, None, [], DUPLICATE)
    assert (same.points, same.letters) == (framed.points, framed.letters)
    assert (same.published, same.codes) == (framed.published, framed.codes)


async def test_a_second_call_sends_more_and_keeps_the_first(stage: RunnerStage) -> None:
    framed, _ = await computed(stage)
    read = points(framed)
    first, second = read.rows[:2], read.rows[5:8]
    once = stage.revise(framed, None, first, DUPLICATE)
    twice = stage.revise(once, None, second, DUPLICATE)
    assert twice.published == framed.published - 5 == len(messages(twice.points))
    assert twice.codes[DUPLICATE] == 5
    gone = {v for r, v in zip(read.rows, read.values, strict=True) if r in first}
    assert not gone & {value for _, value, _ in messages(twice.points)}
    with pytest.raises(ValueError, match="only a job's points"):
        stage.revise(twice, None, first, DUPLICATE)  # no longer points


async def test_what_cannot_be_a_duplicate_is_refused(stage: RunnerStage) -> None:
    framed, records = await computed(stage)
    rows = points(framed).rows
    letter_row = next(row for row in range(len(records)) if row not in rows)
    with pytest.raises(ValueError, match="only a job's points"):
        stage.revise(framed, None, [rows[0], letter_row], DUPLICATE)
    with pytest.raises(ValueError, match="come from the stage"):
        stage.revise(framed, None, [rows[0]], "invalid_json")
    with pytest.raises(ValueError, match="not a valid DeadLetterCode"):
        stage.revise(framed, None, [rows[0]], "late")
    with pytest.raises(ValueError, match="with keep_points"):
        stage.revise(Framed(), None, [0], DUPLICATE)


async def test_without_dedup_nothing_is_kept_and_nothing_can_be_sent() -> None:
    stage = RunnerStage(ThreadRunner(Settings()), MAX_BYTES)
    await stage.start()
    try:
        framed, _ = await computed(stage)
    finally:
        await stage.close()
    assert (framed.readings, framed.outputs, framed.job) == (None, None, None)
    with pytest.raises(ValueError, match="with keep_points"):
        stage.revise(framed, None, [0], DUPLICATE)


async def test_a_point_of_the_maximum_size_is_cut_in_its_dead_letter_as_the_stage_cuts() -> None:
    size = 6_000  # over the 4096 bytes a cut keeps
    padding = size - len(reading(note=""))
    value = reading(note="x" * padding)
    assert len(value) == size
    settings = Settings(max_payload_bytes=size)
    stage = RunnerStage(ThreadRunner(settings), size, state_fields=FIELDS, keep_points=True)
    await stage.start()
    try:
        tp = TopicPartition("in", 0)
        runs = [(tp, [record(value, 7, topic="in")])]
        framed = await stage.compute(runs, runs[0][1], None, framing())
    finally:
        await stage.close()
    assert framed.published == 1  # at the maximum: a point (over it: too_large)
    dead = stage.revise(framed, None, [0], DUPLICATE)
    [(_, letter, _)] = messages(dead.letters)
    document = json.loads(letter)
    assert document["payload_truncated"] is True
    assert document["payload_size"] == size
    assert document["payload"].encode() == value[:4096]


async def test_the_wiring_asks_for_readings_and_dedup_only_with_windows() -> None:
    runs, stamps = inputs()
    cases = [
        (Settings(window="60s", aggregate_fields="pm25,pm10", dedup=True), True, True),
        (Settings(window="60s", aggregate_fields="pm25"), True, False),
        (Settings(dedup=True), False, False),  # windows off: no state, no duplicates
    ]
    for chosen, windows, dedup in cases:
        stage = kafka_processor(chosen).stage
        assert isinstance(stage, RunnerStage)
        stage.runner = ThreadRunner(chosen)
        await stage.start()
        try:
            framed = await stage.compute(runs, flat(runs), stamps, framing())
        finally:
            await stage.close()
        assert (framed.readings is not None, framed.job is not None) == (windows, dedup)
        assert framed.outputs is None  # the worker does not send its points twice
        if windows:
            assert framed.readings is not None
            assert framed.readings.values.shape[1] == len(chosen.aggregate_fields)


# The framer alone, where the worker frames: any rows, both framings.

WORK_STAGE = StageThenFrame(SpatialStage.from_settings(Settings()))


def job(values: Sequence[bytes | None], prebuilt: bool) -> Job:
    work = Job(*framing(prebuilt), state_fields=FIELDS)
    work.extend("in", 4, [record(v, 100 + i, key=b"k%d" % i) for i, v in enumerate(values)])
    return work


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_any_points_go_and_the_rest_keep_their_place(data: st.DataObject) -> None:
    values = [value for _, value, _ in readings(300, sensors=40, invalid_ratio=0.1)]
    work = job(values, prebuilt=data.draw(st.booleans()))
    framed = WORK_STAGE.run(work)
    read = Framer().points(work, framed)
    rows = read.rows
    drop = set(data.draw(st.lists(st.sampled_from(rows))))
    dead = Framer().revise(
        work, framed, None, drop, code=DeadLetterCode.DUPLICATE, message="m", max_bytes=MAX_BYTES
    )
    dropped = {value for row, value in zip(rows, read.values, strict=True) if row in drop}
    expected = {
        partition: [m for m in points if m[1] not in dropped]
        for partition, points in by_partition(framed.points).items()
    }
    after = by_partition(dead.points)
    assert {p: m for p, m in after.items() if m} == {p: m for p, m in expected.items() if m}
    assert dead.published == len(rows) - len(drop)
    letters = [json.loads(value)["source"]["offset"] for _, value, _ in messages(dead.letters)]
    assert sorted(letters[len(messages(framed.letters)) :]) == sorted(100 + row for row in drop)


def test_the_framer_needs_the_readings() -> None:
    work = job([reading()], prebuilt=True)
    work.state_fields = None
    with pytest.raises(ValueError, match="without readings"):
        Framer().revise(
            work,
            WORK_STAGE.run(work),
            None,
            [0],
            code=DeadLetterCode.DUPLICATE,
            message="m",
            max_bytes=1,
        )


# The in-memory stage of the engine's tests, and the slow stage in front of either.


async def test_the_counting_stage_moves_counts_and_gives_the_readings_it_is_given() -> None:
    given_readings = PointReadings(
        np.arange(3), np.arange(3), np.array([b"s"] * 3), np.zeros(3, np.int64), np.zeros((3, 1))
    )
    made: list[tuple[Any, Any]] = []

    def make(runs: Any, records: Any) -> PointReadings:
        made.append((runs, records))
        return given_readings

    tp = TopicPartition("in", 0)
    records = [*run(tp, 0, 3), Record("in", 0, 3, b"s", b"bad")]
    stage = Delayed(CountingStage(make), 0)
    counted = await stage.compute([(tp, records)], records, None, None)
    assert isinstance(counted, Counted)
    assert counted.readings is given_readings
    assert made == [([(tp, records)], records)]
    dead = stage.revise(counted, None, [0, 2, 2], DUPLICATE)
    assert (dead.published, dead.codes) == (1, Counter({"invalid_json": 1, DUPLICATE: 2}))
    assert (counted.published, counted.codes) == (3, Counter({"invalid_json": 1}))
    assert stage.revise(counted, None, [], DUPLICATE).codes == counted.codes
    assert (await CountingStage().compute([(tp, records)], records, None, None)).readings is None


def test_qc_endings_replace_the_stages_and_count_no_dead_letter() -> None:
    work = job([reading(), reading()], prebuilt=False)
    framed = WORK_STAGE.run(work)
    endings = [b',"qc":{"pm25":{"flag":%d,"failed":[]}},"qc_flag":%d}' % (f, f) for f in (1, 3)]
    revised = Framer().revise(
        work, framed, endings, [], code=DeadLetterCode.DUPLICATE, message="m", max_bytes=MAX_BYTES
    )
    assert revised.codes == framed.codes  # no duplicate: no count, not even a zero
    points = [json.loads(value) for _, value, _ in messages(revised.points)]
    assert [(p["qc"]["pm25"]["flag"], p["qc_flag"]) for p in points] == [(1, 1), (3, 3)]
    before = [json.loads(value) for _, value, _ in messages(framed.points)]
    assert [p["qc"] for p in before] == [{}, {}]
    assert [p["qc_flag"] for p in before] == [2, 2]
    assert [{**p, "qc": {}, "qc_flag": 2} for p in points] == before
