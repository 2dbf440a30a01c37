"""The stream engine: fetch, admit, buffer, spill, stage, acknowledge, commit, pause.

Owns the delivery invariants (a record is done only when the broker acknowledged its output;
commits never pass an unfinished offset; nothing fetched is dropped). Talks to Kafka and the
stage through ports (:mod:`processor.core.ports`), so it may import only the standard library,
numpy, :mod:`processor.config`, :mod:`processor.errors`, :mod:`processor.messages` and the
pure state it keeps per partition (:mod:`processor.state`, :mod:`processor.qc`): never
aiokafka, OpenTelemetry, the Kafka, telemetry, worker or geometry subpackages.
"""
