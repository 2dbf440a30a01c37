"""A real Prometheus (Debian's package) scraping a real `processor run`: every metric the
dashboard and the alert rules use is scraped, every dashboard query answers, and the rules
load and evaluate cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from processor.tools.embedded_broker import free_port
from processor.tools.synthetic import readings
from tests.integration.broker import TestBroker
from tests.integration.kafka import ProcessorProcess, Topics, produce, settings_for, wait_for
from tests.monitoring import ALERTS, binary, dashboard_exprs, used_metrics, with_variables

pytestmark = pytest.mark.integration


@contextmanager
def prometheus(target: str, tmp: Path) -> Iterator[str]:
    """Prometheus scraping ``target`` every second with the shipped rules; yields its URL."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "processor", "static_configs": [{"targets": [target]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    with (tmp / "prometheus.log").open("wb") as log:
        server = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address={address}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://{address}"
        finally:
            server.terminate()
            server.wait(30)


async def api(url: str, path: str, **params: str) -> Any:
    """The ``data`` of a Prometheus HTTP API answer; None while the server is not up yet."""
    query = f"{url}{path}?{urllib.parse.urlencode(params)}"

    def get() -> Any:
        with urllib.request.urlopen(query, timeout=10) as response:  # noqa: S310 - local http
            return json.load(response)

    try:
        answer = await asyncio.to_thread(get)
    except OSError:
        return None
    assert answer["status"] == "success", answer
    return answer["data"]


async def wait_until_empty(what: str, missing: Any) -> None:
    """Wait until the coroutine function ``missing`` answers an empty set; name what is left."""
    left: set[str] = {"(not asked yet)"}

    async def done() -> bool:
        nonlocal left
        left = await missing()
        return not left

    try:
        await wait_for(done, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still missing: {sorted(left)}") from None


async def test_prometheus_scrapes_every_metric_the_dashboard_and_the_alerts_use(
    broker: TestBroker, bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    count = await produce(
        bootstrap, topics.input, ((k, v) for k, v, _ in readings(2_000, invalid_ratio=0.05))
    )
    port = free_port()
    settings = settings_for(
        broker, topics, tmp_path, http_port=port, http_host="127.0.0.1", batch_max_records=200
    )
    processor = ProcessorProcess(settings, tmp_path / "processor.log")
    try:
        with prometheus(f"127.0.0.1:{port}", tmp_path) as url:

            async def unscraped() -> set[str]:
                names = await api(url, "/api/v1/label/__name__/values")
                return used_metrics() - set(names or ())

            await wait_until_empty("every metric scraped", unscraped)

            async def published() -> bool:
                query = "processor_records_published_total + on () group_left "
                query += "sum(processor_records_dead_lettered_total)"
                data = await api(url, "/api/v1/query", query=query)
                return bool(data and float(data["result"][0]["value"][1]) == count)

            await wait_for(published, what="all finished, as Prometheus scraped it")

            async def unanswered() -> set[str]:
                left = set()
                for expr in dashboard_exprs():
                    data = await api(url, "/api/v1/query", query=with_variables(expr))
                    if not (data and data["result"]):
                        left.add(expr)
                return left

            await wait_until_empty("an answer to every dashboard query", unanswered)

            async def unevaluated() -> set[str]:
                data = await api(url, "/api/v1/rules", type="alert")
                rules = [r for g in (data or {"groups": []})["groups"] for r in g["rules"]]
                return {r["name"] for r in rules if r["health"] != "ok"} | (set() if rules else {
                    "no rules loaded"})  # fmt: skip

            await wait_until_empty("every alert rule evaluated without error", unevaluated)
            data = await api(url, "/api/v1/rules", type="alert")
            states = {r["name"]: r["state"] for g in data["groups"] for r in g["rules"]}
            assert len(states) == 7
            assert states["ProcessorBrokerUnreachable"] == "inactive"
        processor.signal(signal.SIGTERM)
        assert await processor.wait() == 0
    finally:
        processor.stop_now()
