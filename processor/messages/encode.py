"""Records to output bytes: points and dead letters as the contracts (README,
docs/design.md) define them, encoded by msgspec; the decoding side is ``processor.codec``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import msgspec

from processor.messages.codec import Consumed, DeadLetterCode, Headers, Located, Where

#: The header naming a dead letter's error code.
ERROR_HEADER = "dlq.error.code"

#: What a dead letter keeps of an input at or over the maximum payload size: enough to see
#: what it was, small enough for any broker; the source names the whole record.
CUT_PAYLOAD_KEPT_BYTES = 4096

#: How every point ends: its quality control as the stage leaves it, no test run (``qc`` empty,
#: ``qc_flag`` 2, "not evaluated"). With QC on, the state replaces this ending with the
#: point's flags (:mod:`processor.qc.endings`), so it must stay the last bytes of a point.
NO_QC = b',"qc":{},"qc_flag":2}'

_encoder = msgspec.json.Encoder()


class _Source(msgspec.Struct):
    topic: str
    partition: int
    offset: int


class _Appended(msgspec.Struct, omit_defaults=True):
    """The fields a point adds to its input document."""

    x: float
    y: float
    crs: str
    source: _Source
    regions: list[str] | None = None


def source_of(where: Located) -> dict[str, Any]:
    return {"topic": where.topic, "partition": where.partition, "offset": where.offset}


def encode_point(  # noqa: PLR0917 - hot path: positional on purpose
    document: dict[str, Any] | bytes,
    x: float,
    y: float,
    crs: str,
    where: Located,
    regions: list[str] | None = None,
) -> bytes:
    """The output contract: the input document plus x, y, crs, source (and regions), then
    the quality control of no test (:data:`NO_QC`)."""
    if isinstance(document, bytes):
        added = _Appended(x, y, crs, _Source(where.topic, where.partition, where.offset), regions)
        head = document[: document.rindex(b"}")]
        return b"%s,%s%s" % (head, _encoder.encode(added)[1:-1], NO_QC)
    document.pop("qc", None)  # the processor's, last: see NO_QC
    document.pop("qc_flag", None)
    document["x"] = x
    document["y"] = y
    document["crs"] = crs
    document["source"] = source_of(where)
    if regions is not None:
        document["regions"] = regions
    return _encoder.encode(document)[:-1] + NO_QC


def encode_points(  # noqa: PLR0917 - aligned columns, positional on purpose
    documents: list[dict[str, Any] | bytes],
    x: list[float],
    y: list[float],
    crs: str,
    where: tuple[list[str], list[int], list[int]],
    regions: list[list[str]] | None = None,
) -> list[bytes]:
    """Output values for a batch of accepted rows (all lists aligned; ``where`` holds the
    topic, partition and offset columns).

    Plain records take the fast path: their bytes with the new fields appended, joined from
    pieces; the numbers are formatted by one msgspec call per column rather than per record,
    and the ``source`` prefix once per run of one partition (rows come in such runs).
    """
    if not documents:
        return []
    ending = b"}" + NO_QC  # the source's brace, then the point's QC
    x_text = _encoder.encode(x)[1:-1].split(b",")
    y_text = _encoder.encode(y)[1:-1].split(b",")
    crs_text = _encoder.encode(crs)
    topics, partitions, offsets = where
    offset_text = _encoder.encode(offsets)[1:-1].split(b",")
    values: list[bytes] = []
    append, join = values.append, b"".join
    run: tuple[str, int] | None = None
    source = b""
    for i, document in enumerate(documents):
        topic, partition = topics[i], partitions[i]
        if not isinstance(document, bytes):
            tags = regions[i] if regions is not None else None
            append(
                encode_point(document, x[i], y[i], crs, Where(topic, partition, offsets[i]), tags)
            )
            continue
        if run != (topic, partition):
            run = (topic, partition)
            source = b',"crs":%s,"source":{"topic":%s,"partition":%d,"offset":' % (
                crs_text,
                _encoder.encode(topic),
                partition,
            )
        head = document[: document.rindex(b"}")]
        if regions is not None:
            head = b'%s,"regions":%s' % (head, _encoder.encode(regions[i]))
        append(
            join((head, b',"x":', x_text[i], b',"y":', y_text[i], source, offset_text[i], ending))
        )
    return values


def encode_dead_letter(
    record: Consumed, code: DeadLetterCode, message: str, max_bytes: int
) -> bytes:
    """The dead-letter contract: the reason, where it came from, and the complete payload.

    Only a payload of ``max_bytes`` or more is cut, to its first ``CUT_PAYLOAD_KEPT_BYTES``
    (less a trailing partial UTF-8 character), and then the letter says so: it could exceed
    the broker's message size whole, and its size and SHA-256 identify the original.
    """
    letter: dict[str, Any] = {
        "error": {"code": code.value, "message": message},
        "source": source_of(record),
    }
    payload = record.value
    if payload is None:
        letter["payload"] = None
        return _encoder.encode(letter)
    kept = payload
    if len(payload) >= max_bytes and len(payload) > CUT_PAYLOAD_KEPT_BYTES:
        kept = payload[:CUT_PAYLOAD_KEPT_BYTES]
        letter["payload_truncated"] = True
        letter["payload_size"] = len(payload)
        letter["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    text = _utf8(kept, cut=kept is not payload)
    if text is not None:
        letter["payload"] = text
    else:
        letter["payload_b64"] = base64.b64encode(kept).decode("ascii")
    return _encoder.encode(letter)


def dead_letter_headers(own: Headers, stamp: Headers, code: DeadLetterCode) -> Headers:
    """A dead letter's headers: its input's own, those named in ``stamp`` replaced by
    ``stamp`` (shared, never mutated), then the error code."""
    replaced = {name for name, _ in stamp}
    kept = [header for header in own if header[0] not in replaced]
    return [*kept, *stamp, (ERROR_HEADER, code.value.encode())]


def _utf8(data: bytes, *, cut: bool) -> str | None:
    """``data`` as text, or None if it is not UTF-8; a ``cut`` prefix may end mid-character,
    and then loses that character's first bytes rather than becoming base64."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if cut and error.reason == "unexpected end of data":
            return data[: error.start].decode("utf-8")
        return None
