"""What the pipeline reports about each batch, so telemetry can trace it from outside the core.

The pipeline calls ``begin`` once per batch before the stage runs and ``end`` once when the
broker acknowledged the batch's outputs (or it failed). ``stamps`` lets the observer put
headers (a ``traceparent``) on the batch's outputs without the stage knowing why. Everything
here is per batch: an observer must never make the pipeline do per-record work it did not
ask for, and the default one does nothing at all, so the core runs without OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from processor.codec import Headers, RecordLike
from processor.stage import StageResult


class BatchTrace(Protocol):
    """One batch, from before the stage to its acknowledgement."""

    @property
    def stamps(self) -> Sequence[Headers] | None:
        """Headers for the outputs of each input record (by index), or None for none."""

    def end(self, result: StageResult | None, seconds: float, error: Exception | None) -> None:
        """The batch was acknowledged (``error`` None) or failed; ``seconds`` since begin."""


class BatchObserver(Protocol):
    def begin(self, records: Sequence[RecordLike], partitions: Sequence[int]) -> BatchTrace:
        """A batch of ``records`` from ``partitions`` of the input topic is about to run."""


class _Untraced:
    stamps: Sequence[Headers] | None = None

    def end(self, result: StageResult | None, seconds: float, error: Exception | None) -> None:
        return None


_UNTRACED = _Untraced()


class Unobserved:
    """The default observer: no spans, no headers, no cost."""

    def begin(self, records: Sequence[RecordLike], partitions: Sequence[int]) -> BatchTrace:
        return _UNTRACED
