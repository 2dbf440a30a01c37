"""A real Kafka-protocol broker for the session: the cluster named by
PROCESSOR_TEST_BOOTSTRAP_SERVERS, else the embedded Tansu broker (no Docker needed)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from processor.tools.embedded_broker import EmbeddedBroker
from tests.integration.kafka import Topics


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("PROCESSOR_TEST_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield broker.bootstrap_servers


@pytest.fixture
async def topics(bootstrap: str) -> Topics:
    return await Topics.fresh().create(bootstrap)
