"""processor.memory: the memory budget from a setting, a cgroup (v2 or v1) or the machine."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from processor.core.memory import MIB, CgroupFiles, MemoryProbe, find_cgroup

V2_STAT = "anon 1000\nfile 5000\nactive_file 1000\ninactive_file 4000\nshmem 0\n"
V1_STAT = "cache 5000\nrss 1000\ninactive_file 99\ntotal_inactive_file 3000\n"


def v2_tree(
    tmp_path: Path, limit: str, relative: str = "", usage: int = 50_000, stat: str = V2_STAT
) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    group = root / relative if relative else root
    group.mkdir(parents=True)
    (group / "memory.max").write_text(limit + "\n")
    (group / "memory.current").write_text(f"{usage}\n")
    (group / "memory.stat").write_text(stat)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::/{relative}\n")
    return root, proc


def v1_tree(tmp_path: Path, limit: str, usage: int = 80_000) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    group = root / "memory"
    group.mkdir(parents=True)
    (group / "memory.limit_in_bytes").write_text(limit + "\n")
    (group / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (group / "memory.stat").write_text(V1_STAT)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("12:memory:/docker/abc123\n11:cpu,cpuacct:/docker/abc123\n")
    return root, proc


# find_cgroup --------------------------------------------------------------------------


def test_v2_limit_at_the_root(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "536870912")
    files = find_cgroup(root, proc)
    assert files is not None
    assert files.limit == root / "memory.max"
    assert files.read_limit() == 536_870_912
    assert files.inactive_key == "inactive_file"


def test_v2_limit_in_a_nested_group(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "268435456", relative="kubepods.slice/pod-1/ctr")
    files = find_cgroup(root, proc)
    assert files is not None
    assert files.limit == root / "kubepods.slice/pod-1/ctr/memory.max"
    assert files.read_limit() == 268_435_456


def test_v2_max_means_no_limit(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "max")
    assert find_cgroup(root, proc) is None


def test_v2_nested_max_falls_back_to_a_root_limit(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "max", relative="app")
    (root / "memory.max").write_text("1073741824\n")
    files = find_cgroup(root, proc)
    assert files is not None
    assert files.read_limit() == 1_073_741_824


def test_v1_limit(tmp_path: Path) -> None:
    root, proc = v1_tree(tmp_path, "536870912")
    files = find_cgroup(root, proc)
    assert files is not None
    assert files.limit == root / "memory" / "memory.limit_in_bytes"
    assert files.read_limit() == 536_870_912
    assert files.inactive_key == "total_inactive_file"


@pytest.mark.parametrize("huge", ["9223372036854771712", "18446744073709551615"])
def test_v1_huge_number_means_unlimited(tmp_path: Path, huge: str) -> None:
    root, proc = v1_tree(tmp_path, huge)
    assert find_cgroup(root, proc) is None


def test_no_cgroup_at_all(tmp_path: Path) -> None:
    assert find_cgroup(tmp_path / "nothing", tmp_path / "no-proc-file") is None


@pytest.mark.parametrize("text", ["", "garbage", "-1", "12.5"])
def test_unparseable_limit_is_no_limit(tmp_path: Path, text: str) -> None:
    root, proc = v2_tree(tmp_path, text)
    assert find_cgroup(root, proc) is None


def test_v2_preferred_over_v1(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "1000000")
    (root / "memory").mkdir()
    (root / "memory" / "memory.limit_in_bytes").write_text("2000000\n")
    files = find_cgroup(root, proc)
    assert files is not None
    assert files.read_limit() == 1_000_000


# working set --------------------------------------------------------------------------


def test_v2_working_set_subtracts_inactive_file(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "1000000", usage=50_000)
    files = find_cgroup(root, proc)
    assert files is not None
    assert files.working_set() == 50_000 - 4_000


def test_v1_working_set_subtracts_total_inactive_file(tmp_path: Path) -> None:
    root, proc = v1_tree(tmp_path, "1000000", usage=80_000)
    files = find_cgroup(root, proc)
    assert files is not None
    assert files.working_set() == 80_000 - 3_000


def test_working_set_never_negative(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "1000000", usage=100, stat="inactive_file 4000\n")
    files = find_cgroup(root, proc)
    assert files is not None
    assert files.working_set() == 0


def test_working_set_without_inactive_line(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "1000000", usage=1234, stat="anon 1\n")
    files = find_cgroup(root, proc)
    assert files is not None
    assert files.working_set() == 1234


# MemoryProbe --------------------------------------------------------------------------


def test_probe_with_a_setting() -> None:
    probe = MemoryProbe(limit_mb=64)
    assert probe.budget == 64 * MIB
    assert probe.source == "setting"
    used = probe.used()
    assert isinstance(used, int)
    assert used > 0


def test_setting_beats_the_cgroup(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "1000000")
    probe = MemoryProbe(128, find_cgroup(root, proc))
    assert probe.budget == 128 * MIB
    assert probe.source == "setting"


def test_probe_uses_the_cgroup_limit_and_working_set(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "536870912", usage=300_000_000)
    probe = MemoryProbe(None, find_cgroup(root, proc))
    assert probe.budget == 536_870_912
    assert probe.source == "cgroup"
    assert probe.used() == 300_000_000 - 4_000
    (root / "memory.current").write_text("400000000\n")
    assert probe.used() == 400_000_000 - 4_000


def test_probe_falls_back_to_rss_when_cgroup_unreadable(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "536870912")
    probe = MemoryProbe(None, find_cgroup(root, proc))
    (root / "memory.current").unlink()
    used = probe.used()
    assert isinstance(used, int)
    assert used > 0


def test_probe_without_limits_uses_a_quarter_of_the_machine() -> None:
    probe = MemoryProbe(None, None)
    assert probe.source == "machine"
    assert probe.budget == psutil.virtual_memory().total // 4
    assert probe.used() > 0


def test_probe_with_unlimited_cgroup_uses_the_machine(tmp_path: Path) -> None:
    root, _ = v2_tree(tmp_path, "max")
    files = CgroupFiles(
        root / "memory.max", root / "memory.current", root / "memory.stat", "inactive_file"
    )
    probe = MemoryProbe(None, files)
    assert probe.source == "machine"


# what counts: this process and the workers it was given ------------------------------


@contextlib.contextmanager
def holding(mib: int) -> Iterator[psutil.Process]:
    """A real child process with ``mib`` MiB resident (written, not just reserved)."""
    code = (
        f"import sys; held = bytes(range(256)) * ({mib} * 4096); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline() == "ready\n"
        try:
            yield psutil.Process(child.pid)
        finally:
            child.stdin.close()
            child.wait(30)


def test_the_probe_counts_the_workers_it_is_given_and_no_other_child() -> None:
    probe = MemoryProbe(limit_mb=4096)
    with holding(96) as stranger, holding(64) as worker:
        assert stranger.memory_info().rss > 96 * MIB  # a broker of the demo, say
        assert probe.used() - probe.own() < 16 * MIB  # the children are not its workers
        probe.count([worker.pid])
        counted = probe.used() - probe.own()
        assert worker.memory_info().rss - 16 * MIB < counted < worker.memory_info().rss + 16 * MIB
    assert probe.used() - probe.own() < 16 * MIB  # a worker that exited counts no more
