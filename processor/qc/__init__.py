"""Streaming QARTOD quality control: per-field flags on every reading, from its sensor's
history, which is state with the window state's guarantees (docs/qc.md, docs/state.md).

Owns the flag codes and their combination (``flags``), the four tests on columns
(``checks``), the thresholds and their defaults per sensor profile (``thresholds``,
``profiles``), one input partition's QC state (``partition``) and its changelog rows
(``rows``). The engine calls :meth:`PartitionQc.apply` per input partition on readings in
offset order, and turns the flags into the points' JSON.

Pure like the window state: no Kafka, no asyncio, no I/O. May import numpy, the standard
library, :mod:`processor.errors` and the window state's key and table helpers
(:mod:`processor.state`); never aiokafka, OpenTelemetry, the engine, the workers, the demo
or the tools (checked by ``.importlinter``).
"""

from processor.qc.flags import TESTS, Flag, failed_names, field_flags, reading_flags, worst
from processor.qc.partition import Flags, PartitionQc
from processor.qc.profiles import PROFILE_QC
from processor.qc.rows import QC_KEY_END, SETTINGS_KEY, qc_key
from processor.qc.thresholds import FieldThresholds, QcSpec, thresholds_of

__all__ = [
    "PROFILE_QC",
    "QC_KEY_END",
    "SETTINGS_KEY",
    "TESTS",
    "FieldThresholds",
    "Flag",
    "Flags",
    "PartitionQc",
    "QcSpec",
    "failed_names",
    "field_flags",
    "qc_key",
    "reading_flags",
    "thresholds_of",
    "worst",
]
