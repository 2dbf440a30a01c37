"""Producing through aiokafka's batch API, partitioned exactly as ``send()`` would.

One ``send_batch`` per full batch instead of one ``send`` per record is what lets the
processor run near the client's ceiling. Keys go to partitions by the default murmur2
partitioner, memoised per key because sensor ids repeat and murmur2 is pure Python.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from processor.stage import Outgoing

_KEY_CACHE_MAX = 200_000


class Publisher:
    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._keys: dict[str, dict[bytes, int]] = {}

    async def partitions(self, topic: str) -> list[int]:
        known = self._partitions.get(topic)
        if known is None:
            known = sorted(await self._producer.partitions_for(topic))
            self._partitions[topic] = known
            self._keys[topic] = {}
        return known

    async def publish(self, topic: str, messages: Iterable[Outgoing]) -> list[asyncio.Future[Any]]:
        """Queue ``messages`` in order; the futures resolve when the broker acknowledged them."""
        partitions = await self.partitions(topic)
        cache = self._keys[topic]
        if len(cache) > _KEY_CACHE_MAX:
            cache.clear()
        batches: dict[int, Any] = {}
        futures: list[asyncio.Future[Any]] = []
        for key, value, headers in messages:
            if key is None:
                partition = self._partitioner(None, partitions, partitions)
            else:
                partition = cache.get(key, -1)
                if partition < 0:
                    partition = cache[key] = self._partitioner(key, partitions, partitions)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                futures.append(await self._producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = self._producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise ValueError(f"a record of {len(value)} bytes exceeds the batch size")
        for partition, batch in batches.items():
            futures.append(await self._producer.send_batch(batch, topic, partition=partition))
        return futures
