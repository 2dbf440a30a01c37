"""The alert rules and the Grafana dashboard of docs/monitoring, checked by Prometheus' own
promtool: rule syntax, the rules' unit tests on synthetic series, the dashboard's PromQL. That
every metric they use is really scraped is tests/integration/test_prometheus.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.monitoring import (
    ALERT_TESTS,
    ALERTS,
    ROOT,
    binary,
    dashboard,
    dashboard_exprs,
    metric_names,
    used_metrics,
    with_variables,
)

RUNBOOK = ROOT / "docs" / "operations.md"


def promtool(*args: str | Path) -> str:
    done = subprocess.run(
        [binary("promtool"), *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    assert f"SUCCESS: {len(alerts())} rules found" in promtool("check", "rules", ALERTS)


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", ALERT_TESTS)


def test_every_alert_has_a_case_where_it_fires() -> None:
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case["alert_rule_test"]
        if check.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in alerts()}


def test_the_alerts_cover_the_operational_failures() -> None:
    used = {str(r["alert"]): metric_names(str(r["expr"])) for r in alerts()}
    assert used == {
        "ProcessorBrokerUnreachable": {"processor_broker_reachable"},
        "ProcessorGroupJoiningTooLong": {"processor_group_joining"},
        "ProcessorConsumerLagGrowing": {"processor_consumer_lag"},
        "ProcessorPartitionsPausedTooLong": {"processor_partitions_paused"},
        "ProcessorSpillNearFull": {"processor_spill_size_bytes", "processor_spill_capacity_bytes"},
        "ProcessorDeadLetterRateHigh": {
            "processor_records_dead_lettered_total",
            "processor_records_published_total",
        },
        "ProcessorMemoryNearBudget": {"processor_memory_utilization"},
    }


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in alerts():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        url = annotations["runbook_url"]
        assert url == f"docs/operations.md#{str(rule['alert']).lower()}"
        assert url.split("#")[1] in headings, url


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert isinstance(board["schemaVersion"], int)
    assert board["schemaVersion"] >= 36
    assert board["uid"]
    assert board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_the_dashboard_shows_what_an_operator_watches() -> None:
    by_title = {
        p["title"]: set().union(*(metric_names(t["expr"]) for t in p["targets"]))
        for p in dashboard()["panels"]
    }
    assert by_title["Throughput"] >= {
        "processor_records_consumed_total",
        "processor_records_published_total",
    }
    assert by_title["Consumer lag per partition"] == {"processor_consumer_lag"}
    assert by_title["Buffer against capacity"] == {
        "processor_buffer_records",
        "processor_buffer_capacity",
    }
    assert by_title["Memory against budget"] == {
        "processor_memory_used_bytes",
        "processor_memory_budget_bytes",
    }
    assert by_title["Paused partitions by reason"] == {"processor_partitions_paused"}
    assert "processor_spill_capacity_bytes" in by_title["Spill on disk"]
    assert by_title["Dead letters by code"] == {"processor_records_dead_lettered_total"}
    assert "processor_batch_duration_seconds_bucket" in by_title["Batch latency"]
    assert by_title["Broker reachable"] == {"processor_broker_reachable"}


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel query, its Grafana variables filled in, as a recording rule promtool checks."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": with_variables(expr)}
        for i, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", path)


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{code="x"}[5m]))) '
        "/ on (instance) group_left b > 1e3 and c offset 5m unless bool_d"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "bool_d"}
    assert "processor_spill_capacity_bytes" in used_metrics()
