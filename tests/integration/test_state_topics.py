"""The window state's topics on a real broker (processor.kafka.state_topics): the changelog
made at connect, compacted with a partition for each input partition (one with fewer is a
start-up error), rows written and read back with the offsets the broker gave them, and
aggregates keyed by sensor on their topic, partitioned as the points are."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner

from processor.config import Settings
from processor.core.ports import TopicPartition
from processor.errors import ConfigError
from processor.kafka.admin import create_topics
from processor.kafka.connection import KafkaConnection, KafkaConnector
from processor.kafka.state_topics import KafkaStateTopics
from tests.integration.broker import TestBroker
from tests.integration.kafka import Topics, read_all, settings_for, topic_names

pytestmark = pytest.mark.integration
#: Not the embedded broker's default (4), so a changelog it made up on a lookup would show.
PARTITIONS = 3
WINDOWS = {"window": "60s", "aggregate_fields": "temperature"}


class _Listener:
    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        return None


@pytest.fixture
async def windowed(bootstrap: str, broker: TestBroker, tmp_path: Path) -> Callable[..., Settings]:
    """Settings with windows on, for fresh topics (the aggregates topic created too)."""
    topics = await Topics.fresh().create(bootstrap, PARTITIONS)
    aggregates = f"agg-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [aggregates], PARTITIONS)

    def make(**overrides: Any) -> Settings:
        values = {**WINDOWS, "aggregates_topic": aggregates, **overrides}
        return settings_for(broker, topics, tmp_path, shutdown_timeout_s=5.0, **values)

    return make


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[KafkaConnection]:
    connection = await KafkaConnector(settings, 1 << 30).connect(_Listener())
    try:
        yield connection
    finally:
        await connection.close(settings.shutdown_timeout_s)


def state_of(connection: KafkaConnection) -> KafkaStateTopics:
    assert connection.state is not None
    return connection.state


async def described(bootstrap: str, topic: str) -> tuple[int, dict[str, str]]:
    """A topic's partition count and its configuration as the broker reports it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (found,) = await admin.describe_topics([topic])
        (answer,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    (resource,) = answer.resources
    configs = {entry[0]: entry[1] for entry in resource[4]}
    return len(found["partitions"]), configs


async def test_the_changelog_is_made_compacted_with_a_partition_for_each_input_partition(
    bootstrap: str, windowed: Callable[..., Settings]
) -> None:
    settings = windowed()
    async with connected(windowed(window=None)) as connection:
        assert connection.state is None
    assert settings.changelog_topic not in await topic_names(bootstrap)
    async with connected(settings) as connection:
        assert connection.state is not None
    partitions, configs = await described(bootstrap, settings.changelog_topic)
    assert partitions == PARTITIONS
    assert configs["cleanup.policy"] == "compact"
    async with connected(settings):  # found as it was made: connects again
        pass


async def test_a_changelog_with_fewer_partitions_than_the_input_is_a_one_line_error(
    bootstrap: str, windowed: Callable[..., Settings]
) -> None:
    settings = windowed()
    await create_topics(bootstrap, [settings.changelog_topic], PARTITIONS - 1)
    with pytest.raises(ConfigError) as raised:
        await KafkaConnector(settings, 1 << 30).connect(_Listener())
    message = str(raised.value)
    assert "\n" not in message
    assert f"changelog topic {settings.changelog_topic!r}" in message
    assert f"has {PARTITIONS - 1} partitions, fewer than the {PARTITIONS}" in message
    assert "PROCESSOR_GROUP_ID" in message


async def test_a_changelog_that_is_not_compacted_is_a_one_line_error(
    bootstrap: str, windowed: Callable[..., Settings]
) -> None:
    """Made by hand with the broker's default policy: its rows would expire, and a restore
    after that would miss the state of every sensor not written since."""
    settings = windowed()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        policy = {"cleanup.policy": "delete"}
        made = NewTopic(settings.changelog_topic, PARTITIONS, 1, topic_configs=policy)
        await admin.create_topics([made])
    finally:
        await admin.close()
    with pytest.raises(ConfigError) as raised:
        await KafkaConnector(settings, 1 << 30).connect(_Listener())
    message = str(raised.value)
    assert "\n" not in message
    assert f"changelog topic {settings.changelog_topic!r}" in message
    assert "has cleanup.policy=delete" in message
    assert "set cleanup.policy=compact" in message
    assert (await described(bootstrap, settings.changelog_topic))[1]["cleanup.policy"] == "delete"


async def test_a_missing_aggregates_topic_is_named_and_not_created(
    bootstrap: str, windowed: Callable[..., Settings]
) -> None:
    missing = f"agg-missing-{uuid.uuid4().hex[:8]}"
    settings = windowed(aggregates_topic=missing)
    with pytest.raises(ConfigError) as raised:
        await KafkaConnector(settings, 1 << 30).connect(_Listener())
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        f"invalid setting PROCESSOR_AGGREGATES_TOPIC (--aggregates-topic): topic {missing!r} "
        "does not exist"
    )
    assert missing not in await topic_names(bootstrap)


def rows(count: int, tag: bytes) -> list[tuple[bytes, bytes]]:
    """Sensor rows of ~2 KB (a changelog row's size) and the partition's row last."""
    sensors = [(b"sensor-%d" % (i % 700), tag + b"%06d" % i + b"x" * 2_000) for i in range(count)]
    return [*sensors, (b"", tag + b"partition")]


@pytest.mark.parametrize("fast", [True, False], ids=["prebuilt", "public-batches"])
async def test_rows_are_read_back_in_order_from_where_asked_to_the_end_they_reached(
    windowed: Callable[..., Settings], fast: bool
) -> None:
    settings = windowed(aiokafka_fast_paths=fast)
    tp = TopicPartition(settings.input_topic, 1)
    first, second = rows(3_000, b"a"), rows(5, b"b")
    async with connected(settings) as connection:
        state = state_of(connection)
        assert await state.read_changelog(tp, 0) == ([], 0)
        end = await (await state.write_changelog(tp, first))
        assert end == len(first)
        assert await (await state.write_changelog(tp, second)) == end + len(second)
        assert await (await state.write_changelog(tp, [])) == end + len(second)
        everything = first + second
        assert await state.read_changelog(tp, 0) == (everything, len(everything))
        assert await state.read_changelog(tp, 1_234) == (everything[1_234:], len(everything))
        assert await state.read_changelog(tp, end) == (second, len(everything))
        assert await state.read_changelog(tp, len(everything)) == ([], len(everything))
        # A local store ahead of its changelog (the topic was recreated): the end, no rows.
        assert await state.read_changelog(tp, 10**6) == ([], len(everything))
        other = TopicPartition(settings.input_topic, 2)
        assert await state.read_changelog(other, 0) == ([], 0)


async def test_aggregates_land_keyed_by_sensor_in_the_points_partition_once_acknowledged(
    bootstrap: str, windowed: Callable[..., Settings]
) -> None:
    settings = windowed()
    sensors = [b"sensor-%d" % i for i in range(40)]
    records = [(sensor, json.dumps({"sensor_id": sensor.decode()}).encode()) for sensor in sensors]
    async with connected(settings) as connection:
        await (await state_of(connection).send_aggregates(records))
    landed = await read_all(bootstrap, settings.aggregates_topic, None)
    assert sorted((r.key, r.value) for r in landed) == sorted(records)
    every = list(range(PARTITIONS))
    points_partition = DefaultPartitioner()
    for record in landed:
        assert record.partition == points_partition(record.key, every, every)
        assert json.loads(record.value)["sensor_id"] == record.key.decode()


async def test_the_connection_closes_at_once_right_after_a_read(
    windowed: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """The changelog's reader keeps its last partition (paused): aiokafka's consumer, stopped
    just after it lost its assignment, would wait forever and be left after the timeout."""
    settings = windowed()
    connection = await KafkaConnector(settings, 1 << 30).connect(_Listener())
    await state_of(connection).read_changelog(TopicPartition(settings.input_topic, 0), 0)
    with caplog.at_level(logging.WARNING, logger="processor.kafka.connection"):
        await connection.close(settings.shutdown_timeout_s)
    assert "not closed within" not in caplog.text
