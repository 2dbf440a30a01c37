"""The local state store: what is written reads back, rows and metadata of one write survive
a SIGKILL together or not at all, and a store it cannot use says PROCESSOR_STATE_DIR."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.errors import StateError
from processor.state.store import LocalStore

ROOT = Path(__file__).resolve().parents[2]


def stored(
    store: LocalStore, topic: str, partition: int
) -> tuple[dict[bytes, bytes], bytes | None]:
    rows, meta = store.read(topic, partition)
    pairs = list(rows)
    assert [key for key, _ in pairs] == sorted(key for key, _ in pairs)  # key order
    return dict(pairs), meta


def test_rows_and_metadata_read_back_after_reopening(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write("sensor.readings", 3, {b"b": b"2", b"a": b"1" * 100}, b"offsets 10")
    store.write("sensor.readings", 3, {b"c": b""}, b"offsets 20")
    assert stored(store, "sensor.readings", 3) == ({b"a": b"1" * 100, b"b": b"2", b"c": b""},
                                                   b"offsets 20")  # fmt: skip
    store.close()
    again = LocalStore(tmp_path)
    assert stored(again, "sensor.readings", 3)[1] == b"offsets 20"
    assert len(again.read("sensor.readings", 3)[0]) == 3
    again.close()


def test_a_released_partition_is_closed_and_reads_back_when_assigned_again(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    store.write("sensor.readings", 1, {b"a": b"1"}, b"offsets 5")
    store.release("sensor.readings", 1)
    store.release("sensor.readings", 2)  # never opened: nothing to do
    # Closed: another store (a restarted process) can open it, which RocksDB's lock forbids
    # while a database is open.
    other = LocalStore(tmp_path)
    assert stored(other, "sensor.readings", 1) == ({b"a": b"1"}, b"offsets 5")
    other.close()
    assert stored(store, "sensor.readings", 1) == ({b"a": b"1"}, b"offsets 5")
    store.close()


def test_the_log_stays_bounded_however_often_rows_are_rewritten(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    rows = {f"sensor-{i}".encode(): os.urandom(2_000) for i in range(1_000)}
    for write in range(150):  # 300 MB through the log, 2 MB of rows
        store.write("sensor.readings", 0, rows, write.to_bytes(8, "big"))
    store.close()
    size = sum(f.stat().st_size for f in (tmp_path / "sensor.readings").rglob("*") if f.is_file())
    assert size < 64 << 20  # 33 MB here; 113 MB without the cap


def test_a_partition_never_written_reads_empty_with_no_metadata(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert stored(store, "t", 0) == ({}, None)
    store.close()


def test_topics_and_partitions_are_kept_apart(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    names = ["a.b", "a_b", "a-b", "ab", ".a", "..a"]
    for number, topic in enumerate(names):
        for partition in (0, 1):
            store.write(topic, partition, {b"k": b"%d" % number}, b"%d" % partition)
    store.close()
    store = LocalStore(tmp_path)
    for number, topic in enumerate(names):
        for partition in (0, 1):
            assert stored(store, topic, partition) == ({b"k": b"%d" % number}, b"%d" % partition)
    store.close()


@pytest.mark.parametrize(("topic", "partition"), [("..", 0), (".", 0), ("a/b", 0), ("", 0),
                                                  ("t", -1), ("t" * 250, 0)])  # fmt: skip
def test_a_name_that_is_no_kafka_partition_is_refused(
    tmp_path: Path, topic: str, partition: int
) -> None:
    store = LocalStore(tmp_path / "state")
    with pytest.raises(StateError, match="not a legal Kafka topic name"):
        store.write(topic, partition, {b"k": b"v"}, b"m")
    assert list((tmp_path / "state").iterdir()) == []
    store.close()


writes = st.lists(
    st.tuples(
        st.dictionaries(st.binary(max_size=3), st.none() | st.binary(max_size=8), max_size=8),
        st.binary(max_size=8),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None)
@given(writes=writes)
def test_the_store_holds_what_a_dict_would(tmp_path_factory: pytest.TempPathFactory,
                                           writes: list[tuple[dict[bytes, bytes | None], bytes]]
                                           ) -> None:  # fmt: skip
    oracle: dict[bytes, bytes] = {}
    store = LocalStore(tmp_path_factory.mktemp("state"))
    for rows, meta in writes:
        store.write("t", 0, rows, meta)
        for key, value in rows.items():
            if value is None:
                oracle.pop(key, None)
            else:
                oracle[key] = value
    assert stored(store, "t", 0) == (oracle, writes[-1][1])
    store.close()


def test_a_dropped_partition_is_gone_and_the_others_stay(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write("t", 0, {b"k": b"0"}, b"m0")
    store.write("t", 1, {b"k": b"1"}, b"m1")
    store.drop("t", 0)
    store.drop("t", 7)  # never written: nothing to do
    assert stored(store, "t", 0) == ({}, None)
    store.close()
    store = LocalStore(tmp_path)
    assert stored(store, "t", 0) == ({}, None)
    assert stored(store, "t", 1) == ({b"k": b"1"}, b"m1")
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def _age(path: Path, seconds: float) -> None:
    """Every file of a partition's database last changed ``seconds`` ago."""
    then = time.time() - seconds
    for file in path.iterdir():
        os.utime(file, (then, then))


def test_a_sweep_drops_only_the_stores_not_owned_and_unchanged_for_long(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for topic, partition in [("t", 0), ("t", 1), ("t", 2), ("u", 0)]:
        store.write(topic, partition, {b"k": b"%d" % partition}, b"m")
    for topic, partition in [("t", 1), ("t", 2), ("u", 0)]:
        store.release(topic, partition)
    _age(tmp_path / "t" / "0", 3_600)  # owned, though idle: kept
    _age(tmp_path / "t" / "2", 3_600)  # gone an hour ago: dropped
    _age(tmp_path / "u" / "0", 3_600)  # owned, but closed (not set up yet): kept
    (tmp_path / "t" / "notes").mkdir()  # not a partition's database: left alone
    assert store.sweep({("t", 0), ("u", 0)}, idle_s=600) == [("t", 2)]
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["0", "1", "notes"]
    assert stored(store, "t", 1) == ({b"k": b"1"}, b"m")  # gone a moment ago: kept
    assert stored(store, "t", 2) == ({}, None)
    assert store.sweep(set(), idle_s=600) == [("u", 0)]  # the others open, or changed since
    store.close()


def test_a_drop_interrupted_before_its_delete_is_finished_on_the_next_open(
    tmp_path: Path,
) -> None:
    leftover = tmp_path / "~dropped" / "0123"
    leftover.mkdir(parents=True)
    (leftover / "CURRENT").write_text("MANIFEST-000001\n")
    LocalStore(tmp_path).close()
    assert not (tmp_path / "~dropped").exists()


def test_a_directory_it_cannot_create_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError) as raised:
        LocalStore(tmp_path / "file" / "state")
    message = str(raised.value)
    assert "PROCESSOR_STATE_DIR" in message
    assert str(tmp_path / "file" / "state") in message
    assert "\n" not in message


def test_a_partition_another_store_holds_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    first, second = LocalStore(tmp_path), LocalStore(tmp_path)
    first.write("t", 0, {b"k": b"v"}, b"m")
    with pytest.raises(StateError) as raised:
        second.write("t", 0, {b"k": b"w"}, b"n")
    message = str(raised.value)
    assert "PROCESSOR_STATE_DIR" in message
    assert "topic t partition 0" in message
    assert "\n" not in message
    first.close()
    assert stored(second, "t", 0) == ({b"k": b"v"}, b"m")  # usable once the other lets go
    second.close()


HOT = 2_000  # rows rewritten by every write of the writer, so that a kill lands inside one
#: Writes generation after generation (odd ones also put the "extra" rows, even ones delete
#: them) and prints each generation once its write has returned.
WRITER = f"""
import sys
import time
from pathlib import Path
from processor.state.store import LocalStore
store = LocalStore(Path(sys.argv[1]))
for generation in range(1, 1_000_000):
    rows = {{b"hot-%05d" % i: generation.to_bytes(8, "little") * 12 for i in range({HOT})}}
    extra = generation.to_bytes(8, "little") if generation % 2 else None
    rows.update({{b"extra-%03d" % i: extra for i in range(100)}})
    store.write("sensor.readings", 2, rows, b"%d" % generation)
    print(generation, flush=True)
"""


@pytest.mark.parametrize("round_", range(10))
def test_a_writer_killed_mid_write_leaves_its_last_write_whole(tmp_path: Path, round_: int) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as writer:
        assert writer.stdout is not None
        started, last = time.monotonic(), int(writer.stdout.readline())
        while last < 4 + round_:
            last = int(writer.stdout.readline())
        # Not a wait for anything: a kill right after a line would always land at the start
        # of the next loop, before its write; a random share of one loop's time places it
        # anywhere in the write, between its rows and its metadata included.
        period = (time.monotonic() - started) / (last - 1)
        time.sleep(random.Random(round_).uniform(0, period))
        writer.send_signal(signal.SIGKILL)
        last = max([last, *map(int, writer.stdout.read().split())])  # printed while we slept
    assert writer.returncode == -signal.SIGKILL
    store = LocalStore(tmp_path)
    rows, meta = stored(store, "sensor.readings", 2)
    generation = int(meta or b"0")
    assert generation in (last, last + 1)  # the last completed write, or the one after it
    word = generation.to_bytes(8, "little")
    extras = {key for key in rows if key.startswith(b"extra-")}
    assert len(extras) == (100 if generation % 2 else 0)
    assert {value for key, value in rows.items() if key.startswith(b"hot-")} == {word * 12}
    assert len(rows) - len(extras) == HOT
    store.write("sensor.readings", 2, {b"hot-00000": b"after"}, b"after")  # usable again
    assert stored(store, "sensor.readings", 2)[0][b"hot-00000"] == b"after"
    store.close()
