"""The engine's ports on aiokafka: a consumer-group member's consumer, the producers behind the
outputs, and the start-up that connects them (:mod:`processor.core.ports`).

Partitions cross the boundary converted (aiokafka checks their type), and aiokafka's errors
become the engine's: a refused commit is a :class:`CommitFailedError` the engine retries, a
failed produce or acknowledgement a :class:`DeliveryFailedError` that stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from aiokafka import ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from processor.config import Settings
from processor.core.ports import PartitionListener, Staged, TopicPartition
from processor.core.stats import Stats
from processor.errors import CommitFailedError, ConfigError
from processor.kafka.broker_watch import BrokerWatch
from processor.kafka.clients import make_consumer, make_producer, make_reader
from processor.kafka.preflight import check_cluster, run_topics, unreachable
from processor.kafka.probe import broker_probe
from processor.kafka.publisher import Publisher, acknowledged, producing
from processor.kafka.state_topics import KafkaStateTopics, prepare_changelog
from processor.messages.codec import RecordLike
from processor.messages.jobs import BatchSpec, Framed

log = logging.getLogger(__name__)
#: How long the output topics' partitions may take to look up at start-up.
_TOPIC_LOOKUP_S = 15


def _ours(tps: Iterable[Any]) -> set[TopicPartition]:
    return {TopicPartition(tp.topic, tp.partition) for tp in tps}


class KafkaConsumer:
    """The engine's :class:`~processor.core.ports.Consumer` on an ``AIOKafkaConsumer``."""

    def __init__(self, consumer: Any) -> None:
        self.client = consumer

    def assignment(self) -> set[TopicPartition]:
        return _ours(self.client.assignment())

    async def committed(self, tp: TopicPartition) -> int | None:
        offset = await self.client.committed(KafkaPartition(*tp))
        return None if offset is None else int(offset)

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        found = await self.client.beginning_offsets([KafkaPartition(*tp) for tp in tps])
        return {TopicPartition(*tp): int(offset) for tp, offset in found.items()}

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        found = await self.client.end_offsets([KafkaPartition(*tp) for tp in tps])
        return {TopicPartition(*tp): int(offset) for tp, offset in found.items()}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.client.seek(KafkaPartition(*tp), offset)

    def pause(self, *tps: TopicPartition) -> None:
        self.client.pause(*(KafkaPartition(*tp) for tp in tps))

    def resume(self, *tps: TopicPartition) -> None:
        self.client.resume(*(KafkaPartition(*tp) for tp in tps))

    async def getmany(
        self, timeout_ms: int, max_records: int | None
    ) -> dict[TopicPartition, Sequence[RecordLike]]:
        fetched = await self.client.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return {TopicPartition(*tp): records for tp, records in fetched.items()}

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            await self.client.commit({KafkaPartition(*tp): o for tp, o in offsets.items()})
        except KafkaError as exc:  # CommitFailedError, IllegalStateError included
            raise CommitFailedError(repr(exc)) from exc

    def highwater(self, tp: TopicPartition) -> int | None:
        highwater = self.client.highwater(KafkaPartition(*tp))
        return None if highwater is None else int(highwater)


class KafkaOutputs:
    """The engine's :class:`~processor.core.ports.Outputs`: points to ``output_topic``, dead
    letters to ``dlq_topic``, through the batch API of :class:`Publisher`."""

    def __init__(self, publisher: Publisher, output_topic: str, dlq_topic: str) -> None:
        self.publisher = publisher
        self._output_topic = output_topic
        self._dlq_topic = dlq_topic

    async def framing(self) -> tuple[BatchSpec, BatchSpec]:
        """How to frame the points, and the dead letters."""
        publisher = self.publisher
        return await publisher.spec(self._output_topic), await publisher.spec(self._dlq_topic)

    async def send(self, staged: Staged) -> Awaitable[None]:
        """``staged`` as the stage runners return it (:class:`Framed`)."""
        framed = cast(Framed, staged)
        with producing():
            futures = await self.publisher.send(self._output_topic, framed.points)
            futures += await self.publisher.send(self._dlq_topic, framed.letters)
        return asyncio.ensure_future(acknowledged(futures))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, listener: PartitionListener) -> None:
        self._listener = listener

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self._listener.on_revoked(_ours(revoked))

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        await self._listener.on_assigned(_ours(assigned))


class KafkaConnection:
    """A started consumer and producers, and with windows on the changelog's reader (see
    :meth:`KafkaConnector.connect`)."""

    def __init__(
        self, settings: Settings, consumer: Any, producers: list[Any], reader: Any = None
    ) -> None:
        self._settings = settings
        self.consumer = KafkaConsumer(consumer)
        self.producers = producers
        publisher = Publisher(
            producers,
            settings.max_batch_bytes,
            settings.compression_type,
            settings.aiokafka_fast_paths,
        )
        self.outputs = KafkaOutputs(publisher, settings.output_topic, settings.dlq_topic)
        self._reader = reader
        self.state = None if reader is None else KafkaStateTopics(settings, publisher, reader)

    async def watch(self, stats: Stats) -> None:
        settings = self._settings
        where = {"bootstrap_servers": settings.bootstrap_servers, "group": settings.group_id}
        watch = BrokerWatch(stats, settings.unreachable_after_s, where)
        await watch.run(broker_probe(self.consumer.client, settings.aiokafka_fast_paths))

    async def close(self, within_s: float) -> None:
        """A consumer stopped while it joins its group waits for the join's answer (half the
        session timeout on Tansu, up to the rebalance timeout on Kafka): past ``within_s`` it
        is left, and the broker drops the member when its session expires."""
        readers = [] if self._reader is None else [self._reader]
        await _stop([self.consumer.client, *self.producers, *readers], within_s)


class KafkaConnector:
    """The engine's :class:`~processor.core.ports.Connector` for a Kafka cluster."""

    def __init__(self, settings: Settings, memory_budget: int) -> None:
        self._settings = settings
        self._budget = memory_budget

    async def connect(self, listener: PartitionListener) -> KafkaConnection:
        settings = self._settings
        started: list[Any] = []
        try:
            with _quiet(logging.getLogger("aiokafka")):  # our one-line errors say it better
                await check_cluster(settings, run_topics(settings))
                if settings.window is not None:
                    await prepare_changelog(settings)
                producers = [make_producer(settings) for _ in range(settings.producers)]
                consumer = make_consumer(settings, self._budget)
                reader = None if settings.window is None else make_reader(settings, self._budget)
                for client in (*producers, consumer, *([] if reader is None else [reader])):
                    started.append(client)
                    await client.start()
            connection = KafkaConnection(settings, consumer, producers, reader)
            await _check_output_topics(settings, connection.outputs.publisher)
        except BaseException as exc:
            await _stop(started, settings.shutdown_timeout_s)
            if isinstance(exc, KafkaConnectionError):  # the check passed: the cluster went away
                raise unreachable(settings, "lost while the clients started") from None
            raise
        consumer.subscribe([settings.input_topic], listener=_Listener(listener))
        return connection


async def _check_output_topics(settings: Settings, publisher: Publisher) -> None:
    for name in (name for name in run_topics(settings) if name != "input_topic"):
        topic = getattr(settings, name)
        try:
            await asyncio.wait_for(publisher.partitioner(topic), timeout=_TOPIC_LOOKUP_S)
        except (TimeoutError, KafkaError, TypeError):
            raise ConfigError(
                f"invalid setting PROCESSOR_{name.upper()} (--{name.replace('_', '-')}): "
                f"topic {topic!r} does not exist or is not reachable"
            ) from None


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _stop(clients: list[Any], within_s: float) -> None:
    stopping = [asyncio.ensure_future(client.stop()) for client in clients]
    if not stopping:
        return
    _, late = await asyncio.wait(stopping, timeout=within_s)
    for task in late:
        task.cancel()
    await asyncio.gather(*stopping, return_exceptions=True)  # failures: closing anyway
    if late:
        log.warning("kafka clients not closed within %.1f s; left to the broker", within_s)
