"""What the pipeline reports about each batch, so telemetry can trace it from outside the core.

The pipeline calls ``begin`` once per batch before the stage runs and ``end`` once when the
broker acknowledged the batch's outputs (or it failed). ``stamps`` lets the observer put
headers (a ``traceparent``) on the batch's outputs without the stage knowing why. An
observer must never make the pipeline do per-record work it did not ask for. The default one
records nothing, but it passes the upstream trace context on (:mod:`processor.propagation`):
trace context flows whether or not spans are recorded, and the core needs no OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from processor.messages.codec import Headers, RecordLike
from processor.messages.jobs import Framed
from processor.messages.propagation import propagate


class BatchTrace(Protocol):
    """One batch, from before the stage to its acknowledgement."""

    @property
    def stamps(self) -> Sequence[Headers] | None:
        """Headers for the outputs of each input record (by index), or None for none."""

    def end(self, result: Framed | None, seconds: float, error: Exception | None) -> None:
        """The batch was acknowledged (``error`` None) or failed; ``seconds`` since begin."""


class BatchObserver(Protocol):
    def begin(self, records: Sequence[RecordLike], partitions: Sequence[int]) -> BatchTrace:
        """A batch of ``records`` from ``partitions`` of the input topic is about to run."""


@dataclass(slots=True)
class Untraced:
    """A batch without a span: its outputs carry their inputs' upstream context, if any."""

    stamps: Sequence[Headers] | None

    def end(self, result: Framed | None, seconds: float, error: Exception | None) -> None:
        return None


class Unobserved:
    """The default observer: no spans, no metrics; trace context passed on unchanged."""

    def begin(self, records: Sequence[RecordLike], partitions: Sequence[int]) -> BatchTrace:
        return Untraced(propagate(records))
