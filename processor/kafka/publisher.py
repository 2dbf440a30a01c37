"""Producing through aiokafka's batch API, partitioned exactly as ``send()`` would.

One ``send_batch`` per full batch instead of one ``send`` per record is what lets the
processor run near the client's ceiling. Points and dead letters arrive framed by the stage
worker (:mod:`processor.kafka.batches`): finished record batches on the fast path, runs of
records for ``create_batch``/``append`` on the public one.

aiokafka sends one produce request per broker at a time, with one batch per partition, so
a producer waits a whole round trip between batches of a partition. Several producers
keep several requests in flight; partition ``p`` always goes through producer
``p % len(producers)``, so a partition's batches still reach the broker in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from aiokafka.errors import KafkaError

from processor.errors import DeliveryFailedError
from processor.kafka._aiokafka_private import PrebuiltBatch, fast_paths
from processor.kafka.batches import CODECS, KeyPartitioner, encode_batches
from processor.messages.jobs import BatchSpec, EncodedBatch, Outgoing, ProduceBatch

#: A batch handed to its producer: the future of its acknowledgement (resolving to aiokafka's
#: ``RecordMetadata``, whose ``offset`` is the batch's base offset) and its record count.
Queued = tuple[asyncio.Future[Any], int]


class Publisher:
    """Sends framed batches to a topic's partitions through ``producers`` (partition ``p`` by
    producer ``p % len(producers)``), in order within a partition; each send returns futures
    that resolve when the broker acknowledged the batch, or fail after the client's retries."""

    def __init__(
        self,
        producers: Sequence[Any],
        max_batch_bytes: int = 16384,
        compression_type: str = "none",
        fast: bool = True,
    ) -> None:
        """``max_batch_bytes`` and ``compression_type`` as the producers', for :meth:`spec`;
        ``fast``: prebuilt batches, if aiokafka's internals pass their check."""
        self._producers = list(producers)
        self._max_bytes = max_batch_bytes
        self._codec = CODECS[compression_type]
        self._prebuilt = fast_paths(fast).produce
        self._partitioners: dict[str, KeyPartitioner] = {}

    async def partitioner(self, topic: str) -> KeyPartitioner:
        """The topic's partitioner (its partitions are looked up once)."""
        known = self._partitioners.get(topic)
        if known is None:
            known = KeyPartitioner(sorted(await self._producers[0].partitions_for(topic)))
            self._partitioners[topic] = known
        return known

    async def spec(self, topic: str) -> BatchSpec:
        """How to frame batches for ``topic`` elsewhere (see :meth:`send`)."""
        partitioner = await self.partitioner(topic)
        return BatchSpec(partitioner.partitions, self._max_bytes, self._codec, self._prebuilt)

    async def send(self, topic: str, batches: Iterable[ProduceBatch]) -> list[asyncio.Future[Any]]:
        """Queue framed batches, in order within a partition, partitions side by side (one
        waiting for its producer does not hold up the others); the futures resolve when the
        broker acknowledged them."""
        by_partition: dict[int, list[ProduceBatch]] = {}
        for batch in batches:
            by_partition.setdefault(batch.partition, []).append(batch)
        queued = await asyncio.gather(
            *(self.queue(topic, partition, run) for partition, run in by_partition.items())
        )
        return [future for batches in queued for future, _ in batches]

    async def queue(
        self, topic: str, partition: int, batches: Iterable[ProduceBatch]
    ) -> list[Queued]:
        """Queue framed batches of one partition, in order, through its producer; the batches
        as the producer took them (a run of records may have become several)."""
        producer = self._producers[partition % len(self._producers)]
        queued: list[Queued] = []
        for batch in batches:
            if isinstance(batch, EncodedBatch):
                prebuilt = PrebuiltBatch(batch.data, batch.records)
                future = await producer.send_batch(prebuilt, topic, partition=partition)
                queued.append((future, batch.records))
            else:
                queued += await _append(producer, topic, partition, batch.rows)
        return queued

    async def publish(self, topic: str, messages: Iterable[Outgoing]) -> list[asyncio.Future[Any]]:
        """Frame ``messages`` here and queue them in order (the demo's readings); the futures
        resolve when the broker acknowledged them."""
        rows = list(messages)
        if not rows:
            return []
        keys, values, headers = zip(*rows, strict=True)
        spec, partitioner = await self.spec(topic), await self.partitioner(topic)
        return await self.send(topic, encode_batches(spec, keys, values, headers, partitioner))


async def _append(producer: Any, topic: str, partition: int, rows: list[Outgoing]) -> list[Queued]:
    """The public batch API: ``create_batch``, ``append`` until full, ``send_batch``."""
    queued: list[Queued] = []
    batch = producer.create_batch()
    for key, value, headers in rows:
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            queued.append(await _send(producer, batch, topic, partition))
            batch = producer.create_batch()  # an empty batch takes any record
            batch.append(key=key, value=value, timestamp=None, headers=headers)
    queued.append(await _send(producer, batch, topic, partition))
    return queued


async def _send(producer: Any, batch: Any, topic: str, partition: int) -> Queued:
    records = int(batch.record_count())
    return await producer.send_batch(batch, topic, partition=partition), records


@contextlib.contextmanager
def producing() -> Iterator[None]:
    """Queueing batches: a producer's failure is a :class:`DeliveryFailedError`."""
    try:
        yield
    except KafkaError as exc:
        raise DeliveryFailedError(f"cannot produce: {exc!r}") from exc


async def acknowledged(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Once the broker acknowledged every queued batch; a failure is a
    :class:`DeliveryFailedError`."""
    try:
        await asyncio.gather(*futures)
    except KafkaError as exc:
        raise DeliveryFailedError(f"broker did not acknowledge a batch: {exc!r}") from exc
