"""`processor demo` headless, as CI runs it: a short burst, every reading accounted for, at
least one pause, and the summary and the PNG written where it says."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

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
