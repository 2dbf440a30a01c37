"""A backpressure-aware geospatial stream processor for Kafka and Redpanda.

The package, by layer (``docs/architecture.md`` draws it; ``.importlinter`` enforces it):

- :mod:`processor.core`: the stream engine: admission, flow control, spill, offsets, commits.
  Plain asyncio behind ports; imports neither aiokafka nor OpenTelemetry.
- :mod:`processor.messages`: the input and output contracts as bytes and columns.
- :mod:`processor.geo`: validation and reprojection of a batch, vectorized.
- :mod:`processor.workers`: where the spatial stage runs (worker processes or a thread).
- :mod:`processor.kafka`: everything that speaks to the broker; the only aiokafka importer.
- :mod:`processor.telemetry`: OpenTelemetry, Prometheus, JSON logs, health endpoints.
- :mod:`processor.demo` and :mod:`processor.tools`: the demo, synthetic readings, and the
  ``sample`` and ``broker`` commands; nothing in the service depends on them.
- The top-level modules wire these together: settings (:mod:`processor.config`), the command
  line (:mod:`processor.cli`) and the service (:mod:`processor.service`).

Names are resolved on first use, so that importing a stage worker or the CLI's ``--help``
does not import the whole service.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from processor.config import Settings
    from processor.core.pipeline import Processor
    from processor.errors import ConfigError
    from processor.wiring import kafka_processor

try:
    __version__ = version("geo-stream-processor")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["ConfigError", "Processor", "Settings", "__version__", "kafka_processor"]

_EXPORTS = {
    "ConfigError": "processor.errors",
    "Processor": "processor.core.pipeline",
    "Settings": "processor.config",
    "kafka_processor": "processor.wiring",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'processor' has no attribute {name!r}")
