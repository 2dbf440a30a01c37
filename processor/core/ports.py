"""What the engine needs of the world, and nothing more: the ports its adapters implement.

The Kafka adapters (:mod:`processor.kafka.connection`) implement the consumer, the outputs and
the connection; the stage runners (:mod:`processor.workers.stage_port`) the stage; the
in-memory broker of the tests implements them all, so every step of the engine runs without
sockets. Partitions are the engine's own :class:`TopicPartition`: a plain named tuple, equal
to (and hashed as) aiokafka's, which the Kafka adapter converts at the boundary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from processor.core.stats import Stats
from processor.messages.codec import Headers, RecordLike
from processor.messages.jobs import PointReadings

#: One changelog record of the window state: a sensor's key (``b""``: the partition's own
#: row) and its serialized state (:mod:`processor.state.rows`).
Row = tuple[bytes, bytes]


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class Consumer(Protocol):
    """A consumer-group member's consumer, as the engine drives it.

    ``getmany`` raises :class:`~processor.errors.UndecodableBatchError` for a batch it cannot
    decode; ``commit`` raises :class:`~processor.errors.CommitFailedError` for a commit the
    group refused or could not take now (the engine retries it).
    """

    def assignment(self) -> set[TopicPartition]: ...

    async def committed(self, tp: TopicPartition) -> int | None: ...

    async def beginning_offsets(
        self, tps: Iterable[TopicPartition]
    ) -> Mapping[TopicPartition, int]: ...

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> Mapping[TopicPartition, int]: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def pause(self, *tps: TopicPartition) -> None: ...

    def resume(self, *tps: TopicPartition) -> None: ...

    async def getmany(
        self, timeout_ms: int, max_records: int | None
    ) -> Mapping[TopicPartition, Sequence[RecordLike]]: ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end offset as last seen by a fetch (None: not known yet)."""


class Staged(Protocol):
    """A batch's outputs, computed and ready to send; the engine reads only the counts."""

    @property
    def published(self) -> int:
        """Points among the outputs."""

    @property
    def codes(self) -> Mapping[str, int]:
        """Dead letters among the outputs, by reason code."""

    @property
    def readings(self) -> PointReadings | None:
        """The points' readings, by input row, when the stage was asked for them (windows)."""


class Stage(Protocol):
    """Where batches are computed: worker processes or a thread."""

    @property
    def parallelism(self) -> int:
        """Batches worth computing ahead of the one being sent."""

    async def start(self) -> None:
        """Ready to compute (raises ConfigError for a stage the settings cannot build)."""

    def compute(
        self,
        runs: Sequence[tuple[TopicPartition, Sequence[RecordLike]]],
        records: Sequence[RecordLike],
        stamps: Sequence[Headers] | None,
        framing: Any,
    ) -> Awaitable[Staged]:
        """Compute a batch into outputs framed as ``framing`` says. The batch is ``runs`` of
        records of one partition each, ``records`` the same in one list; ``stamps[i]`` are
        headers for the outputs of ``records[i]``."""

    def revise(
        self, staged: Staged, endings: Sequence[bytes] | None, rows: Sequence[int], code: str
    ) -> Staged:
        """``staged`` with each point's QC ending replaced by ``endings`` (by point, in input
        row order; None: as the stage left them) and the points of input ``rows`` (indices
        into its batch's records) sent to the dead letters instead, with ``code``: the
        state's QC flags and duplicates, framed again. On the event loop."""

    def describe(self) -> dict[str, int]:
        """Where the stage runs and on what measurements: for the log, once connected."""

    async def close(self) -> None: ...


class Outputs(Protocol):
    """Where computed batches go: points to the output topic, dead letters to the DLQ."""

    async def framing(self) -> Any:
        """How the stage must frame outputs for these topics (opaque to the engine)."""

    async def send(self, staged: Staged) -> Awaitable[None]:
        """Queue ``staged``'s outputs; the awaitable resolves once the broker acknowledged all
        of them. Either raises :class:`~processor.errors.DeliveryFailedError` on failure."""


class StateTopics(Protocol):
    """Where the window state goes beside the points: closed windows' aggregates, and a
    changelog of each input partition's state (a compacted topic with a partition for each
    input partition, created by the processor). Either send raises
    :class:`~processor.errors.DeliveryFailedError`, or its awaitable does."""

    async def send_aggregates(self, records: Sequence[tuple[bytes, bytes]]) -> Awaitable[None]:
        """Queue aggregates (key: the sensor id, value: JSON) to the aggregates topic; the
        awaitable resolves once the broker acknowledged all of them."""

    async def write_changelog(self, tp: TopicPartition, rows: Sequence[Row]) -> Awaitable[int]:
        """Queue ``rows``, in order, to the changelog partition of input partition ``tp``;
        the awaitable resolves once all are acknowledged, to the offset after the last."""

    async def read_changelog(self, tp: TopicPartition, since: int) -> tuple[list[Row], int]:
        """The rows of ``tp``'s changelog partition from offset ``since`` up to its end at the
        time of the call, in order, and that end offset."""


class PartitionListener(Protocol):
    """The engine's side of a group rebalance."""

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Called as every (re)join begins, with the partitions about to go."""

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Called when the join ended, with the partitions newly owned."""


class Connection(Protocol):
    """A started consumer and outputs, subscribed with the engine's listener."""

    @property
    def consumer(self) -> Consumer: ...
    @property
    def outputs(self) -> Outputs: ...
    @property
    def state(self) -> StateTopics | None:
        """The state topics, when windows are on."""

    async def watch(self, stats: Stats) -> None:
        """Watch the broker (reachability, joins) into ``stats`` until cancelled."""

    async def close(self, within_s: float) -> None:
        """Close the clients within ``within_s`` seconds, leaving what is late to the broker."""


class Connector(Protocol):
    async def connect(self, listener: PartitionListener) -> Connection:
        """Check the cluster, start the clients and subscribe; a cancellation or failure
        closes what had started. Raises ConfigError or BrokerUnavailableError naming why."""
