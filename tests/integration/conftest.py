"""A real Kafka-protocol broker for the session, chosen in :mod:`tests.integration.broker`:
the cluster named by PROCESSOR_TEST_BOOTSTRAP_SERVERS, else Redpanda in Docker, else the
embedded Tansu broker (no Docker needed)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.broker import TestBroker, suite_broker
from tests.integration.kafka import Topics


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBroker]:
    with suite_broker(os.environ, tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture(scope="session")
def bootstrap(broker: TestBroker) -> str:
    return broker.bootstrap_servers


@pytest.fixture
async def topics(bootstrap: str) -> Topics:
    return await Topics.fresh().create(bootstrap)
