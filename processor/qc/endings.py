"""The flags as the points carry them: the JSON that ends each point,
``,"qc":{"<field>":{"flag":F,"failed":["<test>",...]},...},"qc_flag":W}``.

A batch's readings share a handful of flag combinations (most pass everything), so each
distinct combination is encoded once and every reading looks its ending up: no JSON is
built per reading.
"""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt

from processor.qc.flags import U8, failed_names, reading_flags

_encode = msgspec.json.Encoder().encode


def point_endings(fields: tuple[str, ...], flag: U8, failed: U8) -> list[bytes]:
    """Per reading, the bytes that end its point (after its last other key, in place of
    its closing brace): ``flag`` and ``failed`` are ``(readings, len(fields))``, as
    :class:`processor.qc.PartitionQc` gives them."""
    if not flag.shape[0]:
        return []
    width = len(fields)
    first, which = _distinct_rows(np.hstack((flag, failed)))
    combos = np.hstack((flag[first], failed[first]))
    worst = reading_flags(flag[first]).tolist()
    endings = [
        b"," + _encode({"qc": _qc(fields, combo[:width], combo[width:]), "qc_flag": top})[1:]
        for combo, top in zip(combos.tolist(), worst, strict=True)
    ]
    return [endings[i] for i in which.tolist()]


def _distinct_rows(codes: U8) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The first row of each distinct row of ``codes``, and each row's distinct index. Rows
    of up to 8 bytes are compared as one integer (``np.unique(axis=0)`` sorts them as
    structured items, 20 times slower)."""
    n, width = codes.shape
    if width > 8:
        _, first, which = np.unique(codes, axis=0, return_index=True, return_inverse=True)
    else:
        padded = np.zeros((n, 8), dtype=np.uint8)
        padded[:, :width] = codes
        _, first, which = np.unique(
            padded.view(np.uint64).reshape(n), return_index=True, return_inverse=True
        )
    return first, which.reshape(-1)


def _qc(fields: tuple[str, ...], flags: list[int], failed: list[int]) -> dict[str, object]:
    return {
        name: {"flag": code, "failed": list(failed_names(mask))}
        for name, code, mask in zip(fields, flags, failed, strict=True)
    }
