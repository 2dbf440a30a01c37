"""``processor config``: the effective settings, each with where its value came from.

The printout is a TOML file (secrets masked, unset settings as comments), so it doubles as
a starting point for ``--config``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr

from processor.config import UNSET, Settings

MASK = "********"
_MAX_WIDTH = 48


def render(settings: Settings, sources: dict[str, str]) -> str:
    """The settings as TOML; the ``qc`` tables last, as ``[qc.<field>]`` tables (a table
    ends the file's top-level keys)."""
    rows = [
        (_assignment(name, getattr(settings, name)), sources[name])
        for name in Settings.model_fields
        if name != "qc"
    ]
    width = min(_MAX_WIDTH, max(len(text) for text, _ in rows if not text.startswith("#")))
    lines = ["# effective settings of the processor; after '#': where each value came from"]
    lines += [f"{text:<{width}}  # {source}" for text, source in rows]
    for field, table in sorted(settings.qc.items()):
        lines += ["", f"[qc.{field}]  # {sources['qc']}"]
        lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
    return "\n".join(lines)


def _assignment(name: str, value: object) -> str:
    if value is None:
        return f"# {name} unset: {UNSET[name]}"
    return f"{name} = {_toml(value)}"


def _toml(value: object) -> str:
    if isinstance(value, SecretStr):
        return json.dumps(MASK)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value)  # a JSON string is a TOML basic string
