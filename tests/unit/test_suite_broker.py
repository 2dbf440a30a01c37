"""How the integration suite picks its broker (tests/integration/broker.py): the pure choice
here; the external path runs for real in tests/integration/test_suite_broker.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.integration.broker import (
    BOOTSTRAP_ENV,
    IDEMPOTENCE_ENV,
    Source,
    TestBroker,
    choose_source,
    docker_answers,
    external_idempotence,
)


def _never() -> bool:
    raise AssertionError("Docker was probed although a cluster was named")


def test_a_named_cluster_wins_without_probing_docker() -> None:
    assert choose_source({BOOTSTRAP_ENV: "k1:9092,k2:9092"}, _never) is Source.EXTERNAL


@pytest.mark.parametrize(("docker", "source"), [(True, Source.REDPANDA), (False, Source.EMBEDDED)])
def test_without_a_named_cluster_docker_decides(docker: bool, source: Source) -> None:
    assert choose_source({}, lambda: docker) is source
    assert choose_source({BOOTSTRAP_ENV: "  "}, lambda: docker) is source  # blank is unset


def test_an_external_cluster_has_the_idempotent_producer_unless_told_otherwise() -> None:
    assert external_idempotence({}) is True
    assert external_idempotence({IDEMPOTENCE_ENV: "False"}) is False
    with pytest.raises(ValueError, match=IDEMPOTENCE_ENV):
        external_idempotence({IDEMPOTENCE_ENV: "no"})


def test_a_tests_own_embedded_broker_runs_without_idempotence() -> None:
    broker = TestBroker.embedded("127.0.0.1:1")
    assert (broker.source, broker.supports_idempotence) == (Source.EMBEDDED, False)


def test_no_docker_engine_is_a_quick_false_and_one_info_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    caplog.set_level(logging.INFO, logger="tests.integration.broker")
    assert docker_answers() is False
    [line] = caplog.records
    assert line.levelno == logging.INFO
    assert "using the embedded broker" in line.getMessage()
