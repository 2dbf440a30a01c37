"""The window state's topics on Kafka (:class:`~processor.core.ports.StateTopics`): the closed
windows' aggregates, and the changelog of each input partition's state (docs/state.md).

The changelog is the processor's own topic, named after the group
(``Settings.changelog_topic``): created at start-up when missing, compacted, with a partition
for each input partition. One with fewer partitions than the input cannot hold every input
partition's state, and one not compacted (``cleanup.policy`` other than ``compact``) would
let the broker delete rows a restore needs: both are start-up errors. Aggregates go out as
the points do, partitioned by sensor through the same producers; a changelog write goes to
its input partition's changelog partition, framed into batches as the points are, and the
acknowledgement of its last batch (base offset + records) is the offset it reached.

The changelog is read by a consumer outside the group, assigned one partition at a time. The
end of a read is the high watermark of its first fetch: the embedded broker answers
``ListOffsets(latest)`` wrongly (docs/design.md), its fetches rightly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from aiokafka import TopicPartition as KafkaPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from processor.config import Settings, env_name
from processor.core.ports import Row, TopicPartition
from processor.errors import ConfigError, StateError
from processor.kafka.batches import encode_batches
from processor.kafka.clients import make_admin
from processor.kafka.publisher import Publisher, Queued, acknowledged, producing
from processor.messages.codec import Headers

#: The changelog's topic configuration: only each key's latest row matters to a restore.
CHANGELOG_CONFIGS = {"cleanup.policy": "compact"}
#: How long one wait for a fetch may be while reading the changelog.
_POLL_MS = 25
_NO_HEADERS: Headers = []


async def prepare_changelog(settings: Settings) -> None:
    """Create the changelog topic if it is missing, with as many partitions (and replicas)
    as the input topic; raise a one-line ConfigError for one with fewer partitions or not
    compacted, or one the cluster does not let the processor create."""
    admin = make_admin(settings)
    await admin.start()
    try:
        inputs = await _partitions(admin, settings.input_topic)
        wanted, replicas = len(inputs), len(inputs[0]["replicas"])
        topic = settings.changelog_topic
        new = NewTopic(topic, wanted, replicas, topic_configs=CHANGELOG_CONFIGS)
        _, code, *message = (await admin.create_topics([new])).topic_errors[0]
        where = f"the window state's changelog topic {topic!r} (named after {env_name('group_id')})"
        if code == TopicAlreadyExistsError.errno:  # made earlier, or by another member now
            have = len(await _partitions(admin, topic))
            if have < wanted:
                raise ConfigError(
                    f"{where} has {have} partitions, fewer than the {wanted} of input topic "
                    f"{settings.input_topic!r}: add partitions to it, or use another group"
                )
            policy = await _cleanup_policy(admin, topic)
            if policy != CHANGELOG_CONFIGS["cleanup.policy"]:
                raise ConfigError(
                    f"{where} has cleanup.policy={policy}: the broker would delete rows a "
                    "restore needs; set cleanup.policy=compact on it, or use another group"
                )
        elif code:
            reason = _reason(code, message[0] if message else None)
            raise ConfigError(
                f"cannot create {where} ({reason}): create it with {wanted} partitions and "
                f"cleanup.policy=compact"
            )
    finally:
        await admin.close()


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[dict[str, Any]]:
    """An existing topic's partitions. Only for a topic known to exist: the lookup lets the
    broker create a missing one, as its defaults say."""
    (found,) = await admin.describe_topics([topic])
    if found["error_code"]:
        name = for_code(found["error_code"]).__name__
        raise ConfigError(f"topic {topic!r} cannot be used: {name}")
    partitions: list[dict[str, Any]] = found["partitions"]
    return partitions


async def _cleanup_policy(admin: AIOKafkaAdminClient, topic: str) -> str:
    """An existing topic's ``cleanup.policy`` as the broker reports it."""
    (answer,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    (resource,) = answer.resources
    code, message, configs = resource[0], resource[1], resource[4]
    if code:
        reason = _reason(code, message)
        raise ConfigError(
            f"cannot read the configuration of topic {topic!r} ({reason}): the processor "
            "checks that its changelog is compacted; allow it DescribeConfigs on the topic"
        )
    found = {entry[0]: entry[1] for entry in configs}
    return str(found.get("cleanup.policy", "delete"))  # Kafka's default when unset


def _reason(code: int, message: object) -> str:
    """A broker's error as ``Name: message`` (``Name`` alone without a message)."""
    return ": ".join([for_code(code).__name__, *([str(message)] if message else [])])


class KafkaStateTopics:
    """The engine's :class:`~processor.core.ports.StateTopics`. Writes go through the
    outputs' ``publisher``; reads through ``reader``, a started consumer outside the group
    (:func:`processor.kafka.clients.make_reader`), one read at a time."""

    def __init__(self, settings: Settings, publisher: Publisher, reader: Any) -> None:
        self._aggregates = settings.aggregates_topic
        self._changelog = settings.changelog_topic
        self._stall_s = settings.request_timeout_ms / 1000
        self._publisher = publisher
        self._reader = reader
        self._reading = asyncio.Lock()
        #: The end of each changelog partition as last written (once acknowledged) or read.
        self._ends: dict[int, asyncio.Future[int]] = {}

    async def send_aggregates(self, records: Sequence[tuple[bytes, bytes]]) -> Awaitable[None]:
        with producing():
            futures = await self._publisher.publish(
                self._aggregates, [(key, value, _NO_HEADERS) for key, value in records]
            )
        return asyncio.ensure_future(acknowledged(futures))

    async def write_changelog(self, tp: TopicPartition, rows: Sequence[Row]) -> Awaitable[int]:
        """No rows: nothing is sent, and the awaitable is the partition's last write's (or,
        after none, resolves to the end of its last read); raises ValueError for a partition
        neither written nor read since the connection was made."""
        partition = tp.partition
        if rows:
            keys = [key for key, _ in rows]
            values = [value for _, value in rows]
            with producing():
                spec = await self._publisher.spec(self._changelog)
                batches = encode_batches(
                    spec, keys, values, [_NO_HEADERS] * len(rows), lambda _: partition
                )
                queued = await self._publisher.queue(self._changelog, partition, batches)
            self._ends[partition] = asyncio.ensure_future(_reached(queued))
        end = self._ends.get(partition)
        if end is None:
            raise ValueError(f"no rows, and {self._named(partition)} was neither written nor read")
        return end

    async def read_changelog(self, tp: TopicPartition, since: int) -> tuple[list[Row], int]:
        """``since`` past the end (a local store ahead of a recreated changelog): no rows, and
        the end, for the caller to see; ``since`` before the first offset kept: from there.
        Raises :class:`StateError` when the broker refuses the read or stops answering for
        the request timeout."""
        part = KafkaPartition(self._changelog, tp.partition)
        async with self._reading:
            self._reader.assign([part])  # in place of the last read's partition
            try:
                self._reader.seek(part, since)
                rows, end = await self._read(part, since)
            except KafkaError as exc:
                raise StateError(f"cannot read {self._named(part.partition)}: {exc!r}") from exc
            finally:
                # Paused, not unassigned: aiokafka 0.14's fetcher swallows a cancellation
                # that comes while it drops an assignment, so a stop() right after an
                # unassignment would wait forever.
                self._reader.pause(part)
        done = asyncio.get_running_loop().create_future()
        done.set_result(end)
        self._ends[tp.partition] = done
        return rows, end

    def _named(self, partition: int) -> str:
        return f"the window state's changelog topic {self._changelog!r} partition {partition}"

    async def _read(self, part: KafkaPartition, since: int) -> tuple[list[Row], int]:
        reader = self._reader
        clock = asyncio.get_running_loop().time
        stalled_at = clock() + self._stall_s
        rows: list[Row] = []
        end: int | None = None
        while True:
            fetched = (await reader.getmany(part, timeout_ms=_POLL_MS)).get(part, [])
            if end is None:
                end = reader.highwater(part)  # set by the first fetch answered
                if end is not None and end < since:  # out of range: reset to the beginning
                    return [], end
            if end is not None:
                rows += [(r.key, r.value) for r in fetched if since <= r.offset < end]
                if await reader.position(part) >= end:
                    return rows, end
            if fetched:
                stalled_at = clock() + self._stall_s
            elif clock() > stalled_at:
                raise StateError(
                    f"cannot read {self._named(part.partition)}: no records within "
                    f"{env_name('request_timeout_ms')} {self._stall_s * 1000:.0f}"
                )


async def _reached(queued: list[Queued]) -> int:
    """The offset after a write's last record, once all of it is acknowledged."""
    await acknowledged([future for future, _ in queued])
    last, records = queued[-1]
    return int(last.result().offset) + records
