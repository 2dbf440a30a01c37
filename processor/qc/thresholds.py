"""A field's QC thresholds, the settings the QC state depends on, and their parsing from
``[qc.<field>]`` tables (the config file's; a profile's defaults are the same tables).

Units are the field's own; rates are per second, as ``ioos_qc``'s. The flat line counts
repeated readings (QARTOD's REP_CNT_SUSPECT / REP_CNT_FAIL), not seconds: a stream cannot
know the median interval of a whole series, from which ``ioos_qc`` turns seconds into counts
(docs/qc.md). Errors are ``ValueError("qc.<field>.<key>: why")``: the configuration's
one-line message names the key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

Span = tuple[float, float]
Tables = dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class FieldThresholds:
    """One field's tests; a test runs when its thresholds are set (all are optional)."""

    gross_range_fail: Span | None = None  # the sensor's limits: outside is FAIL
    gross_range_suspect: Span | None = None  # the user's limits, within the sensor's
    spike_suspect: float | None = None  # |value - reference| above this: SUSPECT
    spike_fail: float | None = None
    rate_of_change_suspect: float | None = None  # |Δvalue / Δt| per second
    rate_of_change_fail: float | None = None
    flat_line_suspect: int | None = None  # readings the value stays within the tolerance
    flat_line_fail: int | None = None
    flat_line_tolerance: float | None = None

    def __post_init__(self) -> None:
        for span in ("gross_range_fail", "gross_range_suspect"):
            value = getattr(self, span)
            if value is not None and not (
                len(value) == 2 and all(map(math.isfinite, value)) and value[0] <= value[1]
            ):
                raise ValueError(f"{span}: must be [low, high], finite, low <= high")
        fail, suspect = self.gross_range_fail, self.gross_range_suspect
        if suspect is not None and (fail is None or suspect[0] < fail[0] or suspect[1] > fail[1]):
            raise ValueError("gross_range_suspect: must lie within gross_range_fail")
        for name in ("spike_suspect", "spike_fail", "rate_of_change_suspect",
                     "rate_of_change_fail", "flat_line_tolerance"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a number > 0")
        if self.rate_of_change_fail is not None and self.rate_of_change_suspect is None:
            raise ValueError("rate_of_change_fail: needs rate_of_change_suspect too")
        flat = (self.flat_line_suspect, self.flat_line_fail, self.flat_line_tolerance)
        if any(v is not None for v in flat) and any(v is None for v in flat):
            raise ValueError(
                "flat_line_suspect: flat_line_suspect, flat_line_fail and flat_line_tolerance "
                "go together"
            )
        for name in ("flat_line_suspect", "flat_line_fail"):
            count = getattr(self, name)
            if count is not None and not 1 <= count <= MAX_FLAT_LINE:
                raise ValueError(f"{name}: must be a count of readings, 1 to {MAX_FLAT_LINE}")

    @property
    def runs(self) -> tuple[bool, bool, bool, bool]:
        """Which tests run, in :data:`processor.qc.flags.TESTS` order."""
        return (
            self.gross_range_fail is not None,
            self.spike_suspect is not None or self.spike_fail is not None,
            self.rate_of_change_suspect is not None,
            self.flat_line_tolerance is not None,
        )

    @property
    def depth(self) -> int:
        """How many earlier readings the flat line looks at (0 without it)."""
        return max(self.flat_line_suspect or 0, self.flat_line_fail or 0)

    def table(self) -> dict[str, Any]:
        """The thresholds set, as a ``[qc.<field>]`` table spells them."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in asdict(self).items()
            if value is not None
        }


#: The longest flat line window, in readings: the state keeps this many values a field.
MAX_FLAT_LINE = 1_000
KEYS = tuple(f.name for f in fields(FieldThresholds))


@dataclass(frozen=True, slots=True)
class QcSpec:
    """The QC settings: its fields (the ``values`` columns, in this order) and their
    thresholds. A state restores under any spec with the same :meth:`history`."""

    fields: tuple[str, ...]
    thresholds: tuple[FieldThresholds, ...]

    def __post_init__(self) -> None:
        if len(self.fields) != len(self.thresholds) or len(set(self.fields)) != len(self.fields):
            raise ValueError("QC fields must be distinct, one thresholds each")
        if not all(any(th.runs) for th in self.thresholds):
            raise ValueError("every QC field needs a test: leave the others out")

    @classmethod
    def of(cls, by_field: Mapping[str, FieldThresholds]) -> QcSpec:
        """The spec of the fields that have a test (in name order)."""
        names = sorted(name for name, th in by_field.items() if any(th.runs))
        return cls(tuple(names), tuple(by_field[name] for name in names))

    @property
    def depth(self) -> int:
        """Earlier values the state keeps per field (at least one: the previous value)."""
        return max([1, *(th.depth for th in self.thresholds)])

    def describe(self) -> str:
        """The thresholds as one canonical JSON text."""
        tables = {name: th.table() for name, th in zip(self.fields, self.thresholds, strict=True)}
        return json.dumps(tables, sort_keys=True, separators=(",", ":"))

    def history(self) -> str:
        """What a saved history depends on, as one canonical JSON text: its fields and how
        many values it keeps of each. Thresholds may change over a saved history (the new
        ones judge the readings after it), and a history may be restored shorter (its latest
        values); the fields may not change, nor the history grow."""
        return history_text(self.fields, self.depth)

    def fingerprint(self) -> int:
        """64 bits of :meth:`history`'s hash: each sensor's row carries it."""
        return history_fingerprint(self.fields, self.depth)


def history_text(fields: tuple[str, ...], depth: int) -> str:
    """:meth:`QcSpec.history` of a history of ``fields`` keeping ``depth`` values each."""
    return json.dumps({"fields": list(fields), "depth": depth}, separators=(",", ":"))


def history_fingerprint(fields: tuple[str, ...], depth: int) -> int:
    """64 bits of :func:`history_text`'s hash."""
    digest = hashlib.blake2b(history_text(fields, depth).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def parse_tables(raw: object) -> Tables:
    """``{field: {key: value}}`` from a config file's ``qc`` table or its JSON text (an
    environment variable or a flag), keys checked; the values are checked by
    :func:`thresholds_of`."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"qc: not JSON: {e}") from None
    if not isinstance(raw, Mapping):
        raise ValueError("qc: must be tables of thresholds, one per field ([qc.<field>])")  # noqa: TRY004 - pydantic reports ValueErrors
    tables: Tables = {}
    for field, table in raw.items():
        if not isinstance(table, Mapping):
            raise ValueError(f"qc.{field}: must be a table of thresholds")  # noqa: TRY004
        for key in table:
            if key not in KEYS:
                match = difflib.get_close_matches(str(key), KEYS, n=1)
                hint = f" (did you mean {match[0]}?)" if match else ""
                raise ValueError(f"qc.{field}.{key}: not a QC threshold{hint}")
        tables[str(field)] = dict(table)
    return tables


def merged(defaults: Tables, overrides: Tables) -> Tables:
    """``overrides`` over ``defaults``, key by key within each field's table; a key set to
    ``false`` in ``overrides`` is unset (a profile's test switched off), and a field left
    with no key is left out."""
    out: Tables = {}
    for field in {**defaults, **overrides}:
        table = {**defaults.get(field, {}), **overrides.get(field, {})}
        kept = {key: value for key, value in table.items() if value is not False}
        if kept:
            out[field] = kept
    return out


def thresholds_of(tables: Tables) -> dict[str, FieldThresholds]:
    """Each field's :class:`FieldThresholds`; ``ValueError("qc.<field>.<key>: why")``."""
    out: dict[str, FieldThresholds] = {}
    for field, table in tables.items():
        values = {key: _value(field, key, value) for key, value in table.items()}
        try:
            out[field] = FieldThresholds(**values)
        except ValueError as e:
            raise ValueError(f"qc.{field}.{e}") from None
    return out


def _value(field: str, key: str, value: object) -> Any:
    """A threshold's value as its type needs it (TOML and JSON give ints, floats, lists)."""

    def number(item: object) -> float:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ValueError(f"qc.{field}.{key}: {item!r} is not a number")  # noqa: TRY004
        return float(item)

    if key.startswith("gross_range"):
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise ValueError(f"qc.{field}.{key}: must be [low, high]")
        return (number(value[0]), number(value[1]))
    if key in ("flat_line_suspect", "flat_line_fail"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"qc.{field}.{key}: must be a whole number of readings")
        return value
    return number(value)
