"""The package's face: its version is the installed distribution's, its exports resolve, and
importing it costs nothing (a stage worker imports ``processor`` first, then only the stage)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import processor


def test_the_version_is_the_distributions() -> None:
    assert processor.__version__ == version("geo-stream-processor")


def test_the_exports_are_pinned_and_resolve() -> None:
    assert sorted(processor.__all__) == [
        "ConfigError",
        "Processor",
        "Settings",
        "__version__",
        "kafka_processor",
    ]
    for name in processor.__all__:
        assert getattr(processor, name) is not None
    assert processor.kafka_processor.__module__ == "processor.wiring"


def test_an_unknown_name_is_an_attribute_error() -> None:
    assert not hasattr(processor, "pipeline_of_dreams")


def test_importing_the_package_imports_no_dependency() -> None:
    code = "import sys, processor; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    modules = set(done.stdout.split())
    heavy = {"aiokafka", "pydantic", "numpy", "opentelemetry", "pyproj", "shapely"}
    assert not {m.split(".")[0] for m in modules} & heavy
