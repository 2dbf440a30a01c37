"""Topic administration for the demo, the tools, the tests and the benchmark; the processor
itself creates only its window state's changelog (:mod:`processor.kafka.state_topics`): a
missing topic of its settings is a start-up error, as in Kafka Streams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def create_topics(bootstrap_servers: str, topics: Iterable[str], partitions: int) -> None:
    """Create topics (existing ones are left alone)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        for topic in topics:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
                )
    finally:
        await admin.close()
    await asyncio.sleep(0)
