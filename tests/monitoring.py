"""The shipped monitoring files (alert rules, Grafana dashboard) and the metric names their
PromQL uses, for the tests that check them with promtool and against a real Prometheus."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "docs" / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
ALERT_TESTS = MONITORING / "alerts.test.yaml"
DASHBOARD = MONITORING / "dashboard.json"
# Grafana's variables, as a query for every instance over a window of a few scrapes.
GRAFANA_VARIABLES = {"$instance": ".*", "$__rate_interval": "30s"}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"and", "or", "unless", "inf", "nan"}
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?")


def binary(name: str) -> str:
    """Path of a Prometheus tool; the tests need the real one, never a skip."""
    found = shutil.which(name)
    assert found, f"{name} not found: install Debian's prometheus package (.ci/run does)"
    return found


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def with_variables(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label matchers, grouping labels, durations or numbers."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery windows
    expr = _LABEL_LISTS.sub("", expr)
    return {
        name
        for name, call in _IDENTIFIER.findall(expr)
        if not call and name.lower() not in _KEYWORDS
    }


def used_metrics() -> set[str]:
    """Every metric name the dashboard and the alert rules use."""
    return {name for expr in dashboard_exprs() + rule_exprs() for name in metric_names(expr)}
