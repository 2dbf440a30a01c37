"""What the processor says about itself: OpenTelemetry traces and metrics, the
Prometheus endpoint, JSON logs and the health endpoints. Reads the engine's counters and
observes its batches; the engine does not import it.
"""
