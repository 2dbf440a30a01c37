"""The suite against an external cluster (PROCESSOR_TEST_BOOTSTRAP_SERVERS), for real: a
second embedded broker plays the cluster, and a pytest run of one end-to-end test is pointed
at it. The choice between the three sources is unit-tested in tests/unit/test_suite_broker.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from processor.tools.embedded_broker import EmbeddedBroker
from tests.integration.broker import BOOTSTRAP_ENV, IDEMPOTENCE_ENV
from tests.integration.kafka import read_all, topic_names

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ONE_TEST = "tests/integration/test_end_to_end.py::test_outputs_of_a_partition_keep_input_order"


def _pytest_against(bootstrap: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_TEST_")}
    environment.update({BOOTSTRAP_ENV: bootstrap, **env})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            ONE_TEST,
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_the_suite_runs_against_the_cluster_it_is_given(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as cluster:
        run = await asyncio.to_thread(
            _pytest_against, cluster.bootstrap_servers, tmp_path, **{IDEMPOTENCE_ENV: "false"}
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert "1 passed" in run.stdout
        # The test's topics and its outputs are on this broker: it ran here, not elsewhere.
        [output] = [
            name for name in await topic_names(cluster.bootstrap_servers) if name.startswith("out-")
        ]
        assert len(await read_all(cluster.bootstrap_servers, output, None)) == 3_000


async def test_against_an_external_cluster_the_processor_asks_for_the_idempotent_producer(
    tmp_path: Path,
) -> None:
    # Production's default reaches the broker: this one cannot serve aiokafka's
    # InitProducerId, so the run fails at the processor's start-up check, naming the setting.
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as cluster:
        run = await asyncio.to_thread(_pytest_against, cluster.bootstrap_servers, tmp_path)
    assert run.returncode == 1, run.stdout[-4000:]
    assert "1 failed" in run.stdout
    assert "refused the idempotent producer (InitProducerId" in run.stdout
