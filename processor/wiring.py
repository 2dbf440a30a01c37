"""A processor wired to Kafka: the engine with the Kafka connection and the stage where the
memory budget holds it. ``processor run``, the demo and the benchmark all build it here."""

from __future__ import annotations

from processor.config import Settings
from processor.core.memory import MemoryProbe, find_cgroup
from processor.core.observer import BatchObserver
from processor.core.pipeline import Processor
from processor.core.ports import Stage
from processor.kafka.clients import fetch_bytes
from processor.kafka.connection import KafkaConnector
from processor.workers.runner import make_runner
from processor.workers.stage_port import Delayed, RunnerStage


def kafka_processor(
    settings: Settings,
    observer: BatchObserver | None = None,
    memory: MemoryProbe | None = None,
) -> Processor:
    """The processor ``settings`` describe (nothing is started yet)."""
    memory = memory or MemoryProbe(settings.memory_limit_mb, find_cgroup())
    windows = settings.window is not None  # off: no duplicates
    stage: Stage = RunnerStage(
        make_runner(settings, memory),
        settings.max_payload_bytes,
        state_fields=settings.state_fields if settings.has_state else None,
        keep_points=(windows and settings.dedup) or settings.qc_spec is not None,
    )
    if settings.stage_delay_ms:
        stage = Delayed(stage, settings.stage_delay_ms / 1000)
    return Processor(
        settings,
        KafkaConnector(settings, memory.budget),
        stage,
        memory,
        observer,
        fetch_max_bytes=fetch_bytes(settings, memory.budget)[0],
    )
