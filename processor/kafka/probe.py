"""A cheap "does the broker answer?", through the consumer's own client where it can.

Nothing public tells whether the broker answers. A frozen broker raises nothing for
``request_timeout_ms`` (40 s by default) and ``getmany`` returns empty batches, as it does on
an idle topic; a joining member sends nothing but its JoinGroup. So the broker watch asks: a
metadata request for the subscribed topics through the consumer's own client (its
connections, its fate), which ``AIOKafkaClient.force_metadata_update`` sends and answers with
True or False: a private access, fenced in :mod:`processor.kafka._aiokafka_private`. Without
that fast path (switched off, or aiokafka's internals changed), the public ``topics()``
(metadata of every topic: the same answer, a larger response) asks instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.errors import KafkaError

from processor.kafka._aiokafka_private import fast_paths, metadata_update

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerProbe:
    """``await probe()``: True once the broker answered, False when the request failed."""

    kind: Literal["subscribed_topics", "all_topics"]
    ask: Callable[[], Awaitable[bool]]

    async def __call__(self) -> bool:
        return await self.ask()


def broker_probe(consumer: Any, fast: bool = True) -> BrokerProbe:
    """A probe through ``consumer``'s client (``fast``, and if that path passed its check);
    else through public calls."""
    update = metadata_update(consumer) if fast_paths(fast).probe else None
    if update is not None:
        ask = update

        async def subscribed_topics() -> bool:
            return bool(await ask())

        return BrokerProbe("subscribed_topics", subscribed_topics)
    if fast:
        log.warning(
            "aiokafka has no client.force_metadata_update: probing the broker with topics()"
        )

    async def all_topics() -> bool:
        try:
            await consumer.topics()
        except KafkaError:
            return False
        return True

    return BrokerProbe("all_topics", all_topics)
