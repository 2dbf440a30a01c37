"""processor.probe: the fence around aiokafka's client, and its public fallback.

The integration tests check that a real consumer gets the ``subscribed_topics`` probe, so an
aiokafka upgrade that moves the internals fails a test instead of silently degrading.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaConnectionError

from processor.kafka.probe import broker_probe


class Client:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls = 0

    def force_metadata_update(self) -> asyncio.Future[bool]:
        self.calls += 1
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(self.answer)
        return done


class WithClient:
    def __init__(self, answer: bool) -> None:
        self._client = Client(answer)


class PublicOnly:
    """A consumer whose internals moved: only the public ``topics()`` is left."""

    def __init__(self, reachable: bool) -> None:
        self.reachable = reachable

    async def topics(self) -> set[str]:
        if not self.reachable:
            raise KafkaConnectionError("no broker")
        return {"in"}


@pytest.mark.parametrize("answer", [True, False])
async def test_the_client_metadata_update_answers(answer: bool) -> None:
    consumer = WithClient(answer)
    probe = broker_probe(consumer)
    assert probe.kind == "subscribed_topics"
    assert await probe() is answer
    assert consumer._client.calls == 1


@pytest.mark.parametrize("reachable", [True, False])
async def test_without_the_internals_the_public_call_answers(
    reachable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="processor")
    probe = broker_probe(PublicOnly(reachable))
    assert probe.kind == "all_topics"
    assert await probe() is reachable
    assert "probing the broker with topics()" in caplog.text
