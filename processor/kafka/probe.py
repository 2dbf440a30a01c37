"""The one place that touches aiokafka's private client: a cheap "does the broker answer?".

Nothing public tells whether the broker answers. A frozen broker raises nothing for
``request_timeout_ms`` (40 s by default) and ``getmany`` returns empty batches, as it does on
an idle topic; a joining member sends nothing but its JoinGroup. So the broker watch asks: a
metadata request for the subscribed topics through the consumer's own client (its
connections, its fate), which ``AIOKafkaClient.force_metadata_update`` sends and answers with
True or False. Checked when the probe is made; if aiokafka's internals changed, the public
``topics()`` (metadata of every topic: the same answer, a larger response) is the fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerProbe:
    """``await probe()``: True once the broker answered, False when the request failed."""

    kind: Literal["subscribed_topics", "all_topics"]
    ask: Callable[[], Awaitable[bool]]

    async def __call__(self) -> bool:
        return await self.ask()


def broker_probe(consumer: Any) -> BrokerProbe:
    """A probe through ``consumer``'s client; falls back to public calls if need be."""
    update = getattr(getattr(consumer, "_client", None), "force_metadata_update", None)
    if callable(update):

        async def subscribed_topics() -> bool:
            return bool(await update())

        return BrokerProbe("subscribed_topics", subscribed_topics)
    log.warning("aiokafka has no client.force_metadata_update: probing the broker with topics()")

    async def all_topics() -> bool:
        try:
            await consumer.topics()
        except KafkaError:
            return False
        return True

    return BrokerProbe("all_topics", all_topics)
