"""``python -m bench.state_store``: which local store keeps the window state (issue 17).

Three candidates for one access pattern: after every batch, one partition's changed rows
(~100 bytes each, a few thousand sensors) and its metadata record are written atomically and
durably (synced to disk before the call returns); on assignment the whole partition is read
back. Measured per candidate: durable write latency (p50/p99) for 1,000 and 10,000 changed
rows, restore time and the restore's peak RSS for 100,000 and 1,000,000 sensors, disk bytes
per sensor, and whether a writer killed with SIGKILL mid-loop leaves a store that reopens with
its last completed write, rows and metadata together.

- ``rocksdb``: ``processor.state.store.LocalStore`` (the winner): RocksDB through rocksdict,
  one database per partition, rows and metadata in one ``WriteBatch`` written with
  ``sync=True`` (RocksDB's WAL is fsynced).
- ``sqlite``: one file per partition, WAL mode, ``synchronous=FULL``, ``key BLOB PRIMARY
  KEY, value BLOB``; rows and metadata in one transaction.
- ``file``: the partition's whole columnar state (fixed-width keys and values) written as one
  file: temporary file, fsync, rename, fsync of the directory. Its writes cost the whole
  partition, not the changed rows, so they are measured with the partition holding
  ``--partition-sensors`` sensors.

Reads hand back the columnar form the window state is built from (keys and values each one
buffer plus offsets), not a dict of a million objects.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from processor.state.store import LocalStore, StoredRows

KEY_BYTES = 14  # b"sensor-0000042"
VALUE_BYTES = 100  # one open-window row
META = b"meta"


def key(index: int) -> bytes:
    return b"sensor-%07d" % index


#: Window rows are mostly float64 sums and extremes: random bytes, so no store gains by
#: compressing what real rows would not let it compress.
_NOISE = np.random.default_rng(0).bytes(1 << 20)


def value(generation: int, salt: int = 0) -> bytes:
    """A row that says which write it came from in its first 8 bytes."""
    start = (salt * 7919) % (len(_NOISE) - VALUE_BYTES)
    return generation.to_bytes(8, "little") + _NOISE[start : start + VALUE_BYTES - 8]


class Candidate(Protocol):
    def write(self, rows: Mapping[bytes, bytes | None], meta: bytes) -> None: ...
    def read(self) -> tuple[StoredRows, bytes | None]: ...
    def close(self) -> None: ...


class Rocks:
    """The winner, as the processor uses it."""

    def __init__(self, directory: Path) -> None:
        self._store = LocalStore(directory)

    def write(self, rows: Mapping[bytes, bytes | None], meta: bytes) -> None:
        self._store.write("sensor.readings", 0, rows, meta)

    def read(self) -> tuple[StoredRows, bytes | None]:
        return self._store.read("sensor.readings", 0)

    def close(self) -> None:
        self._store.close()


class Sqlite:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(directory / "state.sqlite", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS rows (key BLOB PRIMARY KEY, value BLOB)"
                         " WITHOUT ROWID")  # fmt: skip
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY, value BLOB)")

    def write(self, rows: Mapping[bytes, bytes | None], meta: bytes) -> None:
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO rows VALUES (?, ?)",
                             [(k, v) for k, v in rows.items() if v is not None])  # fmt: skip
        self._db.executemany("DELETE FROM rows WHERE key = ?",
                             [(k,) for k, v in rows.items() if v is None])  # fmt: skip
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (0, ?)", (meta,))
        self._db.execute("COMMIT")

    def read(self) -> tuple[StoredRows, bytes | None]:
        row = self._db.execute("SELECT value FROM meta WHERE id = 0").fetchone()
        return StoredRows.gather(iter(self._db.execute("SELECT key, value FROM rows"))), (
            row[0] if row else None
        )

    def close(self) -> None:
        self._db.close()


class ColumnarFile:
    """The whole partition, fixed-width, in one file replaced atomically on every write."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        self._index: dict[bytes, int] = {}
        self._keys = np.zeros((0, KEY_BYTES), np.uint8)
        self._values = np.zeros((0, VALUE_BYTES), np.uint8)

    def write(self, rows: Mapping[bytes, bytes | None], meta: bytes) -> None:
        # The window state keeps these arrays in memory anyway; updating them is its cost,
        # not the store's, so only the file part would be new work.
        fresh = [k for k in rows if k not in self._index]
        if fresh:
            self._index.update({k: len(self._index) + i for i, k in enumerate(fresh)})
            self._keys = np.concatenate([self._keys, np.frombuffer(b"".join(fresh), np.uint8)
                                         .reshape(-1, KEY_BYTES)])  # fmt: skip
            self._values = np.concatenate(
                [self._values, np.zeros((len(fresh), VALUE_BYTES), np.uint8)]
            )
        changed = [(self._index[k], v) for k, v in rows.items() if v is not None]
        at = np.fromiter((i for i, _ in changed), np.int64, len(changed))
        self._values[at] = np.frombuffer(b"".join(v for _, v in changed), np.uint8).reshape(
            -1, VALUE_BYTES
        )
        header = np.array([len(self._keys), len(meta)], np.int64).tobytes()
        temporary = self._dir / "state.tmp"
        with temporary.open("wb") as handle:
            handle.write(header + meta)
            handle.write(self._keys.tobytes())
            handle.write(self._values.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._dir / "state.bin")
        descriptor = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def read(self) -> tuple[StoredRows, bytes | None]:
        path = self._dir / "state.bin"
        if not path.exists():
            return StoredRows.gather(iter([])), None
        with path.open("rb") as handle:
            count, meta_length = (int(n) for n in np.frombuffer(handle.read(16), np.int64))
            meta = handle.read(meta_length)
            keys, values = bytearray(count * KEY_BYTES), bytearray(count * VALUE_BYTES)
            handle.readinto(keys)
            handle.readinto(values)
        ends = np.arange(1, count + 1, dtype=np.int64)
        return StoredRows(keys, ends * KEY_BYTES, values, ends * VALUE_BYTES), meta

    def close(self) -> None:
        """Nothing is held open between writes."""


CANDIDATES = {"rocksdb": Rocks, "sqlite": Sqlite, "file": ColumnarFile}


def populate(store: Candidate, sensors: int, chunk: int = 100_000) -> None:
    for start in range(0, sensors, chunk):
        rows = {key(i): value(0, i) for i in range(start, min(sensors, start + chunk))}
        store.write(rows, b"%d" % start)


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def write_latency(name: str, root: Path, sensors: int, changed: int, writes: int) -> list[float]:
    """Seconds per durable write of ``changed`` random rows into a partition of ``sensors``."""
    store = CANDIDATES[name](root / f"{name}-write-{changed}")
    populate(store, sensors)
    rng = np.random.default_rng(changed)
    seconds = []
    for generation in range(1, writes + 1):
        chosen = rng.choice(sensors, changed, replace=False)
        rows: dict[bytes, bytes | None] = {key(int(i)): value(generation, int(i)) for i in chosen}
        began = time.perf_counter()
        store.write(rows, b"%d" % generation)
        seconds.append(time.perf_counter() - began)
    store.close()
    return seconds


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def restore_child(name: str, directory: Path) -> None:
    """In a fresh process: read the whole partition, print seconds, rows and peak RSS growth."""
    store = CANDIDATES[name](directory)
    baseline = _vm("VmRSS")
    began = time.perf_counter()
    columns, meta = store.read()
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "rows": len(columns), "meta": (meta or b"").decode(),
                      "peak_growth": _vm("VmHWM") - baseline}))  # fmt: skip


def restore(name: str, root: Path, sensors: int) -> dict[str, float]:
    directory = root / f"{name}-restore-{sensors}"
    store = CANDIDATES[name](directory)
    populate(store, sensors)
    store.close()
    out = subprocess.run([sys.executable, "-m", "bench.state_store", "--restore-child", name,
                          str(directory)], capture_output=True, check=True, text=True)  # fmt: skip
    measured = json.loads(out.stdout)
    assert measured["rows"] == sensors, measured
    measured["disk_per_sensor"] = disk_bytes(directory) / sensors
    return measured


HOT_KEYS = 200  # rewritten by every write of the crash loop


def writer_child(name: str, directory: Path) -> None:
    """Write generation after generation, saying each one once its call has returned."""
    store = CANDIDATES[name](directory)
    for generation in range(1, 1_000_000):
        store.write({key(i): value(generation, i) for i in range(HOT_KEYS)}, b"%d" % generation)
        sys.stdout.write(f"{generation}\n")
        sys.stdout.flush()


def crash(name: str, root: Path, rounds: int) -> list[str]:
    """Kill a writer with SIGKILL after a random number of writes; reopen; check."""
    rng = np.random.default_rng(7)
    findings = []
    for round_ in range(rounds):
        directory = root / f"{name}-crash-{round_}"
        child = subprocess.Popen([sys.executable, "-m", "bench.state_store", "--writer-child",
                                  name, str(directory)], stdout=subprocess.PIPE)  # fmt: skip
        assert child.stdout
        started, last = time.monotonic(), int(child.stdout.readline())
        target = int(rng.integers(5, 200))
        while last < target:
            last = int(child.stdout.readline())
        # a random share of one loop, so that the kill lands anywhere in a write
        time.sleep(rng.uniform(0, (time.monotonic() - started) / (last - 1)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        last = max([last, *map(int, child.stdout.read().split())])
        child.stdout.close()
        store = CANDIDATES[name](directory)
        columns, meta = store.read()
        store.close()
        generation = int(meta or b"0")
        written = {bytes(columns.values[e - VALUE_BYTES : e - VALUE_BYTES + 8])
                   for e in columns.value_ends.tolist()}  # fmt: skip
        consistent = written == {generation.to_bytes(8, "little")} and len(columns) == HOT_KEYS
        ok = consistent and generation in (last, last + 1)
        findings.append(f"killed after {last}, reopened at {generation}: "
                        f"{'consistent' if ok else 'INCONSISTENT'}")  # fmt: skip
    return findings


def _ms(seconds: list[float], share: float) -> str:
    return f"{1000 * float(np.quantile(seconds, share)):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go (a tmpdir)")
    parser.add_argument("--partition-sensors", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=60)
    parser.add_argument("--restore-sizes", default="100000,1000000")
    parser.add_argument("--crash-rounds", type=int, default=5)
    parser.add_argument("--restore-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--writer-child", nargs=2, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.restore_child:
        restore_child(options.restore_child[0], Path(options.restore_child[1]))
        return
    if options.writer_child:
        writer_child(options.writer_child[0], Path(options.writer_child[1]))
        return
    with tempfile.TemporaryDirectory(dir=options.dir) as tmp:
        root = Path(tmp)
        for name in options.candidates.split(","):
            print(f"## {name}")
            for changed in (1_000, 10_000):
                seconds = write_latency(name, root, options.partition_sensors, changed,
                                        options.writes)  # fmt: skip
                print(f"write {changed:>6} rows into {options.partition_sensors:,}: "
                      f"p50 {_ms(seconds, 0.5)} ms, p99 {_ms(seconds, 0.99)} ms, "
                      f"mean {1000 * statistics.fmean(seconds):.1f} ms")  # fmt: skip
            for sensors in map(int, options.restore_sizes.split(",")):
                got = restore(name, root, sensors)
                print(f"restore {sensors:>9,}: {got['seconds']:.2f} s, peak RSS growth "
                      f"{got['peak_growth'] / 2**20:.0f} MiB "
                      f"({got['peak_growth'] / sensors:.0f} B/sensor), "
                      f"disk {got['disk_per_sensor']:.0f} B/sensor")  # fmt: skip
            for line in crash(name, root, options.crash_rounds):
                print(f"kill -9: {line}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
