"""The benchmark harness keeps working: every scenario once on a tiny input. No speed asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import SCENARIOS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_every_scenario_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [sys.executable, "-m", "bench", "--records", "3000", "--repeat", "1"]
    command += ["--scenarios", ",".join(SCENARIOS), "--out", str(out)]
    done = subprocess.run(
        command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    result = json.loads((out / "results.json").read_text())
    summary = result["summary"]
    assert set(summary) == set(SCENARIOS)
    for name, entry in summary.items():
        assert entry["runs"] == 1, (name, entry)
        assert entry["failed"] == 0, (name, entry)
        assert entry["rate"] > 0, (name, entry)
        assert entry["peak_rss_mb"] > 0, (name, entry)
    assert len(result["runs"]) == len(SCENARIOS)
    assert all(run["rate"] > 0 for run in result["runs"])
    assert summary["burst"]["buffer_max"] == 2000
    assert set(result["ratios"]) >= {"processor/raw_batch", "processor/raw", "processor/naive"}
    assert {"budget_256/processor", "budget_512/processor"} <= set(result["ratios"])
    for name in ("processor", "budget_256", "budget_512", "burst"):
        assert summary[name]["stage_workers"] in (0, 1, 2), (name, summary[name])
    assert (out / "results.png").read_bytes().startswith(b"\x89PNG")
