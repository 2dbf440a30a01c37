"""Produce batches framed next to the stage, partitioned exactly as ``send()`` would.

Filling a batch through aiokafka's ``BatchBuilder.append`` costs about a microsecond per
record in its Python wrapper, on the event loop's thread: a third of that thread's time at
full speed. So the stage's worker frames its points and dead letters (the same function for
both, :func:`encode_batches`): rows grouped by the partition ``send()`` would pick, then, on
the fast path, each partition's run built into finished v2 record batches by aiokafka's own C
builder, which the event loop queues whole (:mod:`processor.kafka._aiokafka_private`); on
the public fallback, the runs go to the producer's ``create_batch``/``append``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from aiokafka.partitioner import DefaultPartitioner

from processor.kafka._aiokafka_private import record_batch_builder, record_batch_values
from processor.messages.codec import Headers
from processor.messages.jobs import BatchSpec, EncodedBatch, ProduceBatch, RecordRun

#: The v2 record batch codec ids (Kafka's protocol) by the producer's ``compression_type``.
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
_KEY_CACHE_MAX = 200_000


class KeyPartitioner:
    """``send()``'s partition for a key among ``partitions``: murmur2, memoised because
    sensor ids repeat and aiokafka's murmur2 is pure Python."""

    def __init__(self, partitions: Sequence[int]) -> None:
        self.partitions = tuple(partitions)
        self._all = list(self.partitions)
        self._murmur2 = DefaultPartitioner()
        self._cache: dict[bytes, int] = {}

    def __call__(self, key: bytes | None) -> int:
        if key is None:  # spread keyless records as send() does
            return int(self._murmur2(None, self._all, self._all))
        partition = self._cache.get(key, -1)
        if partition < 0:
            if len(self._cache) > _KEY_CACHE_MAX:
                self._cache.clear()
            partition = self._cache[key] = int(self._murmur2(key, self._all, self._all))
        return partition


def encode_batches(
    spec: BatchSpec,
    keys: Sequence[bytes | None],
    values: Sequence[bytes],
    headers: Sequence[Headers],
    partitioner: Callable[[bytes | None], int],
) -> list[ProduceBatch]:
    """The records as produce batches, in order within each partition: finished batches of
    at most ``spec.max_bytes`` each unless a single record is larger (then it travels alone),
    or, unless ``spec.prebuilt``, one run of records per partition. ``partitioner`` picks
    each key's partition: a :class:`KeyPartitioner`, or one partition for all (a changelog's).

    Rows are grouped by partition first, so the per-record work is one call of the C
    builder in a tight loop (0.4 us per record; 1.0 through a wrapper per record).
    """
    if len(keys) != len(values) or len(values) != len(headers):
        raise ValueError("keys, values and headers must be aligned")
    rows_of: dict[int, list[int]] = {}
    for row, partition in enumerate(map(partitioner, keys)):
        rows = rows_of.get(partition)
        if rows is None:
            rows_of[partition] = [row]
        else:
            rows.append(row)
    if not spec.prebuilt:
        return [
            RecordRun(partition, [(keys[row], values[row], headers[row]) for row in rows])
            for partition, rows in rows_of.items()
        ]
    now = int(time.time() * 1000)
    done: list[ProduceBatch] = []
    for partition, rows in rows_of.items():
        builder = record_batch_builder(spec.max_bytes, spec.codec)
        count = 0
        for row in rows:
            if builder.append(count, now, keys[row], values[row], headers[row]) is None:
                done.append(EncodedBatch(partition, bytes(builder.build()), count))
                builder = record_batch_builder(spec.max_bytes, spec.codec)  # takes any record
                builder.append(0, now, keys[row], values[row], headers[row])
                count = 0
            count += 1
        done.append(EncodedBatch(partition, bytes(builder.build()), count))
    return done


def produced_values(batches: Sequence[ProduceBatch]) -> dict[int, list[bytes]]:
    """Each partition's record values in ``batches`` (of :func:`encode_batches`), in order."""
    values: dict[int, list[bytes]] = {}
    for batch in batches:
        if isinstance(batch, EncodedBatch):
            found = record_batch_values(batch.data)
        else:
            found = [value for _, value, _ in batch.rows]
        values.setdefault(batch.partition, []).extend(found)
    return values
