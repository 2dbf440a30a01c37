"""Durations as operators write them (``90s``, ``5m``, ``1h``, ``1h30m``), as milliseconds.

One parser for every duration setting, so that ``PROCESSOR_WINDOW=5m`` and a config file's
``window = "5m"`` mean the same and a typo is named the same way.
"""

from __future__ import annotations

import re
from typing import Annotated, get_args

from pydantic import BeforeValidator
from pydantic.fields import FieldInfo

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d))+")


def parse_ms(text: object) -> object:
    """``"1h30m"`` -> 5_400_000; an int is taken as milliseconds already; else a ValueError
    that names the accepted form (pydantic turns it into the setting's one-line error)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    value = str(text).strip().lower().replace(" ", "")
    if not _WHOLE.fullmatch(value):
        raise ValueError(f"{text!r} is not a duration such as 60s, 5m, 1h or 1h30m")
    return sum(int(amount) * _UNITS_MS[unit] for amount, unit in _PART.findall(value))


def format_ms(ms: int) -> str:
    """The shortest spelling ``parse_ms`` reads back: 5_400_000 -> ``"1h30m"``."""
    if ms == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        amount, ms = divmod(ms, _UNITS_MS[unit])
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


#: A duration setting, in milliseconds.
DurationMs = Annotated[int, BeforeValidator(parse_ms)]


def is_duration(field: FieldInfo) -> bool:
    """The setting is a :data:`DurationMs`, optional or not (for help texts and tests)."""
    found = list(field.metadata)
    for arg in get_args(field.annotation):
        found += getattr(arg, "__metadata__", ())
    return any(getattr(marker, "func", None) is parse_ms for marker in found)
