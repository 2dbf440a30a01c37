"""Every use of aiokafka's internals, in one place: checked at start-up, with a public fallback.

Three fast paths reach past aiokafka's public API, each because its public path costs a
Python step per record on the event loop's thread:

- **fetch**: ``FetchResult.getall`` is replaced, process-wide, by one that hands a consumer
  built with ``value_deserializer=bare_value`` the client's own records a whole record batch
  at a time (0.35-0.45 us per record instead of 1.7 for a generator step and a
  ``ConsumerRecord`` each); same CRC check, control batches skipped, same positions and
  ``max_records`` bound. Other consumers, and ``read_committed`` reads, go through aiokafka's
  code untouched. Public fallback: ``getmany``'s own ``ConsumerRecord`` objects.
- **produce**: the stage worker frames finished v2 record batches with aiokafka's C builder
  (``DefaultRecordBatchBuilder``), and ``send_batch`` takes each as a :class:`PrebuiltBatch`,
  which imitates ``BatchBuilder``'s private ``_build``/``_set_producer_state``; the state
  reads points back from such batches with the C reader (``DefaultRecordBatch``) when it
  revises them. Public fallback: ``create_batch()``, ``append()`` per record,
  ``send_batch()``.
- **probe**: ``client.force_metadata_update()`` through the consumer's private client asks
  for the subscribed topics only. Public fallback: ``topics()`` (every topic's metadata).

:func:`fast_paths` checks each once per process, by behaviour where it can (the bare records
against aiokafka's own ``getall``; a prebuilt batch, producer state set, byte for byte against
``BatchBuilder``), logs the installed version against :data:`VERIFIED_WITH` and which paths are
on, and names what it did not find. ``PROCESSOR_AIOKAFKA_FAST_PATHS=false`` turns all three off.

A bare consumer must not mix in ``getone``. A batch the bare path cannot decode (CRC, codec,
corrupt payload) raises :class:`~processor.errors.UndecodableBatchError` naming its topic,
partition and offset, after handing out the records before it; the rest of the fetch is
dropped so that the next fetch starts at the broken batch and fails on it again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import TopicPartition

from processor.errors import UndecodableBatchError

try:  # internals: if they moved, the checks fail and name what is missing
    from aiokafka.consumer.fetcher import READ_COMMITTED, FetchResult, PartitionRecords
    from aiokafka.consumer.subscription_state import SubscriptionState
    from aiokafka.producer.message_accumulator import BatchBuilder, MessageBatch
    from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
    from aiokafka.record.memory_records import MemoryRecords
    from aiokafka.record.util import calc_crc32c
except ImportError as exc:  # pragma: no cover - a reshaped aiokafka
    _MOVED: str | None = f"{type(exc).__name__}: {exc}"
else:
    _MOVED = None

log = logging.getLogger(__name__)

#: The aiokafka releases whose internals these fast paths were checked against.
VERIFIED_WITH = "0.14.x"
# v2 batch header: crc (uint32) at 17 covers everything from the attributes at 21 on;
# producer id (int64), epoch (int16) and base sequence (int32) start at 43.
_CRC_AT, _CRC_FROM, _PRODUCER_AT = 17, 21, 43


@dataclass(frozen=True, slots=True)
class FastPaths:
    """Which fast paths are on; ``missing`` names what the check did not find."""

    fetch: bool
    produce: bool
    probe: bool
    missing: tuple[str, ...] = ()


@functools.cache
def fast_paths(wanted: bool = True) -> FastPaths:
    """The fast paths that passed their check (none unless ``wanted``); logged once."""
    installed = version("aiokafka")
    if not wanted:
        log.info(
            "aiokafka %s: fast paths off (PROCESSOR_AIOKAFKA_FAST_PATHS=false): public getmany, "
            "create_batch/send_batch and topics()",
            installed,
        )
        return FastPaths(fetch=False, produce=False, probe=False)
    checked = {"fetch": _check_fetch(), "produce": _check_produce(), "probe": _check_probe()}
    on = [name for name, problem in checked.items() if problem is None]
    missing = tuple(problem for problem in checked.values() if problem is not None)
    if missing:
        log.warning(
            "aiokafka %s (fast paths verified with %s): not found: %s; public API instead; "
            "fast paths on: %s",
            installed,
            VERIFIED_WITH,
            "; ".join(missing),
            ", ".join(on) or "none",
        )
    else:
        log.info(
            "aiokafka %s (verified with %s): fast paths on: %s",
            installed,
            VERIFIED_WITH,
            ", ".join(on),
        )
    return FastPaths("fetch" in on, "produce" in on, "probe" in on, missing)


def _cause(error: Exception) -> str:
    """``Type: detail`` (aiokafka's errors put their name in their text too: not twice)."""
    detail = str(error.args[0]) if len(error.args) == 1 else str(error)
    return f"{type(error).__name__}: {detail}"


def _names_used(cls: type) -> set[str]:
    """The attribute names a class's own functions use."""
    names: set[str] = set()
    for member in vars(cls).values():
        code = getattr(member, "__code__", None)
        if code is not None:
            names.update(code.co_names)
    return names


# fetch ------------------------------------------------------------------------------------


def bare_value(value: bytes | None) -> bytes | None:
    """The identity "deserializer" that marks a consumer as taking bare records."""
    return value


def use_bare_records() -> None:
    """Install the bare path for consumers marked with :func:`bare_value` (idempotent)."""
    if not getattr(FetchResult.getall, "bare", False):
        FetchResult.getall = _bare(FetchResult.getall)


def _bare(getall: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """``FetchResult.getall`` that hands bare consumers their records batch by batch."""

    def bare_getall(self: Any, max_records: int | None = None) -> list[Any]:
        records = self._partition_records
        if (
            records is None
            or records._value_deserializer is not bare_value
            or records._isolation_level == READ_COMMITTED
        ):
            return getall(self, max_records)
        if not self.check_assignment(self._topic_partition):  # paused, sought or revoked
            return []
        taken = _take(records, sys.maxsize if max_records is None else max_records)
        self._update_position()
        if _exhausted(records):
            self._partition_records = None
        return taken

    bare_getall.bare = True  # type: ignore[attr-defined]
    return bare_getall


class _Unpacked:
    """Records of a batch not handed out yet, and the position after the batch."""

    __slots__ = ("end", "records")

    def __init__(self, records: list[Any], end: int) -> None:
        self.records = records
        self.end = end


def _take(partition: Any, limit: int) -> list[Any]:
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
                partition._records = MemoryRecords(b"")  # the rest of this fetch: fetched again
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


def _exhausted(partition: Any) -> bool:
    return getattr(partition, "_bare_unpacked", None) is None and not partition._records.has_next()


def _unpack(partition: Any, batches: Any) -> _Unpacked | None:
    """The next batch's records from the fetch position on; None for a batch with nothing to
    hand out (a control batch, or one wholly before the position), whose end is passed."""
    try:
        batch = batches.next_batch()  # if its length and magic byte make sense
    except Exception as exc:  # whatever the parser raises: as below
        raise _undecodable(partition, partition.next_fetch_offset, _cause(exc)) from exc
    if partition._check_crcs and not batch.validate_crc():
        raise _undecodable(partition, batch.base_offset, "CRC mismatch (corrupt bytes)")
    if not batch.is_control_batch:
        try:  # each codec fails its own way (zlib.error, EOFError, cramjam's, aiokafka's)
            records = list(batch)
        except Exception as exc:
            raise _undecodable(partition, batch.base_offset, _cause(exc)) from exc
        start = partition.next_fetch_offset
        if records and records[0].offset < start:  # the fetch began inside this batch
            records = [record for record in records if record.offset >= start]
        if records:
            return _Unpacked(records, batch.next_offset)
    partition.next_fetch_offset = max(partition.next_fetch_offset, batch.next_offset)
    return None


def _undecodable(partition: Any, offset: int, cause: str) -> UndecodableBatchError:
    return UndecodableBatchError(partition._tp.topic, partition._tp.partition, offset, cause)


def _check_fetch() -> str | None:
    """Bare records of a small fetch, taken in uneven steps, are aiokafka's own, and so is
    the consumer's position after each step."""
    if _MOVED is not None:
        return f"FetchResult.getall's internals ({_MOVED})"
    data = b"".join(_sample_batch(first, count) for first, count in ((0, 3), (3, 4)))
    try:
        ours = _in_a_loop(lambda: _drain(_bare(FetchResult.getall), data, bare_value))
        theirs = _in_a_loop(lambda: _drain(FetchResult.getall, data, None))
    except Exception as exc:  # any reshaping of the internals
        return f"FetchResult.getall's internals ({_cause(exc)})"
    if not ours or ours != theirs:
        return "FetchResult.getall's internals (bare records differ from aiokafka's)"
    return None


def _in_a_loop(call: Callable[[], list[Any]]) -> list[Any]:
    """``call()`` with an event loop running (the subscription state makes futures)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def run() -> list[Any]:
            return call()

        return asyncio.run(run())
    return call()


def _sample_batch(first: int, count: int) -> bytes:
    builder = record_batch_builder(1 << 16, 0)
    for offset in range(first, first + count):
        builder.append(offset - first, 1_700_000_000_000, b"k", b"%d" % offset, [("h", b"v")])
    return first.to_bytes(8, "big") + bytes(builder.build())[8:]  # base offset: not in the CRC


def _drain(getall: Callable[..., list[Any]], data: bytes, deserializer: Any) -> list[Any]:
    """(offset, key, value, headers) of what successive ``getall(2)`` calls return, and the
    consumer's position after each (calls that return nothing left out)."""
    tp = TopicPartition("fast-path-check", 0)
    subscriptions = SubscriptionState()
    quiet = logging.getLogger("aiokafka.consumer.subscription_state")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # not a line about a made-up topic in the operator's log
    try:
        subscriptions.assign_from_user({tp})
    finally:
        quiet.setLevel(level)
    assignment = subscriptions.subscription.assignment
    assignment.state_value(tp).seek(1)
    records = PartitionRecords(tp, MemoryRecords(data), [], 1, None, deserializer, True, 0)
    result = FetchResult(tp, assignment=assignment, partition_records=records, backoff=0)
    steps: list[tuple[list[Any], int]] = []
    while result.has_more() and len(steps) < 10:
        got = getall(result, 2)
        if got:
            steps.append(
                (
                    [(r.offset, r.key, r.value, list(r.headers)) for r in got],
                    assignment.state_value(tp).position,
                )
            )
    return steps


# produce ----------------------------------------------------------------------------------


def record_batch_builder(max_bytes: int, codec: int) -> Any:
    """aiokafka's C builder with ``BatchBuilder``'s arguments: magic 2, not transactional,
    no producer state yet (base sequence 0), as ``send_batch`` would send it."""
    return DefaultRecordBatchBuilder(2, codec, 0, -1, -1, 0, max_bytes)


def record_batch_values(data: bytes) -> list[bytes]:
    """The record values of a v2 record batch :func:`record_batch_builder` built, in order
    (aiokafka's C reader: ~0.15 us a record)."""
    return [record.value for record in DefaultRecordBatch(data)]


class PrebuiltBatch:
    """A finished record batch in the shape ``AIOKafkaProducer.send_batch`` takes.

    aiokafka's ``MessageBatch`` asks its builder for ``record_count``, ``closed``/``close``,
    ``_build`` (the bytes) and, with an idempotent producer, ``_set_producer_state``, which
    here patches the header fields and the CRC as the C builder would have written them.
    The batch is closed from the start: it is final, so it needs no linger.
    """

    def __init__(self, data: bytes, records: int) -> None:
        self._data = data
        self._records = records

    def record_count(self) -> int:
        return self._records

    def size(self) -> int:
        return len(self._data)

    def closed(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def _build(self) -> bytes:
        return self._data

    def _set_producer_state(
        self, producer_id: int, producer_epoch: int, base_sequence: int
    ) -> None:
        data = bytearray(self._data)
        struct.pack_into(">qhi", data, _PRODUCER_AT, producer_id, producer_epoch, base_sequence)
        struct.pack_into(">I", data, _CRC_AT, calc_crc32c(memoryview(data)[_CRC_FROM:]))
        self._data = bytes(data)


def _check_produce() -> str | None:
    """``MessageBatch`` still drives its builder through ``_build``/``_set_producer_state``,
    and a prebuilt batch with producer state set is byte for byte ``BatchBuilder``'s."""
    if _MOVED is not None:
        return f"the record batch builder's internals ({_MOVED})"
    try:
        used = _names_used(MessageBatch)
        for name in ("_build", "_set_producer_state", "record_count"):
            if name not in used:
                return f"MessageBatch's use of its builder's {name}"
        reference = BatchBuilder(1 << 16, 0)
        ours = record_batch_builder(1 << 16, 0)
        for offset in range(3):
            key, value, headers = b"k%d" % offset, b"v" * offset, [("h", b"%d" % offset)]
            reference.append(timestamp=1_700_000_000_000, key=key, value=value, headers=headers)
            ours.append(offset, 1_700_000_000_000, key, value, headers)
        prebuilt = PrebuiltBatch(bytes(ours.build()), 3)
        for batch in (reference, prebuilt):
            batch._set_producer_state(4_242, 7, 1_000)
        same = prebuilt._build() == bytes(reference._build())
        read = record_batch_values(prebuilt._build()) == [b"v" * offset for offset in range(3)]
    except Exception as exc:  # any reshaping of the internals
        return f"the record batch builder's internals ({_cause(exc)})"
    if not same:
        return "the record batch builder's internals (prebuilt bytes differ)"
    return None if read else "the record batch reader's internals (values differ)"


# probe ------------------------------------------------------------------------------------


def _check_probe() -> str | None:
    """The consumer keeps a ``_client`` whose class answers ``force_metadata_update``."""
    if "_client" not in _names_used(AIOKafkaConsumer) or not callable(
        getattr(AIOKafkaClient, "force_metadata_update", None)
    ):
        return "the consumer's client.force_metadata_update"
    return None


def metadata_update(consumer: Any) -> Callable[[], Awaitable[bool]] | None:
    """``consumer``'s own metadata request for its subscribed topics, if it has one."""
    update = getattr(getattr(consumer, "_client", None), "force_metadata_update", None)
    return update if callable(update) else None
