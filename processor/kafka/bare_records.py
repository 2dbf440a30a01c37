"""Fetched records out of aiokafka without a Python step per record.

aiokafka hands ``getmany`` its records one at a time: a generator resumes per record, wraps
it in a ``ConsumerRecord`` (a dataclass of eleven fields, built in Python) and moves the
fetch position: 1.7 us per record, a third of the event loop's time. The records underneath,
from aiokafka's C extension, already carry all the processor reads (offset, key, value,
headers, timestamp; topic and partition are those of their chunk), and a whole record batch
unpacks into a list at C speed: 0.35-0.45 us per record.

A consumer built with ``value_deserializer=bare_value`` gets exactly that from ``getmany``:
the client's own records, taken batch by batch, with the same CRC check, control batches
skipped, the same fetch positions and the same ``max_records`` bound. Consumers built
otherwise (anyone else's, in the same process) go through aiokafka's code untouched, as do
transactional reads (``read_committed``), which need aborted batches filtered. If an aiokafka
release reshaped these internals (the dependency is pinned to a minor version), ``bare_value``
still works as a plain deserializer and records come wrapped, as before.

Compressed batches (gzip, snappy, lz4, zstd) decompress as they are unpacked, as in aiokafka;
their records carry their headers like any others. A batch that cannot be decoded (its CRC
does not match, its codec is unknown, its codec rejects the payload) raises
:class:`~processor.errors.UndecodableBatchError` naming its topic, partition and offset. The
records before it in the same fetch are handed out first and the rest of the fetch is
dropped, so the next fetch starts at the broken batch and fails on it again: it is never
skipped.

Only ``getmany`` is taken over; a bare consumer must not mix in ``getone``.
"""

from __future__ import annotations

import sys
from typing import Any

from aiokafka.consumer.fetcher import READ_COMMITTED, FetchResult, PartitionRecords
from aiokafka.record.memory_records import MemoryRecords

from processor.errors import UndecodableBatchError

#: What is left of a fetch after a broken batch: nothing, so the next fetch starts at it.
_NOTHING = MemoryRecords(b"")


def bare_value(value: bytes | None) -> bytes | None:
    """The identity "deserializer" that marks a consumer as taking bare records."""
    return value


def use_bare_records() -> None:
    """Install the bare path for consumers marked with :func:`bare_value` (idempotent)."""
    getall = FetchResult.getall
    if getattr(getall, "bare", False):
        return

    def bare_getall(self: FetchResult, max_records: int | None = None) -> list[Any]:
        records = self._partition_records
        if (
            records is None
            or records._value_deserializer is not bare_value
            or records._isolation_level == READ_COMMITTED
        ):
            wrapped: list[Any] = getall(self, max_records)
            return wrapped
        if not self.check_assignment(self._topic_partition):  # paused, sought or revoked
            return []
        taken = _take(records, sys.maxsize if max_records is None else max_records)
        self._update_position()
        if _exhausted(records):
            self._partition_records = None
        return taken

    bare_getall.bare = True  # type: ignore[attr-defined]
    FetchResult.getall = bare_getall


class _Unpacked:
    """Records of a batch not handed out yet, and the position after the batch."""

    __slots__ = ("end", "records")

    def __init__(self, records: list[Any], end: int) -> None:
        self.records = records
        self.end = end


def _take(partition: PartitionRecords, limit: int) -> list[Any]:
    """Up to ``limit`` records of a partition's fetched data, in offset order; moves its
    ``next_fetch_offset`` past what was taken (and past a batch once it is all taken)."""
    left: _Unpacked | None = getattr(partition, "_bare_unpacked", None)
    batches = partition._records
    taken: list[Any] = []
    while len(taken) < limit:
        if left is None:
            if not batches.has_next():
                break
            try:
                left = _unpack(partition, batches)
            except UndecodableBatchError:
                partition._records = _NOTHING  # the rest of this fetch: fetched again
                if taken:
                    break
                raise
            if left is None:
                continue
        room = limit - len(taken)
        if len(left.records) <= room:
            taken += left.records
            partition.next_fetch_offset = left.end
            left = None
        else:
            taken += left.records[:room]
            left.records = left.records[room:]
            partition.next_fetch_offset = taken[-1].offset + 1
    partition._bare_unpacked = left
    return taken


def _exhausted(partition: PartitionRecords) -> bool:
    return getattr(partition, "_bare_unpacked", None) is None and not partition._records.has_next()


def _unpack(partition: PartitionRecords, batches: MemoryRecords) -> _Unpacked | None:
    """The next batch's records from the fetch position on; None for a batch with nothing to
    hand out (a control batch, or one wholly before the position), whose end is passed."""
    batch = _next_batch(partition, batches)
    if partition._check_crcs and not batch.validate_crc():
        raise _undecodable(partition, batch.base_offset, "CRC mismatch (corrupt bytes)")
    if not batch.is_control_batch:
        records = _records(partition, batch)
        start = partition.next_fetch_offset
        if records and records[0].offset < start:  # the fetch began inside this batch
            records = [record for record in records if record.offset >= start]
        if records:
            return _Unpacked(records, batch.next_offset)
    partition.next_fetch_offset = max(partition.next_fetch_offset, batch.next_offset)
    return None


def _next_batch(partition: PartitionRecords, batches: MemoryRecords) -> Any:
    """The fetch's next batch, if its length and magic byte make sense."""
    try:
        return batches.next_batch()
    except Exception as exc:  # whatever the parser raises: as in _records
        raise _undecodable(partition, partition.next_fetch_offset, _cause(exc)) from exc


def _records(partition: PartitionRecords, batch: Any) -> list[Any]:
    """All records of a data batch, decompressed. Anything raised on the way (aiokafka's
    CorruptRecordException or UnsupportedCodecError, zlib.error, EOFError,
    cramjam.DecompressionError: each codec has its own) means the bytes cannot be read."""
    try:
        return list(batch)
    except Exception as exc:
        raise _undecodable(partition, batch.base_offset, _cause(exc)) from exc


def _undecodable(partition: PartitionRecords, offset: int, cause: str) -> UndecodableBatchError:
    return UndecodableBatchError(partition._tp.topic, partition._tp.partition, offset, cause)


def _cause(error: Exception) -> str:
    """``Type: detail`` (aiokafka's errors put their name in their text too: not twice)."""
    detail = str(error.args[0]) if len(error.args) == 1 else str(error)
    return f"{type(error).__name__}: {detail}"
