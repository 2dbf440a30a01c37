"""`processor demo` headless, as CI runs it: a short burst, every reading accounted for, at
least one pause, every region's pm25 and NowCast AQI per hourly window read back from the
aggregates (the smoke's region far above the others), the stuck and the spiking sensor the
most flagged by QC, and the summary and the PNG written where it says."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from processor.tools.synthetic import REGIONS

pytestmark = pytest.mark.integration
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def test_headless_demo_accounts_for_every_reading(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "processor.cli", "demo",
        "--duration", "15", "--sensors", "200", "--no-live", "--output-dir", str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=200)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    assert "Traceback" not in text

    summary = json.loads((out / "summary.json").read_text())
    assert summary["in"] > 5_000
    assert summary["in"] == summary["published"] + summary["dead_lettered"], summary
    assert summary["accounted"] is True
    assert summary["interrupted"] is False
    assert sum(summary["dead_lettered_by_code"].values()) == summary["dead_lettered"] > 0
    assert sum(summary["pauses"].values()) >= 1, summary
    assert summary["peak_buffered"] <= summary["buffer_max"]

    picture = out / "demo.png"
    assert picture.read_bytes()[:8] == PNG_MAGIC
    assert str(picture) in text
    lines = [line for line in text.splitlines() if line.startswith("[")]
    assert len(lines) >= 5, text  # a plain line every 2 s
    assert any("smoke burst" in line for line in lines)
    assert re.search(r"in == published \+ dead-lettered +yes", text), text
    _assert_pm25_by_region(summary, text, lines)
    _assert_quality_control(summary, text)


def _assert_pm25_by_region(summary: dict[str, Any], text: str, lines: list[str]) -> None:
    """Every aggregate the processor published was read back and counted to its region, and
    the smoke stands out: the hot region's peak window mean is far above every other's."""
    windows = summary["windows"]
    assert windows["aggregates_read"] == summary["aggregates"] > 0, windows
    # No reading late (the lateness covers the stamping), none a duplicate (no sensor stamps
    # two readings with one millisecond): every valid reading is counted.
    assert summary["late_readings"] == 0
    assert "duplicate" not in summary["dead_lettered_by_code"]
    by_region = windows["pm25_by_region"]
    assert set(by_region) == set(REGIONS)
    peaks = {}
    for region, series in by_region.items():
        assert sum(window["readings"] for window in series) > 0, region
        peaks[region] = max(w["pm25_mean"] for w in series if w["pm25_mean"] is not None)
    hot = peaks.pop(summary["burst"]["region"])
    assert hot > 3 * max(peaks.values()), (hot, peaks)
    assert re.search(r"^  sierra .*\(smoke\)$", text, re.MULTILINE), text
    assert any("| pm25 alps " in line for line in lines), lines
    # The NowCast from the second hour on: the smoke's region's AQI far above the clean ones'.
    aqi = {
        region: max(w["aqi"] for w in series if w["aqi"] is not None)
        for region, series in by_region.items()
    }
    hot_aqi = aqi.pop(summary["burst"]["region"])
    assert hot_aqi > 200, (hot_aqi, aqi)
    assert max(aqi.values()) < 100, (hot_aqi, aqi)
    assert "NowCast AQI of pm25 by region" in text


def _assert_quality_control(summary: dict[str, Any], text: str) -> None:
    """The faulty sensors are among those QC flags most (the smoke's onset is flagged too:
    in a short run it rises hundreds of µg/m³ between two readings), and flags reach the
    summary."""
    qc = summary["qc"]
    assert next(iter(qc["most_flagged"])) == qc["stuck"], qc
    # Every fifth reading spikes: it and the one after it are flagged (windows that closed).
    assert qc["flagged"][qc["spiking"]] >= 4, qc
    flags = summary["qc_flags"]["pm25"]
    assert flags["1"] > 0.9 * summary["published"], flags
    assert flags.get("3", 0) + flags.get("4", 0) > 0, flags
    assert f"{qc['stuck']} stuck, {qc['spiking']} spiking" in text
