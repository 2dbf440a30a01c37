"""processor.spill.SpillStore: JSONL segments per partition, bounded, crash-tolerant."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from processor.core.spill import SpillPiece, SpillStore
from processor.errors import SpillError

from .records import Record, reading

TOPIC = "sensor.readings"
BIG = 1 << 40  # effectively unbounded


@pytest.fixture(autouse=True)
def _quiet_spill_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="processor.core.spill")


def rec(offset: int, partition: int = 0, *, value: bytes | None = None, **kw: object) -> Record:
    payload = value if value is not None else reading(sensor_id=f"s-{offset}")
    return Record(
        TOPIC,
        partition,
        offset,
        kw.get("key", f"s-{offset}".encode()),  # type: ignore[arg-type]
        payload,
        kw.get("headers", [("traceparent", b"00-1-2-01"), ("bin", b"\x00\xff")]),  # type: ignore[arg-type]
        kw.get("timestamp", 1_700_000_000_000 + offset),  # type: ignore[arg-type]
    )


def put(spill: SpillStore, records: list[Record]) -> int:
    """``spill.append`` for records of one partition, which the test records name."""
    where = records[0] if records else rec(0)
    return spill.append(where.topic, where.partition, records)


def store(tmp_path: Path, max_bytes: int = BIG) -> SpillStore:
    return SpillStore(tmp_path, max_bytes, 0)


def read_all(spill: SpillStore, partition: int = 0, limit: int = 1_000_000) -> list[SpillPiece]:
    return spill.read(TOPIC, partition, limit)


def offsets(pieces: list[SpillPiece]) -> list[int]:
    return [r.offset for piece in pieces for r in piece.records]


def assert_contiguous(pieces: list[SpillPiece], first: int, end: int) -> None:
    """Pieces account for every offset of ``[first, end)`` exactly once, in order."""
    ranges = [(piece.first, piece.end) for piece in pieces]
    assert ranges, "no pieces"
    covered = (ranges[0][0], ranges[-1][1]) == (first, end)
    joined = all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    message = f"pieces {ranges} do not cover [{first}, {end}) contiguously"
    assert covered, message
    assert joined, message
    for piece in pieces:
        assert piece.first < piece.end
        assert all(piece.first <= r.offset < piece.end for r in piece.records)


def same_record(spilled: object, original: Record) -> None:
    assert spilled.topic == original.topic  # type: ignore[attr-defined]
    assert spilled.partition == original.partition  # type: ignore[attr-defined]
    assert spilled.offset == original.offset  # type: ignore[attr-defined]
    assert spilled.timestamp == original.timestamp  # type: ignore[attr-defined]
    assert spilled.key == original.key  # type: ignore[attr-defined]
    assert spilled.value == original.value  # type: ignore[attr-defined]
    assert list(spilled.headers) == original.headers  # type: ignore[attr-defined]


# append / read ------------------------------------------------------------------------


def test_round_trip_preserves_records_and_order(tmp_path: Path) -> None:
    records = [rec(o) for o in range(10, 20)]
    records[3] = rec(13, value=b"\xff\xfe not utf-8 \x00", key=None, headers=[])
    records[4] = rec(14, value=b"")
    spill = store(tmp_path)
    put(spill, records[:6])
    put(spill, records[6:])
    assert spill.pending(TOPIC, 0) == 10
    assert spill.records == 10
    assert spill.partitions() == {(TOPIC, 0)}
    assert spill.bytes > 0
    pieces = read_all(spill)
    assert offsets(pieces) == list(range(10, 20))
    for spilled, original in zip([r for p in pieces for r in p.records], records, strict=True):
        same_record(spilled, original)
    assert_contiguous(pieces, 10, 20)
    assert spill.pending(TOPIC, 0) == 0
    assert spill.partitions() == set()
    assert spill.bytes == 0
    assert read_all(spill) == []


def test_tombstone_round_trips(tmp_path: Path) -> None:
    spill = store(tmp_path)
    original = Record(TOPIC, 0, 5, b"k", None, [])
    put(spill, [original])
    [piece] = read_all(spill)
    assert piece.records[0].value is None
    assert (piece.first, piece.end) == (5, 6)


def test_gapped_offsets_are_accounted_for_within_a_segment(tmp_path: Path) -> None:
    spill = store(tmp_path)
    put(spill, [rec(o) for o in (100, 101, 105, 106)])
    pieces = [*spill.read(TOPIC, 0, 2), *spill.read(TOPIC, 0, 1), *spill.read(TOPIC, 0, 5)]
    assert [(p.first, p.end, [r.offset for r in p.records]) for p in pieces] == [
        (100, 105, [100, 101]),
        (105, 106, [105]),
        (106, 107, [106]),
    ]


def test_pieces_are_contiguous_across_gapped_segments(tmp_path: Path) -> None:
    """The docstring of ``read``: each piece covers offsets up to the next record on disk."""
    spill = store(tmp_path)
    put(spill, [rec(100), rec(101)])
    put(spill, [rec(105), rec(106)])
    pieces = read_all(spill)
    assert offsets(pieces) == [100, 101, 105, 106]
    assert_contiguous(pieces, 100, 107)


def test_partial_reads_across_segments(tmp_path: Path) -> None:
    spill = store(tmp_path)
    put(spill, [rec(o) for o in range(5)])
    put(spill, [rec(o) for o in range(5, 8)])
    put(spill, [rec(o) for o in range(8, 20)])
    seen: list[SpillPiece] = []
    for limit in (3, 3, 1, 4, 100):
        pieces = spill.read(TOPIC, 0, limit)
        assert sum(len(p.records) for p in pieces) == min(limit, 20 - len(offsets(seen)))
        seen.extend(pieces)
    assert offsets(seen) == list(range(20))
    assert_contiguous(seen, 0, 20)
    assert spill.pending(TOPIC, 0) == 0
    assert spill.bytes == 0
    assert not list((tmp_path / TOPIC / "0").glob("*.jsonl"))


def test_partitions_are_independent(tmp_path: Path) -> None:
    spill = store(tmp_path)
    put(spill, [rec(o, partition=1) for o in range(3)])
    put(spill, [rec(o, partition=2) for o in range(10, 12)])
    assert spill.partitions() == {(TOPIC, 1), (TOPIC, 2)}
    assert offsets(read_all(spill, partition=2)) == [10, 11]
    assert offsets(read_all(spill, partition=1)) == [0, 1, 2]
    assert read_all(spill, partition=3) == []


def test_append_nothing_is_a_no_op(tmp_path: Path) -> None:
    spill = store(tmp_path)
    put(spill, [])
    assert spill.records == 0
    assert spill.bytes == 0


def test_fully_read_segments_are_deleted(tmp_path: Path) -> None:
    spill = store(tmp_path)
    put(spill, [rec(0), rec(1)])
    put(spill, [rec(2)])
    folder = tmp_path / TOPIC / "0"
    assert len(list(folder.glob("*.jsonl"))) == 2
    spill.read(TOPIC, 0, 1)
    assert len(list(folder.glob("*.jsonl"))) == 2
    spill.read(TOPIC, 0, 1)
    assert len(list(folder.glob("*.jsonl"))) == 1


def test_bytes_match_the_files(tmp_path: Path) -> None:
    spill = store(tmp_path)
    put(spill, [rec(o) for o in range(5)])
    put(spill, [rec(o) for o in range(5, 9)])
    on_disk = sum(p.stat().st_size for p in (tmp_path / TOPIC / "0").glob("*.jsonl"))
    assert spill.bytes == on_disk


# bounds -------------------------------------------------------------------------------


def line_size(tmp_path: Path, record: Record) -> int:
    probe = SpillStore(tmp_path / "probe", BIG, 0)
    put(probe, [record])
    return probe.bytes


def test_append_takes_everything_when_there_is_room(tmp_path: Path) -> None:
    records = [rec(o) for o in range(10)]
    assert put(store(tmp_path), records) == 10
    assert put(store(tmp_path), []) == 0


def test_append_takes_the_leading_records_that_fit(tmp_path: Path) -> None:
    records = [rec(o) for o in range(10)]
    size = line_size(tmp_path, records[0])
    spill = store(tmp_path / "s", max_bytes=size * 3 + size // 2)
    assert put(spill, records) == 3
    assert offsets(read_all(spill)) == [0, 1, 2]


def test_append_nothing_when_spill_is_disabled(tmp_path: Path) -> None:
    spill = SpillStore(tmp_path / "off", 0, 0)
    assert put(spill, [rec(0)]) == 0
    assert spill.room_bytes() == 0
    assert not (tmp_path / "off").exists()


def test_append_nothing_without_free_disk(tmp_path: Path) -> None:
    spill = SpillStore(tmp_path, BIG, min_free_bytes=BIG)
    assert put(spill, [rec(0)]) == 0
    assert list(tmp_path.rglob("*.jsonl")) == []


@pytest.mark.parametrize("max_bytes", [2_000, 10_000, 50_000])
def test_spill_never_grows_past_max_bytes(tmp_path: Path, max_bytes: int) -> None:
    """Appending until refused keeps the spill within its byte bound, exactly."""
    spill = store(tmp_path, max_bytes=max_bytes)
    records = [rec(1_000_000 + o) for o in range(1_000)]
    cursor = 0
    while cursor < len(records):
        n = put(spill, records[cursor:])
        if n == 0:
            break
        cursor += n
        on_disk = sum(p.stat().st_size for p in tmp_path.rglob("*.jsonl"))
        assert on_disk == spill.bytes
        assert spill.bytes <= max_bytes, f"{spill.bytes} bytes spilled, bound {max_bytes}"
    assert 0 < cursor < len(records)


def test_reading_frees_room(tmp_path: Path) -> None:
    records = [rec(o) for o in range(4)]
    spill = store(tmp_path / "s", max_bytes=line_size(tmp_path, records[0]) * 4 * 2)
    put(spill, records)
    before = spill.room_bytes()
    read_all(spill)
    assert spill.room_bytes() > before


# discard ------------------------------------------------------------------------------


def test_discard(tmp_path: Path) -> None:
    spill = store(tmp_path)
    put(spill, [rec(o) for o in range(3)])
    put(spill, [rec(o, partition=1) for o in range(3)])
    spill.discard(TOPIC, 0)
    assert spill.pending(TOPIC, 0) == 0
    assert spill.partitions() == {(TOPIC, 1)}
    assert not (tmp_path / TOPIC / "0").exists()
    assert read_all(spill) == []
    assert offsets(read_all(spill, partition=1)) == [0, 1, 2]
    spill.discard(TOPIC, 7)  # nothing there: fine
    assert spill.bytes == 0


# recover ------------------------------------------------------------------------------


def crashed(tmp_path: Path, *runs: list[int], partition: int = 0) -> list[Path]:
    """Spill written by an earlier process; returns its segment files in order."""
    spill = store(tmp_path)
    for run in runs:
        put(spill, [rec(o, partition=partition) for o in run])
    return sorted((tmp_path / TOPIC / str(partition)).glob("*.jsonl"))


def test_recover_replays_from_committed(tmp_path: Path) -> None:
    crashed(tmp_path, list(range(10, 20)), list(range(20, 25)))
    spill = store(tmp_path)
    assert spill.recover(TOPIC, 0, 14) == 25
    assert spill.pending(TOPIC, 0) == 11
    pieces = read_all(spill)
    assert offsets(pieces) == list(range(14, 25))
    assert_contiguous(pieces, 14, 25)


def test_recover_from_the_first_spilled_offset(tmp_path: Path) -> None:
    crashed(tmp_path, [10, 11, 12])
    spill = store(tmp_path)
    assert spill.recover(TOPIC, 0, 10) == 13
    assert offsets(read_all(spill)) == [10, 11, 12]


def test_recover_skips_segments_below_committed(tmp_path: Path) -> None:
    paths = crashed(tmp_path, [0, 1, 2], [3, 4], [5, 6, 7])
    spill = store(tmp_path)
    assert spill.recover(TOPIC, 0, 6) == 8
    assert not paths[0].exists()
    assert not paths[1].exists()
    pieces = read_all(spill)
    assert offsets(pieces) == [6, 7]
    assert_contiguous(pieces, 6, 8)


def test_recovered_pieces_cover_committed_to_resume_point(tmp_path: Path) -> None:
    """After a crash the caller tracks ``[committed, resume_at)``: replay must finish it all."""
    crashed(tmp_path, [100, 101], [105, 106])
    spill = store(tmp_path)
    resume_at = spill.recover(TOPIC, 0, 100)
    assert resume_at == 107
    pieces = read_all(spill)
    assert offsets(pieces) == [100, 101, 105, 106]
    assert_contiguous(pieces, 100, resume_at)


@pytest.mark.parametrize("committed", [None, 5, 9, 25, 1_000])
def test_recover_discards_a_spill_that_does_not_continue_the_commit(
    tmp_path: Path, committed: int | None
) -> None:
    crashed(tmp_path, list(range(10, 20)), list(range(20, 25)))
    spill = store(tmp_path)
    assert spill.recover(TOPIC, 0, committed) is None
    assert spill.pending(TOPIC, 0) == 0
    assert not (tmp_path / TOPIC / "0").exists()
    assert read_all(spill) == []


def test_recover_without_a_spill(tmp_path: Path) -> None:
    spill = store(tmp_path)
    assert spill.recover(TOPIC, 0, 10) is None
    assert spill.partitions() == set()


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    paths = crashed(tmp_path, [10, 11], [12, 13, 14])
    with paths[-1].open("ab") as handle:
        handle.write(b'{"topic":"sensor.readings","partition":0,"offset":15,"timest')
    spill = store(tmp_path)
    assert spill.recover(TOPIC, 0, 10) == 15
    assert spill.pending(TOPIC, 0) == 5
    pieces = read_all(spill)
    assert offsets(pieces) == [10, 11, 12, 13, 14]
    assert_contiguous(pieces, 10, 15)


def test_torn_only_line_of_last_segment(tmp_path: Path) -> None:
    paths = crashed(tmp_path, [10, 11])
    (paths[0].parent / f"{int(paths[0].stem) + 1:012d}.jsonl").write_bytes(b'{"topic":"sen')
    spill = store(tmp_path)
    assert spill.recover(TOPIC, 0, 10) == 12
    assert offsets(read_all(spill)) == [10, 11]


def test_corrupt_non_last_segment_refuses_the_spill(tmp_path: Path) -> None:
    paths = crashed(tmp_path, [10, 11], [12, 13], [14, 15])
    paths[1].write_bytes(b"this is not json\n")
    spill = store(tmp_path)
    assert spill.recover(TOPIC, 0, 10) is None
    assert not (tmp_path / TOPIC / "0").exists()
    assert read_all(spill) == []


def test_torn_non_last_segment_refuses_the_spill(tmp_path: Path) -> None:
    paths = crashed(tmp_path, [10, 11], [12, 13], [14, 15])
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[: len(data) - 10])
    spill = store(tmp_path)
    assert spill.recover(TOPIC, 0, 10) is None
    assert not (tmp_path / TOPIC / "0").exists()


def test_corrupt_last_segment_refuses_the_spill(tmp_path: Path) -> None:
    paths = crashed(tmp_path, [10, 11], [12, 13])
    paths[-1].write_bytes(b'{"broken": true}\n')
    spill = store(tmp_path)
    assert spill.recover(TOPIC, 0, 10) is None


def test_new_segments_after_recover_do_not_reuse_names(tmp_path: Path) -> None:
    paths = crashed(tmp_path, [10, 11], [12, 13])
    spill = store(tmp_path)
    assert spill.recover(TOPIC, 0, 10) == 14
    put(spill, [rec(14), rec(15)])
    files = sorted((tmp_path / TOPIC / "0").glob("*.jsonl"))
    assert len(files) == 3
    assert files[:2] == paths
    pieces = read_all(spill)
    assert offsets(pieces) == list(range(10, 16))
    assert_contiguous(pieces, 10, 16)


def test_unreadable_segment_on_read_is_a_spill_error(tmp_path: Path) -> None:
    spill = store(tmp_path)
    put(spill, [rec(0), rec(1)])
    [path] = (tmp_path / TOPIC / "0").glob("*.jsonl")
    path.write_bytes(b"garbage\n" * 3)
    with pytest.raises(SpillError):
        read_all(spill)


# file names -----------------------------------------------------------------------------


def test_file_names_never_come_from_payloads(tmp_path: Path) -> None:
    evil = "../../etc/passwd"
    spill_dir = tmp_path / "spill"
    spill = SpillStore(spill_dir, BIG, 0)
    records = [
        Record(TOPIC, 4, o, evil.encode(), reading(sensor_id=evil), [(evil, evil.encode())])
        for o in range(3)
    ]
    put(spill, records)
    put(spill, [Record(TOPIC, 4, 3, b"/tmp/x", reading(sensor_id="/tmp/x"), [])])
    created = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(created) == 2
    for path in created:
        assert path.parent == spill_dir / TOPIC / "4"
        assert path.suffix == ".jsonl"
        assert path.stem.isdigit()
        assert "passwd" not in str(path)
    assert not (tmp_path / "etc").exists()
    assert offsets(read_all(spill, partition=4)) == [0, 1, 2, 3]


@pytest.mark.parametrize("topic", ["../escape", "a/b", "", "x" * 250, "with space"])
def test_illegal_topic_names_are_refused(tmp_path: Path, topic: str) -> None:
    spill = store(tmp_path / "spill")
    with pytest.raises(SpillError):
        put(spill, [Record(topic, 0, 0, None, b"{}", [])])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
