"""Producing through aiokafka's batch API, partitioned exactly as ``send()`` would.

One ``send_batch`` per full batch instead of one ``send`` per record is what lets the
processor run near the client's ceiling. Points arrive as finished batches built by the
stage worker; dead letters, a few per batch, are framed here the same way
(:mod:`processor.batches`).

aiokafka sends one produce request per broker at a time, with one batch per partition, so
a producer waits a whole round trip between batches of a partition. Several producers
keep several requests in flight; partition ``p`` always goes through producer
``p % len(producers)``, so a partition's batches still reach the broker in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from processor.geo.stage import Outgoing
from processor.kafka.batches import (
    CODECS,
    BatchSpec,
    EncodedBatch,
    KeyPartitioner,
    PrebuiltBatch,
    encode_batches,
)


class Publisher:
    def __init__(
        self,
        producers: Sequence[Any],
        max_batch_bytes: int = 16384,
        compression_type: str = "none",
    ) -> None:
        """``max_batch_bytes`` and ``compression_type`` as the producers', for :meth:`spec`."""
        self._producers = list(producers)
        self._max_bytes = max_batch_bytes
        self._codec = CODECS[compression_type]
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
        return BatchSpec(partitioner.partitions, self._max_bytes, self._codec)

    async def send(self, topic: str, batches: Iterable[EncodedBatch]) -> list[asyncio.Future[Any]]:
        """Queue finished batches, in order within a partition, partitions side by side (one
        waiting for its producer does not hold up the others); the futures resolve when the
        broker acknowledged them."""
        by_partition: dict[int, list[EncodedBatch]] = {}
        for batch in batches:
            by_partition.setdefault(batch.partition, []).append(batch)
        queued = await asyncio.gather(
            *(self._queue(topic, partition, run) for partition, run in by_partition.items())
        )
        return [future for futures in queued for future in futures]

    async def _queue(
        self, topic: str, partition: int, batches: list[EncodedBatch]
    ) -> list[asyncio.Future[Any]]:
        producer = self._producers[partition % len(self._producers)]
        return [
            await producer.send_batch(PrebuiltBatch(batch), topic, partition=partition)
            for batch in batches
        ]

    async def publish(self, topic: str, messages: Iterable[Outgoing]) -> list[asyncio.Future[Any]]:
        """Queue ``messages`` in order; the futures resolve when the broker acknowledged them."""
        rows = list(messages)
        if not rows:
            return []
        keys, values, headers = zip(*rows, strict=True)
        spec, partitioner = await self.spec(topic), await self.partitioner(topic)
        return await self.send(topic, encode_batches(spec, keys, values, headers, partitioner))
