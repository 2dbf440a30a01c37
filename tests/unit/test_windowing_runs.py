"""The window state in the engine, on the in-memory broker: aggregates published once and
equal to the readings' own, state saved only after the outputs were acknowledged and before
the offsets are committed, restored from the changelog on a new volume, duplicates to the
dead letters, and nothing saved after a failed acknowledgement (docs/state.md)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor.config import Settings
from processor.core import windowing
from processor.core.memory import MemoryProbe
from processor.core.pipeline import Processor
from processor.core.ports import TopicPartition
from processor.qc import PartitionQc
from processor.qc.endings import point_endings
from processor.state.store import LocalStore
from tests.support.memory_broker import (
    CountingStage,
    MemoryBroker,
    MemoryConnection,
    MemoryConnector,
    until,
)
from tests.support.memory_state import FIELDS, MemoryStateTopics, reading, readings_of

A = TopicPartition("in", 0)
T0 = 1_796_083_200  # 2026-12-01T00:00:00Z, in seconds


def _processor(tmp_path: Path, connection: MemoryConnection, **overrides: Any) -> Processor:
    values: dict[str, Any] = {
        "spill_dir": tmp_path / "spill",
        "spill_min_free_mb": 0,
        "buffer_max_records": 200,
        "batch_max_records": 7,
        "commit_interval_s": 0.001,
        "shutdown_timeout_s": 5,
        "window": 60_000,
        "allowed_lateness": 0,
        "aggregate_fields": FIELDS,
        "dedup": True,
        "state_dir": tmp_path / "state",
        **overrides,
    }
    return Processor(
        Settings(**values),
        MemoryConnector(connection, assign={A}),
        CountingStage(readings=readings_of),
        MemoryProbe(1024),
        fetch_max_bytes=1 << 16,
    )


def _produce(broker: MemoryBroker, rows: list[tuple[str, int, float]]) -> None:
    for sensor, event_s, pm25 in rows:
        broker.produce(A, 1, reading(sensor, event_s, pm25))


def _minute(first: int, values: list[float], sensor: str = "s1") -> list[tuple[str, int, float]]:
    """Readings of ``sensor`` 10 s apart from minute ``first`` of the day."""
    return [(sensor, T0 + first * 60 + 10 * i, value) for i, value in enumerate(values)]


def _connection(broker: MemoryBroker, topics: MemoryStateTopics) -> MemoryConnection:
    connection = broker.connection()
    connection.state = topics
    return connection


async def _run_to_end(processor: Processor, broker: MemoryBroker) -> None:
    running = asyncio.create_task(processor.run())
    await until(lambda: broker.group_offsets.get(A) == broker.end(A), what="commit at the end")
    processor.stop()
    assert await running == 0


async def test_each_closed_window_is_published_once_and_a_new_volume_restores_it(
    tmp_path: Path,
) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, _minute(0, [1, 2, 3, 4, 5, 6]) + _minute(1, [10, 20]))
    await _run_to_end(_processor(tmp_path, _connection(broker, topics)), broker)
    assert [(a["window_start"], a["count"]) for a in topics.published()] == [
        ("2026-12-01T00:00:00Z", 6)
    ]
    assert topics.published()[0]["fields"]["pm25"] == {
        "count": 6, "mean": 3.5, "min": 1.0, "max": 6.0
    }  # fmt: skip
    # Another member (no local store) takes the partition: minute 1 goes on from the changelog.
    _produce(broker, [("s1", T0 + 85, 30.0), *_minute(2, [7])])
    other = _processor(tmp_path, _connection(broker, topics), state_dir=tmp_path / "other")
    await _run_to_end(other, broker)
    assert [(a["window_start"], a["count"]) for a in topics.published()][1:] == [
        ("2026-12-01T00:01:00Z", 3)
    ]
    assert topics.published()[1]["fields"]["pm25"]["mean"] == 20.0


async def test_a_restart_on_the_same_volume_reads_only_the_changelog_tail(tmp_path: Path) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, _minute(0, [1, 2]))
    await _run_to_end(_processor(tmp_path, _connection(broker, topics)), broker)
    written = len(topics.changelog[A])
    # The changelog gains rows the local store does not have (another member's, say).
    topics.changelog[A] = topics.changelog[A] + topics.changelog[A][-2:]
    _produce(broker, [("s1", T0 + 20, 3.0), *_minute(1, [9])])
    await _run_to_end(_processor(tmp_path, _connection(broker, topics)), broker)
    assert topics.reads == [(A, 0), (A, written)]
    assert [(a["window_start"], a["count"]) for a in topics.published()] == [
        ("2026-12-01T00:00:00Z", 3)
    ]


async def test_a_store_ahead_of_its_changelog_is_rebuilt_from_the_changelog(
    tmp_path: Path,
) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, _minute(0, [1, 2]))
    first = _processor(tmp_path, _connection(broker, topics), batch_max_records=1)
    await _run_to_end(first, broker)
    ahead = len(topics.changelog[A])
    # The topic was recreated: its first rows hold only the first reading's state.
    topics.changelog[A] = topics.changelog[A][:2]
    broker.group_offsets[A] = 1
    _produce(broker, _minute(1, [9]))
    await _run_to_end(_processor(tmp_path, _connection(broker, topics)), broker)
    assert topics.reads[1:] == [(A, ahead), (A, 0)]
    assert [(a["window_start"], a["count"]) for a in topics.published()] == [
        ("2026-12-01T00:00:00Z", 2)
    ]


async def test_duplicates_are_dead_letters_and_counted_once(tmp_path: Path) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    again = _minute(0, [1, 2, 3])
    _produce(broker, again + [(s, t, 99.0) for s, t, _ in again[:2]] + _minute(1, [5]))
    processor = _processor(tmp_path, _connection(broker, topics))
    await _run_to_end(processor, broker)
    assert processor.stats.dead_lettered == {"duplicate": 2}
    assert processor.stats.published == 4
    assert topics.published()[0]["fields"]["pm25"]["max"] == 3.0


async def test_a_late_reading_is_published_and_not_counted(tmp_path: Path) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, _minute(0, [1]) + _minute(2, [2]) + _minute(0, [50]) + _minute(3, [3]))
    processor = _processor(tmp_path, _connection(broker, topics))
    await _run_to_end(processor, broker)
    assert processor.stats.late_readings == 1
    assert processor.stats.published == 4
    by_start = {a["window_start"]: a["count"] for a in topics.published()}
    assert by_start == {"2026-12-01T00:00:00Z": 1, "2026-12-01T00:02:00Z": 1}


async def test_state_is_saved_after_the_acknowledgement_and_before_the_commit(
    tmp_path: Path,
) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, _minute(0, [1, 2, 3]))
    connection = _connection(broker, topics)
    connection.outputs.hold = True
    processor = _processor(tmp_path, connection)
    running = asyncio.create_task(processor.run())
    await until(lambda: connection.outputs.waiting == 1, what="a batch sent")
    for _ in range(20):  # whatever else runs meanwhile, nothing is saved or committed
        await asyncio.sleep(0)
    assert A not in topics.changelog
    assert broker.group_offsets.get(A, 0) == 0
    connection.outputs.acknowledge()
    await until(lambda: broker.group_offsets.get(A) == 3, what="the commit")
    assert [key for key, _ in topics.changelog[A]] == [b"s1\x01", b""]
    processor.stop()
    assert await running == 0


async def test_batches_acknowledged_together_are_saved_in_one_write(tmp_path: Path) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, _minute(0, [1, 2], "s1") + _minute(0, [3], "s2") + _minute(1, [4], "s3"))
    connection = _connection(broker, topics)
    connection.outputs.hold = True
    processor = _processor(tmp_path, connection, batch_max_records=1)
    running = asyncio.create_task(processor.run())
    await until(lambda: connection.outputs.waiting == 4, what="four batches sent")
    connection.outputs.acknowledge()
    await until(lambda: broker.group_offsets.get(A) == 4, what="the commit")
    # The first batch is saved as soon as it is ready; the three acknowledged meanwhile are
    # saved together: each sensor's latest row once, the partition's row after all of them.
    assert len(topics.writes) < 4
    assert [b"s1\x01", b"s2\x01", b"s3\x01", b""] in topics.writes[1:] or len(topics.writes) == 1
    assert all(keys[-1] == b"" and len(set(keys)) == len(keys) for keys in topics.writes)
    processor.stop()
    assert await running == 0


async def test_after_a_failed_acknowledgement_no_later_batch_is_saved(tmp_path: Path) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, _minute(0, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
    connection = _connection(broker, topics)
    connection.outputs.hold = True
    processor = _processor(tmp_path, connection, batch_max_records=5)
    running = asyncio.create_task(processor.run())
    await until(lambda: connection.outputs.waiting == 2, what="two batches sent")
    connection.outputs.acknowledge(1, error="broker said no")
    connection.outputs.acknowledge(1)
    assert await running == 1
    assert A not in topics.changelog
    assert broker.group_offsets.get(A, 0) == 0


async def test_state_saved_under_other_settings_stops_the_processor(tmp_path: Path) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, _minute(0, [1]))
    await _run_to_end(_processor(tmp_path, _connection(broker, topics)), broker)
    _produce(broker, _minute(1, [2]))
    longer = _processor(tmp_path, _connection(broker, topics), window=120_000)
    # The client would swallow the listener's error; the processor stops on it instead.
    assert await longer.run() == 1
    assert broker.group_offsets[A] == 1
    assert longer.stats.published == 0


class _ClosedUnderTheRestore(MemoryStateTopics):
    """A changelog whose read fails once the processor is stopping, as the Kafka reader does
    when the drain closes it in the middle of a restore."""

    processor: Processor | None = None
    entered = False

    async def read_changelog(self, tp: TopicPartition, since: int) -> tuple[list[Any], int]:
        self.entered = True
        # Polled every turn of the loop (not an Event): the failure then comes before the
        # drain's cancellation reaches this task, as the reader's does.
        while self.processor is None or not self.processor.stopping:  # noqa: ASYNC110
            await asyncio.sleep(0)
        raise RuntimeError("the reader was stopped")


async def test_a_stop_in_the_middle_of_a_restore_is_a_clean_stop(tmp_path: Path) -> None:
    broker, topics = MemoryBroker(), _ClosedUnderTheRestore()
    _produce(broker, _minute(0, [1]))
    processor = topics.processor = _processor(tmp_path, _connection(broker, topics))
    running = asyncio.create_task(processor.run())
    await until(lambda: topics.entered, what="the restore")
    processor.stop()
    assert await running == 0
    assert processor.stats.published == 0


def _count_store_writes(monkeypatch: Any) -> list[int]:
    """The number of rows of each local store write, from now on."""
    writes: list[int] = []
    write = LocalStore.write

    def counted(self: LocalStore, topic: str, partition: int, rows: Any, meta: bytes) -> None:
        writes.append(len(rows))
        write(self, topic, partition, rows, meta)

    monkeypatch.setattr(LocalStore, "write", counted)
    return writes


async def test_the_local_store_takes_acknowledged_rows_once_a_second_and_at_the_stop(
    tmp_path: Path, monkeypatch: Any
) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, _minute(0, [1, 2], "s1") + _minute(0, [3], "s2"))
    writes = _count_store_writes(monkeypatch)
    monkeypatch.setattr(windowing, "STORE_EVERY_S", 3600.0)
    processor = _processor(tmp_path, _connection(broker, topics), batch_max_records=1)
    running = asyncio.create_task(processor.run())
    await until(lambda: broker.group_offsets.get(A) == 3, what="every batch committed")
    # Every batch saved to the changelog (committed), none yet to the local store.
    assert topics.writes
    assert writes == []
    processor.stop()
    assert await running == 0
    assert writes == [3]  # both sensors' rows and the partition's, once, at the stop
    # A restart finds them there: it reads the changelog only past them.
    _produce(broker, _minute(1, [4], "s1"))
    await _run_to_end(_processor(tmp_path, _connection(broker, topics)), broker)
    assert topics.reads[-1] == (A, len(topics.changelog[A]) - 2)
    assert [(a["sensor_id"], a["count"]) for a in topics.published()] == [("s1", 2), ("s2", 1)]


async def test_with_no_interval_the_local_store_takes_each_save(
    tmp_path: Path, monkeypatch: Any
) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, _minute(0, [1, 2], "s1") + _minute(0, [3], "s2"))
    writes = _count_store_writes(monkeypatch)
    monkeypatch.setattr(windowing, "STORE_EVERY_S", 0.0)
    processor = _processor(tmp_path, _connection(broker, topics), batch_max_records=1)
    await _run_to_end(processor, broker)
    assert sum(writes) == sum(len(keys) for keys in topics.writes)


# Quality control: flags from the state, on every point, whatever the batching or restarts.

QC_TABLES = '{"pm25": {"gross_range_fail": [0, 100], "spike_suspect": 20, "spike_fail": 50}}'
QC_VALUES = [5.0, 6.0, 500.0, 7.0, 30.0, 31.0, 31.0, -1.0, 8.0, 9.0, 60.0, 10.0]


def _oracle_endings(values: list[float]) -> list[bytes]:
    """The endings of one uninterrupted run over one sensor's ``values``, in one batch."""
    spec = Settings(qc=QC_TABLES).qc_spec
    assert spec is not None
    readings = readings_of(
        [], [_Record(reading("s1", T0 + 10 * i, v), i) for i, v in enumerate(values)]
    )
    flags = PartitionQc(spec).apply(
        readings.offsets, readings.sensors, readings.event_us, readings.values
    )
    return point_endings(spec.fields, flags.flag, flags.failed)


@dataclass
class _Record:
    value: bytes
    offset: int


def _endings(connection: MemoryConnection) -> list[bytes]:
    return [e for counted in connection.outputs.acknowledged for e in counted.endings or []]


async def test_every_point_gets_the_flags_of_its_sensors_history_in_any_batches(
    tmp_path: Path,
) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, [("s1", T0 + 10 * i, v) for i, v in enumerate(QC_VALUES)])
    connection = _connection(broker, topics)
    processor = _processor(
        tmp_path, connection, window=None, qc=QC_TABLES, batch_max_records=5, dedup=False
    )
    await _run_to_end(processor, broker)
    assert _endings(connection) == _oracle_endings(QC_VALUES)
    flags = [json.loads(b"{" + e[1:])["qc"]["pm25"] for e in _endings(connection)]
    assert flags[2] == {"flag": 4, "failed": ["gross_range", "spike"]}  # 500: out of range
    assert processor.stats.qc_flags[("pm25", 4)] == sum(f["flag"] == 4 for f in flags) >= 2


async def test_flags_after_a_restart_on_a_new_volume_are_the_uninterrupted_runs(
    tmp_path: Path,
) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    half = len(QC_VALUES) // 2
    settings: dict[str, Any] = {"window": None, "qc": QC_TABLES, "dedup": False}
    _produce(broker, [("s1", T0 + 10 * i, v) for i, v in enumerate(QC_VALUES[:half])])
    first = _connection(broker, topics)
    await _run_to_end(_processor(tmp_path / "a", first, batch_max_records=4, **settings), broker)
    _produce(broker, [("s1", T0 + 10 * (half + i), v) for i, v in enumerate(QC_VALUES[half:])])
    second = _connection(broker, topics)
    await _run_to_end(_processor(tmp_path / "b", second, **settings), broker)
    assert _endings(first) + _endings(second) == _oracle_endings(QC_VALUES)


async def test_windows_leave_flagged_values_out_and_count_them(tmp_path: Path) -> None:
    broker, topics = MemoryBroker(), MemoryStateTopics()
    _produce(broker, [*_minute(0, [5.0, 6.0, 500.0, 7.0]), *_minute(1, [8.0])])
    processor = _processor(tmp_path, _connection(broker, topics), qc=QC_TABLES)
    await _run_to_end(processor, broker)
    (minute_0,) = topics.published()
    assert minute_0["count"] == 4
    # 500 is out of range; 7 is a spike from it (the streaming spike test's left neighbour):
    # both failed, left out of the statistics and counted as failed.
    assert minute_0["fields"]["pm25"] == {"count": 2, "mean": 5.5, "min": 5.0, "max": 6.0}
    assert minute_0["qc"] == {"pm25": {"suspect": 0, "failed": 2}}


async def test_duplicates_are_no_observations_for_qc(tmp_path: Path) -> None:
    # A reading redelivered twice: with dedup it is dead-lettered, and QC never sees it, so
    # the sensor's next reading of the same value is no flat line (it would be, counting
    # the copies as repeats).
    broker, topics = MemoryBroker(), MemoryStateTopics()
    flat = '{"pm25": {"flat_line_suspect": 2, "flat_line_fail": 3, "flat_line_tolerance": 0.1}}'
    _produce(broker, [("s1", T0, 5.0)] * 3 + [("s1", T0 + 10, 5.0), ("s1", T0 + 20, 5.0)])
    connection = _connection(broker, topics)
    processor = _processor(tmp_path, connection, qc=flat, dedup=True)
    await _run_to_end(processor, broker)
    assert processor.stats.dead_lettered == {"duplicate": 2}
    # By input row: the two copies (dead letters) were never evaluated.
    flags = [json.loads(b"{" + e[1:])["qc"]["pm25"]["flag"] for e in _endings(connection)]
    assert flags == [1, 2, 2, 1, 3]  # 3 readings in a row, not 5: suspect at the third


class _HeldChangelog(MemoryStateTopics):
    """Changelog writes acknowledged only once ``saved`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.saved = asyncio.Event()

    async def write_changelog(self, tp: TopicPartition, rows: Any) -> Any:
        written = await super().write_changelog(tp, rows)
        end = await written

        async def later() -> int:
            await self.saved.wait()
            return end

        return asyncio.ensure_future(later())


async def test_an_acknowledged_batch_leaves_the_buffer_before_its_state_is_saved(
    tmp_path: Path,
) -> None:
    broker, topics = MemoryBroker(), _HeldChangelog()
    _produce(broker, _minute(0, [1, 2, 3]))
    processor = _processor(tmp_path, _connection(broker, topics))
    running = asyncio.create_task(processor.run())
    await until(lambda: topics.writes, what="the state written to the changelog")
    # Acknowledged, its state not yet saved: the buffer's room is free, the offsets are not.
    await until(lambda: processor.stats.buffered == 0, what="the buffer's room given back")
    assert broker.group_offsets.get(A, 0) == 0
    topics.saved.set()
    await until(lambda: broker.group_offsets.get(A) == 3, what="the commit")
    processor.stop()
    assert await running == 0
