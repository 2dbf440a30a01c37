"""Per-partition event-time window state: tumbling windows, watermark, lateness, dedup keys
and the input offsets each sensor's state was built from, as columnar numpy arrays
(``windows``, ``tables``, ``aggregates``), its changelog rows, one a sensor (``rows``), and
the local store that keeps them on the pod's volume (``store``: RocksDB through rocksdict).

The window state is pure: no Kafka, no asyncio, no I/O; when state is written to the store and
the changelog is the engine's business (docs/state.md). May import numpy, rocksdict, the
standard library, :mod:`processor.errors` and :mod:`processor.messages`; never aiokafka,
OpenTelemetry or the engine (checked by ``.importlinter``).
"""
