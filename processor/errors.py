"""The processor's exceptions, named for what went wrong.

::

    ProcessorError                 base of everything the processor raises on purpose
    ├── ConfigError                a setting is missing, malformed or inconsistent (names it)
    ├── BrokerUnavailableError     the Kafka cluster cannot be reached at start-up
    ├── DeliveryFailedError        the broker did not acknowledge a write; nothing past it is
    │                              committed and the processor stops so a restart re-reads it
    ├── SpillError                 a spill segment could not be written or read
    └── StageWorkerError           a stage worker process died; the processor stops (exit 1)
                                   and a restart re-reads everything not yet committed

A bad *record* is never an exception: it becomes a dead letter (see ``codec.DeadLetterCode``).
"""

from __future__ import annotations


class ProcessorError(Exception):
    """Base class of the processor's deliberate errors."""


class ConfigError(ProcessorError):
    """A setting is invalid; the message names the setting as an operator would type it."""


class BrokerUnavailableError(ProcessorError):
    """The bootstrap servers could not be reached."""


class DeliveryFailedError(ProcessorError):
    """A produce request failed after the client's own retries."""


class SpillError(ProcessorError):
    """The spill directory could not be used."""


class StageWorkerError(ProcessorError):
    """A worker process of the spatial stage died or could not start."""
