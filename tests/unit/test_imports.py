"""What a configuration does not use is not imported: ``processor run`` without geofences,
OTLP exporters or the demo's libraries loads none of them (each costs its megabytes in every
processor: geopandas ~70 MB, matplotlib ~50 MB)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RUN_PATH = """
import sys
from processor.cli import main
from processor.config import Settings
from processor.wiring import kafka_processor
from processor.telemetry.otel import Telemetry

settings = Settings(http_port=0, spill_dir=sys.argv[1])
kafka_processor(settings, observer=Telemetry.from_env(settings))
print(" ".join(sorted(sys.modules)))
"""
OPTIONAL = ("geopandas", "pandas", "pyogrio", "matplotlib", "rich", "opentelemetry.exporter.otlp")


def test_the_run_path_imports_no_optional_library(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "OTEL_"))}
    done = subprocess.run(
        [sys.executable, "-c", RUN_PATH, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules = set(done.stdout.split())
    assert "processor.core.pipeline" in modules
    loaded = [m for m in modules if any(m == o or m.startswith(o + ".") for o in OPTIONAL)]
    assert loaded == []


def test_the_demo_draws_with_matplotlib_only_once_the_run_is_over() -> None:
    """While it runs, the demo's process is the processor whose memory it shows."""
    code = "import sys, processor.demo; print('matplotlib' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
