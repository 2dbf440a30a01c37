"""Per-partition JSONL spill segments: memory relief for records already fetched.

A spill is never the only copy: spilled offsets stay uncommitted until processed, so Kafka
still has them. That makes every failure mode simple: a torn last line (crash mid-write) is
ignored, and anything unreadable means "discard the spill and re-read from Kafka".

Layout: ``<dir>/<topic>/<partition>/<sequence>.jsonl``; one segment per spilled run, written
and fsync'd in one go. File names come from the topic, partition and a counter, never from a
payload. Blocking I/O: call it from a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from processor.core.memory import MIB
from processor.errors import SpillError
from processor.messages.codec import RecordLike

log = logging.getLogger(__name__)

_SAFE_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_LINE_OVERHEAD = 96  # JSON field names and punctuation of one spilled record


class SpilledRecord(msgspec.Struct, frozen=True):
    """One consumed record as stored on disk (bytes are base64 in JSON)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = []


@dataclass(slots=True)
class _Segment:
    path: Path
    size: int
    first_offset: int
    last_offset: int
    position: int = 0  # bytes of this file already replayed
    next_start: int = -1  # first offset of the range the next replayed piece covers

    def __post_init__(self) -> None:
        if self.next_start < 0:
            self.next_start = self.first_offset


@dataclass(frozen=True, slots=True)
class SpillPiece:
    """Replayed records and the offset range ``[first, end)`` they account for."""

    records: list[SpilledRecord]
    first: int
    end: int


@dataclass(slots=True)
class _PartitionSpill:
    segments: list[_Segment] = field(default_factory=list)
    records: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SpilledRecord)


class SpillStore:
    """The spilled runs of every partition under ``directory``, oldest first.

    Bounded twice: at most ``max_bytes`` of segments (0: spilling off), and never below
    ``min_free_bytes`` free on the volume. ``append`` takes what fits and says how much;
    ``read`` hands runs back in offset order; ``recover`` adopts what an earlier process left
    past the committed offset. Blocking file I/O: the engine calls it in a worker thread.
    """

    def __init__(self, directory: Path, max_bytes: int, min_free_bytes: int) -> None:
        self._dir = directory
        self._max_bytes = max_bytes
        self._min_free = min_free_bytes
        self._partitions: dict[tuple[str, int], _PartitionSpill] = {}
        self._sequence = 0
        self.bytes = 0
        if max_bytes > 0:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SpillError(f"cannot create spill directory {directory}: {exc}") from None

    @property
    def records(self) -> int:
        return sum(p.records for p in self._partitions.values())

    def partitions(self) -> set[tuple[str, int]]:
        return {tp for tp, p in self._partitions.items() if p.records}

    def pending(self, topic: str, partition: int) -> int:
        state = self._partitions.get((topic, partition))
        return state.records if state else 0

    def room_bytes(self) -> int:
        if self._max_bytes <= 0:
            return 0
        free = shutil.disk_usage(self._dir).free - self._min_free
        return max(0, min(self._max_bytes - self.bytes, free))

    def refusal(self, needed: int) -> str | None:
        """Why the spill has less than ``needed`` bytes of room, or None if it has them."""
        if self._max_bytes <= 0:
            return "spilling is off: PROCESSOR_SPILL_MAX_BYTES is 0"
        free = shutil.disk_usage(self._dir).free
        if free - self._min_free < needed:
            return (
                f"{free / MIB:.0f} MiB free on {self._dir}, the reserve "
                f"PROCESSOR_SPILL_MIN_FREE_MB is {self._min_free / MIB:.0f} MiB "
                f"and a fetch may need {needed / MIB:.0f} MiB"
            )
        if self._max_bytes - self.bytes < needed:
            return (
                f"{self.bytes / MIB:.0f} MiB spilled of PROCESSOR_SPILL_MAX_BYTES "
                f"{self._max_bytes / MIB:.0f} MiB and a fetch may need {needed / MIB:.0f} MiB"
            )
        return None

    def append(self, topic: str, partition: int, records: Sequence[RecordLike]) -> int:
        """Write the leading records that fit as one fsync'd segment; returns how many.

        All records belong to one partition. The bound is checked on the encoded lines, so
        the spill never grows past ``max_bytes`` or into the reserved free disk.
        """
        room = self.room_bytes()
        lines: list[bytes] = []
        size = 0
        for record in records:
            line = _encoder.encode(_to_spilled(topic, partition, record)) + b"\n"
            if size + len(line) > room:
                break
            lines.append(line)
            size += len(line)
        if not lines:
            return 0
        first, last = records[0], records[len(lines) - 1]
        folder = self._folder(topic, partition)
        self._sequence += 1
        path = folder / f"{self._sequence:012d}.jsonl"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as handle:
                handle.write(b"".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise SpillError(f"cannot write spill segment {path}: {exc}") from None
        state = self._partitions.setdefault((topic, partition), _PartitionSpill())
        state.segments.append(_Segment(path, size, first.offset, last.offset))
        state.records += len(lines)
        self.bytes += size
        return len(lines)

    def read(self, topic: str, partition: int, limit: int) -> list[SpillPiece]:
        """Take up to ``limit`` records in offset order; fully read segments are deleted.

        Each piece covers the offsets up to the next record still on disk, so the gaps a
        compacted topic leaves between records are accounted for too.
        """
        state = self._partitions.get((topic, partition))
        pieces: list[SpillPiece] = []
        taken = 0
        while state and state.segments and taken < limit:
            segment = state.segments[0]
            records, segment.position = _read_lines(segment, limit - taken)
            following = _read_lines(segment, 1)[0]
            if following:
                end = following[0].offset
            elif len(state.segments) > 1:  # cover the gap up to the next segment too
                end = state.segments[1].first_offset
            else:
                end = segment.last_offset + 1
            if records:
                pieces.append(SpillPiece(records, segment.next_start, end))
                taken += len(records)
            segment.next_start = end
            if not following:
                self._delete(state, segment)
        if state is not None:
            state.records = max(0, state.records - taken)
        return pieces

    def discard(self, topic: str, partition: int) -> None:
        """Forget a partition's spill (revoked, or unreadable: Kafka still has the records)."""
        state = self._partitions.pop((topic, partition), None)
        while state and state.segments:
            self._delete(state, state.segments[0])
        shutil.rmtree(self._folder(topic, partition), ignore_errors=True)

    def recover(self, topic: str, partition: int, committed: int | None) -> int | None:
        """Adopt a spill left by an earlier process, if it continues at ``committed``.

        Returns the offset to fetch from after the spill, or None when the spill was
        discarded (it did not start at or before the committed offset).
        """
        folder = self._folder(topic, partition)
        paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
        segments = _scan_all(paths)
        if (
            committed is None
            or not segments
            or not segments[0].first_offset <= committed <= segments[-1].last_offset
        ):
            if paths:
                log.info(
                    "discarding leftover spill",
                    extra={"topic": topic, "partition": partition, "committed": committed},
                )
            shutil.rmtree(folder, ignore_errors=True)
            return None
        state = _PartitionSpill()
        for segment in segments:
            if segment.last_offset < committed:
                segment.path.unlink(missing_ok=True)
                continue
            records, _ = _read_lines(segment, None)
            segment.position = 0
            state.records += sum(1 for r in records if r.offset >= committed)
            state.segments.append(segment)
            self.bytes += segment.size
        self._partitions[(topic, partition)] = state
        self._sequence = max([self._sequence, *(int(s.path.stem) for s in segments)])
        self._skip_below(state, committed)
        if state.segments:
            state.segments[0].next_start = committed
        return segments[-1].last_offset + 1

    def _skip_below(self, state: _PartitionSpill, committed: int) -> None:
        """Advance the first segment's read position past offsets already committed."""
        if not state.segments:
            return
        segment = state.segments[0]
        with segment.path.open("rb") as handle:
            for line in iter(handle.readline, b""):
                if _decoder.decode(line).offset >= committed:
                    break
                segment.position += len(line)

    def _folder(self, topic: str, partition: int) -> Path:
        if not _SAFE_TOPIC.match(topic):
            raise SpillError(f"topic name {topic!r} is not a legal Kafka topic name")
        return self._dir / topic / str(int(partition))

    def _delete(self, state: _PartitionSpill, segment: _Segment) -> None:
        state.segments.remove(segment)
        segment.path.unlink(missing_ok=True)
        self.bytes -= segment.size


def _to_spilled(topic: str, partition: int, record: RecordLike) -> SpilledRecord:
    return SpilledRecord(
        topic=topic,
        partition=partition,
        offset=record.offset,
        timestamp=getattr(record, "timestamp", 0) or 0,
        key=record.key,
        value=record.value,
        headers=list(record.headers or ()),
    )


def _read_lines(segment: _Segment, limit: int | None) -> tuple[list[SpilledRecord], int]:
    """Records from ``segment.position`` on; a torn (unterminated) last line ends the read."""
    records: list[SpilledRecord] = []
    position = segment.position
    try:
        with segment.path.open("rb") as handle:
            handle.seek(position)
            while limit is None or len(records) < limit:
                line = handle.readline()
                if not line.endswith(b"\n"):
                    if line:
                        log.warning("ignoring torn spill line", extra={"path": str(segment.path)})
                    return records, segment.size
                records.append(_decoder.decode(line))
                position += len(line)
    except (OSError, msgspec.DecodeError) as exc:
        raise SpillError(f"unreadable spill segment {segment.path}: {exc}") from None
    return records, position


def _scan_all(paths: list[Path]) -> list[_Segment]:
    """Offsets and sizes of a partition's segments; empty if any is unusable.

    Only the last segment may end in a torn line (a crash mid-write); it is cut off. An
    unreadable segment anywhere else would leave a gap, so the whole spill is refused.
    """
    segments: list[_Segment] = []
    for number, path in enumerate(paths, start=1):
        try:
            data = path.read_bytes()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        if end < len(data):
            if number < len(paths):
                return []
            log.warning("ignoring torn spill line", extra={"path": str(path)})
        try:
            offsets = [_decoder.decode(line).offset for line in data[:end].splitlines()]
        except msgspec.DecodeError:
            log.warning("refusing unreadable spill segment", extra={"path": str(path)})
            return []
        if offsets:
            segments.append(_Segment(path, end, offsets[0], offsets[-1]))
    return segments
