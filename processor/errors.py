"""The processor's exceptions, named for what went wrong.

::

    ProcessorError                 base of everything the processor raises on purpose
    ├── ConfigError                a setting is missing, malformed or inconsistent (names it)
    ├── BrokerUnavailableError     the Kafka cluster cannot be reached at start-up
    ├── TlsHandshakeError          a bootstrap server was reached, but the TLS handshake failed
    ├── AuthenticationFailedError  a bootstrap server refused the SASL mechanism or the login,
    │                              or closed the connection of a client that did not log in
    ├── DeliveryFailedError        the broker did not acknowledge a write; nothing past it is
    │                              committed and the processor stops so a restart re-reads it
    ├── SpillError                 a spill segment could not be written or read
    ├── StateError                 window state cannot be used: its local store
    │                              (PROCESSOR_STATE_DIR) failed, or saved state is
    │                              unreadable or from other window settings
    ├── StageWorkerError           a stage worker process died; the processor stops (exit 1)
    │                              and a restart re-reads everything not yet committed
    └── UndecodableBatchError      a fetched record batch cannot be decoded (corrupt, CRC
                                   mismatch, unknown codec); the processor stops (exit 1)
                                   before it, since skipping it would lose its records

A bad *record* is never an exception: it becomes a dead letter (see ``codec.DeadLetterCode``).
"""

from __future__ import annotations


class ProcessorError(Exception):
    """Base class of the processor's deliberate errors."""


class ConfigError(ProcessorError):
    """A setting is invalid; the message names the setting as an operator would type it."""


class BrokerUnavailableError(ProcessorError):
    """The bootstrap servers could not be reached."""


class TlsHandshakeError(ProcessorError):
    """The TLS handshake with a bootstrap server failed (certificate, CA, protocol)."""


class AuthenticationFailedError(ProcessorError):
    """The broker refused to let the processor in; the message never holds the password."""


class DeliveryFailedError(ProcessorError):
    """A produce request failed after the client's own retries."""


class CommitFailedError(ProcessorError):
    """The group did not take an offset commit now (a rebalance, the coordinator away): the
    offsets stay uncommitted and the next commit carries them."""


class SpillError(ProcessorError):
    """The spill directory could not be used."""


class StateError(ProcessorError):
    """Window state cannot be used: its local store (PROCESSOR_STATE_DIR) could not be
    opened, written or read, or saved state is unreadable or was written under other window
    settings (length, lateness, fields, dedup), so it would count differently."""


class StageWorkerError(ProcessorError):
    """A worker process of the spatial stage died or could not start."""


class UndecodableBatchError(ProcessorError):
    """A record batch of the input cannot be decoded; it names where, so an operator can
    inspect it (a restart fails on it again until it is repaired or deliberately skipped)."""

    def __init__(self, topic: str, partition: int, offset: int, cause: str) -> None:
        super().__init__(
            f"cannot decode the record batch of topic {topic} partition {partition} "
            f"at offset {offset}: {cause}"
        )
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.cause = cause
