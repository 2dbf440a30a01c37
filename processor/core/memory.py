"""The memory budget and how much of it is used, in a way that means something in a container.

Budget: ``PROCESSOR_MEMORY_LIMIT_MB`` if set, else the cgroup limit (v2, then v1) when there is
one, else a quarter of the machine. Usage: the RSS of the process and of the stage workers it
was told about, or, when the budget is the cgroup's, the cgroup working set (usage minus
inactive page cache, as the kubelet counts it), since that is what the OOM killer compares
with the limit. Not every child: whoever runs the processor in-process (the demo) may have
children of its own, such as the embedded broker, that are no part of its budget.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

MIB = 1024 * 1024
_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge number
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class CgroupFiles:
    """Where a cgroup's memory limit, usage and stats live (v1 or v2 names)."""

    limit: Path
    usage: Path
    stat: Path
    inactive_key: str

    def read_limit(self) -> int | None:
        try:
            text = self.limit.read_text().strip()
        except OSError:
            return None
        if text == "max" or not text.isdigit() or int(text) >= _UNLIMITED:
            return None
        return int(text)

    def working_set(self) -> int:
        usage = int(self.usage.read_text().strip())
        inactive = 0
        for line in self.stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == self.inactive_key:
                inactive = int(value)
                break
        return max(0, usage - inactive)


def cgroup_path(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> Path:
    """This process's cgroup v2 directory (``root`` itself when it has none of its own)."""
    try:
        for line in proc_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                return root / line[3:].lstrip("/")
    except OSError:
        pass
    return root


def find_cgroup(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> CgroupFiles | None:
    """The cgroup files that limit this process, v2 first, or None outside a limit."""
    candidates = [
        CgroupFiles(
            base / "memory.max", base / "memory.current", base / "memory.stat", "inactive_file"
        )
        for base in dict.fromkeys([cgroup_path(root, proc_cgroup), root])
    ]
    v1 = root / "memory"
    candidates.append(
        CgroupFiles(
            v1 / "memory.limit_in_bytes",
            v1 / "memory.usage_in_bytes",
            v1 / "memory.stat",
            "total_inactive_file",
        )
    )
    for files in candidates:
        if files.read_limit() is not None:
            return files
    return None


class MemoryProbe:
    """Budget fixed at start; ``used()`` is cheap enough to sample a few times a second."""

    def __init__(self, limit_mb: int | None, cgroup: CgroupFiles | None = None) -> None:
        self._process = psutil.Process()
        self._workers: tuple[psutil.Process, ...] = ()
        self._cgroup: CgroupFiles | None = None
        if limit_mb is not None:
            self.budget = limit_mb * MIB
            self.source = "setting"
        elif cgroup is not None and (limit := cgroup.read_limit()) is not None:
            self.budget = limit
            self._cgroup = cgroup
            self.source = "cgroup"
        else:
            self.budget = psutil.virtual_memory().total // 4
            self.source = "machine"

    def own(self) -> int:
        """This process's RSS alone."""
        return int(self._process.memory_info().rss)

    def count(self, pids: Iterable[int]) -> None:
        """Count these processes (the stage workers) with this one from now on."""
        self._workers = tuple(psutil.Process(pid) for pid in pids)

    @property
    def workers(self) -> list[int]:
        """The pids counted with this process."""
        return [worker.pid for worker in self._workers]

    def used(self) -> int:
        if self._cgroup is not None:
            try:
                return self._cgroup.working_set()
            except (OSError, ValueError):
                pass
        used = self.own()
        for worker in self._workers:
            with contextlib.suppress(psutil.Error):  # exited since counted
                used += int(worker.memory_info().rss)
        return used
