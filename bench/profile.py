"""Top costs from py-spy's collapsed stacks (``--format raw``): self and inclusive time."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

#: Frames every sample passes through: left out of the inclusive table.
_WRAPPERS = ("asyncio/", "<frozen runpy>", "threading.py", "futures/thread.py", "bench/worker.py")
_LINE = re.compile(r" \(([^()]*?)(?::\d+)?\)$")  # "func (path/file.py:123)" -> func, path


def _function(frame: str) -> str:
    """``func (path:line)`` as ``func (dir/file.py)``: lines of one function add up."""
    match = _LINE.search(frame)
    if match is None:
        return frame
    path = match.group(1)
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{frame[: match.start()]} ({short})"


def top_costs(stacks: Path, count: int = 20) -> str:
    """A Markdown report of the functions with the most samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        frames = [_function(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for function in set(frames):
            if not any(wrapper in function for wrapper in _WRAPPERS):
                inclusive[function] += n
    if not total:
        return "profile: no samples"
    lines = [f"py-spy --gil: {total} samples of the thread holding the GIL", ""]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        lines += [f"| {title} % | function |", "|---:|---|"]
        lines += [f"| {n / total:.1%} | `{name}` |" for name, n in counter.most_common(count)]
        lines.append("")
    return "\n".join(lines)
