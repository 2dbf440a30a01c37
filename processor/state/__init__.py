"""Per-partition event-time window state: tumbling windows, watermark, lateness, dedup keys
and the input offsets each sensor's state was built from, as columnar numpy arrays.

Pure: no Kafka, no asyncio, no I/O. Where the state is stored (local store, changelog) and
when it is checkpointed is the engine's business; this package only applies batches of
readings, reports what closed, and turns itself into bytes and back. May import numpy, the
standard library, :mod:`processor.errors` and :mod:`processor.messages`; never aiokafka,
OpenTelemetry or the engine (checked by ``.importlinter``).
"""
