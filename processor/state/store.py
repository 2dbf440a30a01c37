"""Durable per-partition state on local disk (``PROCESSOR_STATE_DIR``), for fast restarts.

RocksDB through rocksdict, one database per input partition, as Quix Streams keeps it; chosen
by ``python -m bench.state_store`` (figures in bench/README.md): a durable write costs the rows
that changed (1,000 rows of a 100,000-sensor partition: ~4-5 ms p50), where a columnar
snapshot file costs the whole partition on every batch (~40 ms, growing with the partition)
and SQLite in WAL mode ~10x RocksDB. Restoring 1,000,000 sensors takes 1.2-1.7 s (the file
0.2 s), but it happens once per assignment; writes happen after every batch.

Each ``write`` is one RocksDB ``WriteBatch``: the rows and the partition's metadata record
(which offsets the state includes) land together or not at all, and ``sync=True`` fsyncs
RocksDB's write-ahead log before it returns, so a ``kill -9`` (or a power cut) after the call
keeps it, and one during the call leaves the previous write (RocksDB recovers the log to its
last whole batch). The metadata lives in its own column family: row keys are arbitrary bytes,
so no key could be reserved for it.

Blocking file I/O: the engine calls it from one worker thread at a time.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from array import array
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from rocksdict import ColumnFamily, Options, Rdict, WriteBatch, WriteOptions

from processor.errors import StateError

#: Kafka's legal topic names; ``.`` and ``..`` are illegal there and would escape here.
_TOPIC = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,249}$")
#: Where a dropped partition's database goes before it is deleted: "~" is in no topic name,
#: so the rename makes the drop atomic and a crash mid-delete leaves nothing that opens.
_DROPPED = "~dropped"
_META_FAMILY = "meta"
_META_KEY = b"meta"
#: Per database: memtables of 8 MiB, at most two, so that a member with a dozen partitions
#: holds ~200 MiB at most for them (RocksDB's default is 64 MiB each).
_WRITE_BUFFER = 8 << 20
_WAL_MAX = 32 << 20  # write-ahead log per database before its oldest families are flushed
_SETTING = "PROCESSOR_STATE_DIR, --state-dir"


@dataclass(frozen=True, slots=True)
class StoredRows:
    """A partition's rows as two buffers with end offsets: a handful of objects for a million
    rows (a dict would hold two million). Row ``i``'s key is
    ``keys[key_ends[i - 1] : key_ends[i]]`` (from 0 for the first); rows come in key order.
    The buffers are the caller's: nothing else refers to them."""

    keys: bytearray
    key_ends: np.ndarray
    values: bytearray
    value_ends: np.ndarray

    @classmethod
    def gather(cls, pairs: Iterator[tuple[bytes, bytes]]) -> StoredRows:
        """Append each pair to the buffers; no object per row outlives its turn."""
        keys, values = bytearray(), bytearray()
        key_ends, value_ends = array("q"), array("q")
        for key, value in pairs:
            keys += key
            values += value
            key_ends.append(len(keys))
            value_ends.append(len(values))
        return cls(
            keys, np.frombuffer(key_ends, np.int64), values, np.frombuffer(value_ends, np.int64)
        )

    def __len__(self) -> int:
        return len(self.key_ends)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        key_start = value_start = 0
        for key_end, value_end in zip(
            self.key_ends.tolist(), self.value_ends.tolist(), strict=True
        ):
            yield bytes(self.keys[key_start:key_end]), bytes(self.values[value_start:value_end])
            key_start, value_start = key_end, value_end


class _Partition:
    """One partition's open database and the handle of its metadata column family."""

    def __init__(self, path: Path) -> None:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        options.set_write_buffer_size(_WRITE_BUFFER)
        options.set_max_write_buffer_number(2)
        # The tiny metadata family is rarely flushed, and a log file is kept until every
        # family's data in it is: without a cap the log grew to 202 MB for 2 MB of rows
        # (1,000 sensors rewritten 1,200 times); with it, 48 MB at most.
        options.set_max_total_wal_size(_WAL_MAX)
        self.db = Rdict(str(path), options, column_families={_META_FAMILY: options})
        self.meta: ColumnFamily | None = self.db.get_column_family_handle(_META_FAMILY)

    def close(self) -> None:
        self.meta = None  # a live column family handle keeps the database (and its lock) open
        self.db.close()


class LocalStore:
    """Durable per-partition state under ``directory``: ``<topic>/<partition>/``."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._open: dict[tuple[str, int], _Partition] = {}
        self._sync = WriteOptions()
        self._sync.sync = True
        try:
            directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(directory / _DROPPED, ignore_errors=True)
            probe = directory / f"{_DROPPED}.probe"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise StateError(_message("use", f"the state directory {directory}", exc)) from None

    def write(
        self, topic: str, partition: int, rows: Mapping[bytes, bytes | None], meta: bytes
    ) -> None:
        """Put the rows (``None`` deletes one) and replace the metadata record, atomically
        and durably: after a crash, all of it or none of it is there."""
        batch = WriteBatch(raw_mode=True)
        for key, value in rows.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        state = self._partition(topic, partition)
        batch.put(_META_KEY, meta, state.meta)
        try:
            state.db.write(batch, self._sync)
        except Exception as exc:  # rocksdict raises Exception for RocksDB's errors
            raise StateError(_message("write", self._name(topic, partition), exc)) from None

    def read(self, topic: str, partition: int) -> tuple[StoredRows, bytes | None]:
        """The partition's rows and metadata record (``None``: nothing was ever written)."""
        state = self._partition(topic, partition)
        try:
            meta = state.db.get_column_family(_META_FAMILY).get(_META_KEY)
            # raw_mode: keys and values are bytes (rocksdict types them as any it could hold)
            rows = StoredRows.gather(cast(Iterator[tuple[bytes, bytes]], state.db.items()))
        except Exception as exc:  # as in write
            raise StateError(_message("read", self._name(topic, partition), exc)) from None
        return rows, meta

    def drop(self, topic: str, partition: int) -> None:
        """Delete the partition's state (revoked for good, or the changelog will rebuild it)."""
        path = self._path(topic, partition)
        state = self._open.pop((topic, partition), None)
        if state is not None:
            state.close()
        try:
            if path.exists():
                (self._dir / _DROPPED).mkdir(exist_ok=True)
                os.replace(path, self._dir / _DROPPED / uuid.uuid4().hex)
                _fsync_directory(path.parent)
                shutil.rmtree(self._dir / _DROPPED)
        except OSError as exc:
            raise StateError(_message("drop", self._name(topic, partition), exc)) from None

    def release(self, topic: str, partition: int) -> None:
        """Close the partition's database (revoked): its memtables go, its files stay for a
        later assignment, which then reads only the changelog written since."""
        state = self._open.pop((topic, partition), None)
        if state is not None:
            state.close()

    def sweep(self, owned: Collection[tuple[str, int]], idle_s: float) -> list[tuple[str, int]]:
        """Drop the databases of partitions not ``owned`` whose files have not changed for
        ``idle_s`` (a partition that went and did not come back: its changelog has its rows);
        returns which."""
        cutoff = time.time() - idle_s
        swept = []
        for topic, partition, path in self._stored():
            if (topic, partition) in owned or (topic, partition) in self._open:
                continue
            try:
                changed = max((f.stat().st_mtime for f in path.iterdir()), default=0.0)
            except OSError:
                continue  # gone meanwhile, or unreadable: left for the next sweep
            if changed < cutoff:
                self.drop(topic, partition)
                swept.append((topic, partition))
        return swept

    def _stored(self) -> Iterator[tuple[str, int, Path]]:
        """``(topic, partition, path)`` of every partition database under the directory."""
        for topic_dir in sorted(self._dir.iterdir()):
            if not topic_dir.is_dir() or not _TOPIC.match(topic_dir.name):
                continue
            for path in sorted(topic_dir.iterdir()):
                if path.is_dir() and path.name.isdigit():
                    yield topic_dir.name, int(path.name), path

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()

    def _partition(self, topic: str, partition: int) -> _Partition:
        state = self._open.get((topic, partition))
        if state is None:
            path = self._path(topic, partition)
            try:
                path.parent.mkdir(exist_ok=True)
                state = _Partition(path)
            except Exception as exc:  # OSError, or rocksdict's Exception (corrupt, locked)
                raise StateError(_message("open", self._name(topic, partition), exc)) from None
            self._open[topic, partition] = state
        return state

    def _path(self, topic: str, partition: int) -> Path:
        if not _TOPIC.match(topic) or partition < 0:
            raise StateError(
                f"no local state for topic {topic!r} partition {partition}: "
                "not a legal Kafka topic name and partition"
            )
        return self._dir / topic / str(partition)

    def _name(self, topic: str, partition: int) -> str:
        path = self._path(topic, partition)
        return f"the local state of topic {topic} partition {partition} at {path}"


def _message(verb: str, what: str, exc: BaseException) -> str:
    return f"cannot {verb} {what} ({_SETTING}): {' '.join(str(exc).split())}"


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
