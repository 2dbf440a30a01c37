"""QARTOD flag codes and how test flags combine into a field's flag and a reading's.

A field's flag is the worst of its tests' and a reading's ``qc_flag`` the worst of its
fields', worst meaning 4 > 3 > 1 > 2 > 9 (``ioos_qc.qartod.qartod_compare``'s precedence): a
missing value (9) only wins when nothing else was evaluated, and "not evaluated" (2) loses
to any verdict. Failed tests are a ``uint8`` bitmask, one bit per test in :data:`TESTS`
order, set only for tests that flagged 3 or 4; :func:`failed_names` spells it out.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]

#: The tests, in bit order of the failed-tests mask.
TESTS = ("gross_range", "spike", "rate_of_change", "flat_line")
#: A test not configured for a field: no flag (it takes no part in the worst).
NOT_RUN = 0


class Flag(IntEnum):
    """QARTOD's flag codes."""

    PASS = 1
    NOT_EVALUATED = 2
    SUSPECT = 3
    FAIL = 4
    MISSING = 9


_RANK = np.full(256, -1, dtype=np.int8)  # NOT_RUN and unknown codes rank below everything
_RANK[[Flag.MISSING, Flag.NOT_EVALUATED, Flag.PASS, Flag.SUSPECT, Flag.FAIL]] = np.arange(5)
_BY_RANK = np.array(
    [Flag.MISSING, Flag.NOT_EVALUATED, Flag.PASS, Flag.SUSPECT, Flag.FAIL], dtype=np.uint8
)
_NAMES = tuple(
    tuple(name for bit, name in enumerate(TESTS) if mask >> bit & 1) for mask in range(16)
)


def worst(flags: U8, axis: int) -> U8:
    """The worst flag along ``axis`` (codes :data:`NOT_RUN` ignored; all of them: 2)."""
    rank = _RANK[flags].max(axis=axis, initial=-1)
    out: U8 = np.where(rank < 0, np.uint8(Flag.NOT_EVALUATED), _BY_RANK[np.maximum(rank, 0)])
    return out.astype(np.uint8)


#: A field's test flags as one number: the sum of each test's code (0 to 9) times its
#: weight, so that :func:`packed_flags` combines them with two table look-ups (a rank per
#: test and reductions cost 15 times more on a batch).
WEIGHTS = 10 ** np.arange(len(TESTS), dtype=np.uint16)
_DIGITS = np.arange(10 ** len(TESTS))[:, None] // WEIGHTS % 10
_FLAG_OF = worst(_DIGITS.astype(np.uint8), axis=1)
_FAILED_OF = (((_DIGITS == Flag.SUSPECT) | (_DIGITS == Flag.FAIL)) << np.arange(len(TESTS))).sum(
    axis=1, dtype=np.uint8
)


def packed_flags(packed: npt.NDArray[np.uint16]) -> tuple[U8, U8]:
    """The flag and failed-tests bitmask of fields whose test flags are packed by
    :data:`WEIGHTS`."""
    return _FLAG_OF[packed], _FAILED_OF[packed]


def field_flags(test_flags: U8) -> tuple[U8, U8]:
    """Per (reading, field): the flag and the failed-tests bitmask, from ``test_flags`` of
    shape ``(readings, fields, len(TESTS))`` (:data:`NOT_RUN` where a test is not set)."""
    codes = np.where(test_flags > 9, np.uint8(NOT_RUN), test_flags)  # unknown: as not run
    return packed_flags((codes * WEIGHTS).sum(axis=-1, dtype=np.uint16))


def reading_flags(flags: U8) -> U8:
    """Each reading's ``qc_flag`` from its fields' flags ``(readings, fields)``: 2 without
    fields (no test configured), 9 only when every field is missing."""
    return worst(flags, axis=1)


def failed_names(mask: int) -> tuple[str, ...]:
    """The tests a failed-tests bitmask names, in :data:`TESTS` order."""
    return _NAMES[mask]
