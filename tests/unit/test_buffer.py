"""processor.buffer.RecordBuffer: bounded accounting, round-robin take, contiguous splits."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from processor.core.buffer import Chunk, RecordBuffer
from processor.core.offsets import OffsetTracker

from .records import Record


def chunk(tp: str, offsets: Sequence[int], end: int | None = None) -> Chunk[str]:
    records = [Record("t", 0, o, None, b"v") for o in offsets]
    tracker = OffsetTracker(offsets[0])
    last = end if end is not None else offsets[-1] + 1
    tracker.track(offsets[0], last)
    return Chunk(tp, records, offsets[0], last, tracker)


def summary(chunks: list[Chunk[str]]) -> list[tuple[str, int, int, list[int]]]:
    return [(c.tp, c.first, c.end, [r.offset for r in c.records]) for c in chunks]


def test_split_keeps_ranges_contiguous() -> None:
    whole = chunk("a", [100, 101, 105, 106, 110], end=115)
    head, tail = whole.split(2)
    assert (head.first, head.end) == (100, 105)
    assert (tail.first, tail.end) == (105, 115)
    assert [r.offset for r in head.records] == [100, 101]
    assert [r.offset for r in tail.records] == [105, 106, 110]
    assert head.tracker is tail.tracker is whole.tracker


async def test_take_round_robin_across_partitions() -> None:
    buffer: RecordBuffer[str] = RecordBuffer()
    buffer.put(chunk("a", [0, 1]))
    buffer.put(chunk("a", [2, 3]))
    buffer.put(chunk("b", [10, 11]))
    buffer.put(chunk("c", [20, 21]))
    taken = await buffer.take(6)
    assert summary(taken) == [
        ("a", 0, 2, [0, 1]),
        ("b", 10, 12, [10, 11]),
        ("c", 20, 22, [20, 21]),
    ]
    assert summary(await buffer.take(6)) == [("a", 2, 4, [2, 3])]


async def test_a_hot_partition_does_not_starve_the_others_across_takes() -> None:
    """With fetch runs as large as a batch (the pipeline's case), B must not wait behind all
    of A's queued runs."""
    buffer: RecordBuffer[str] = RecordBuffer()
    for first in range(0, 8, 2):
        buffer.put(chunk("a", [first, first + 1]))
    buffer.put(chunk("b", [100, 101]))
    served = [c.tp for _ in range(3) for c in await buffer.take(2)]
    assert "b" in served[:2], f"partitions served, batch by batch: {served}"


async def test_take_splits_chunks_at_the_limit() -> None:
    buffer: RecordBuffer[str] = RecordBuffer()
    buffer.put(chunk("a", [100, 101, 105, 106, 110], end=111))
    buffer.put(chunk("b", [0, 1, 2]))
    first = await buffer.take(3)
    assert summary(first) == [("a", 100, 106, [100, 101, 105])]
    second = await buffer.take(100)
    ranges = {tp: [] for tp in "ab"}
    for c in [*first, *second]:
        ranges[c.tp].append((c.first, c.end))
    for tp, pieces in ranges.items():
        pieces.sort()
        assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces)), tp
    assert ranges["a"][0][0] == 100
    assert ranges["a"][-1][1] == 111
    assert ranges["b"][0][0] == 0
    assert ranges["b"][-1][1] == 3
    assert buffer.queued == 0


async def test_every_record_taken_once_in_partition_order() -> None:
    buffer: RecordBuffer[str] = RecordBuffer()
    expected: dict[str, list[int]] = {}
    for tp, size in (("a", 7), ("b", 3), ("c", 11)):
        offsets = list(range(size * 10))
        expected[tp] = offsets
        for i in range(0, len(offsets), size):
            buffer.put(chunk(tp, offsets[i : i + size]))
    buffer.close()
    seen: dict[str, list[int]] = {tp: [] for tp in expected}
    while batch := await buffer.take(4):
        assert sum(len(c.records) for c in batch) <= 4
        for c in batch:
            seen[c.tp].extend(r.offset for r in c.records)
    assert seen == expected


async def test_accounting_put_take_release() -> None:
    buffer: RecordBuffer[str] = RecordBuffer()
    buffer.put(chunk("a", [0, 1, 2]))
    buffer.put(chunk("b", [0, 1]))
    buffer.put(chunk("a", [3]))
    assert buffer.buffered == 6
    assert buffer.queued == 6
    assert buffer.held() == {"a": 4, "b": 2}
    taken = await buffer.take(10)
    assert buffer.queued == 0
    assert buffer.buffered == 6  # still in flight until acknowledged
    for c in taken:
        buffer.release(c)
    assert buffer.buffered == 0
    assert buffer.held() == {}


async def test_release_of_split_pieces() -> None:
    buffer: RecordBuffer[str] = RecordBuffer()
    buffer.put(chunk("a", list(range(10))))
    first = await buffer.take(4)
    buffer.release(first[0])
    assert buffer.held() == {"a": 6}
    assert buffer.buffered == 6
    assert buffer.queued == 6
    rest = await buffer.take(10)
    buffer.release(rest[0])
    assert buffer.held() == {}
    assert buffer.buffered == 0


async def test_drop_forgets_queued_records_of_a_partition() -> None:
    buffer: RecordBuffer[str] = RecordBuffer()
    buffer.put(chunk("a", [0, 1, 2]))
    buffer.put(chunk("a", [3, 4]))
    buffer.put(chunk("b", [0]))
    in_flight = await buffer.take(1)  # a[0] is in flight
    assert summary(in_flight) == [("a", 0, 1, [0])]
    assert buffer.drop("a") == 4
    assert buffer.queued == 1
    assert buffer.buffered == 2  # a's in-flight record and b's queued one
    assert buffer.held() == {"a": 1, "b": 1}
    assert buffer.drop("zzz") == 0
    assert summary(await buffer.take(10)) == [("b", 0, 1, [0])]
    buffer.release(in_flight[0])
    assert buffer.held() == {"b": 1}


async def test_put_of_empty_chunk_is_ignored() -> None:
    buffer: RecordBuffer[str] = RecordBuffer()
    tracker = OffsetTracker(0)
    buffer.put(Chunk("a", [], 0, 0, tracker))
    assert buffer.buffered == 0
    assert buffer.held() == {}


async def test_close_returns_what_is_queued_then_empty() -> None:
    buffer: RecordBuffer[str] = RecordBuffer()
    buffer.put(chunk("a", [0, 1]))
    buffer.close()
    assert summary(await buffer.take(10)) == [("a", 0, 2, [0, 1])]
    assert await buffer.take(10) == []
    assert await buffer.take(10) == []


async def test_close_wakes_a_waiting_take() -> None:
    buffer: RecordBuffer[str] = RecordBuffer()
    waiting = asyncio.create_task(buffer.take(10))
    await asyncio.sleep(0)  # let it block on the empty buffer
    assert not waiting.done()
    buffer.close()
    assert await waiting == []


async def test_put_wakes_a_waiting_take() -> None:
    buffer: RecordBuffer[str] = RecordBuffer()
    waiting = asyncio.create_task(buffer.take(10))
    await asyncio.sleep(0)
    assert not waiting.done()
    buffer.put(chunk("a", [5]))
    assert summary(await waiting) == [("a", 5, 6, [5])]
