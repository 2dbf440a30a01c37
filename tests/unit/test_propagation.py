"""processor.propagation: W3C trace context read from record headers and passed on unchanged
when no span is recorded, as OpenTelemetry's no-op tracer propagates an extracted context."""

from __future__ import annotations

import pytest

from processor.core.observer import Unobserved
from processor.geo.spatial import Reprojector
from processor.geo.stage import SpatialStage
from processor.messages.encode import ERROR_HEADER
from processor.messages.propagation import parse_traceparent, passed_on, propagate, upstreams

from .records import process, reading, record

UPSTREAM = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
OTHER = b"00-11111111111111111111111111111111-2222222222222222-00"
STAGE = SpatialStage(Reprojector("EPSG:3857"), 1_048_576)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (UPSTREAM, (TRACE_ID.encode(), b"b7ad6b7169203331", b"01")),
        (b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03-later",
         (TRACE_ID.encode(), b"b7ad6b7169203331", b"01")),
        (b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02",
         (TRACE_ID.encode(), b"b7ad6b7169203331", b"00")),
        (b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", None),
        (b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        (b"00-00000000000000000000000000000000-b7ad6b7169203331-01", None),
        (b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", None),
        (b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", None),
        (b"00-abc-def-01", None),
        (b"02-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff",
         (TRACE_ID.encode(), b"b7ad6b7169203331", b"01")),
        (b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-10",
         (TRACE_ID.encode(), b"b7ad6b7169203331", b"00")),
        (b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x", None),
        (b"0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        (b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n", None),
        (b"", None),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        (None, None),
    ],
)  # fmt: skip
def test_parse_traceparent(value: object, expected: object) -> None:
    assert parse_traceparent(value) == expected


def test_upstreams_reads_the_first_traceparent_header_of_each_record() -> None:
    other = b"00-11111111111111111111111111111111-2222222222222222-00"
    records = [
        record(reading(), 0, headers=[("other", b"x"), ("traceparent", UPSTREAM)]),
        record(reading(), 1, headers=[("Traceparent", UPSTREAM)]),
        record(reading(), 2),
        record(reading(), 3, headers=[("traceparent", b"nope"), ("traceparent", UPSTREAM)]),
        record(reading(), 4, headers=[("traceparent", UPSTREAM)]),
        record(reading(), 5, headers=[("traceparent", other), ("traceparent", UPSTREAM)]),
    ]
    assert [(i, context[0][:4]) for i, context in upstreams(records)] == [
        (0, b"0af7"),
        (4, b"0af7"),
        (5, b"1111"),
    ]


def test_nothing_to_pass_on_means_no_headers_at_all() -> None:
    records = [
        record(reading(), 0),
        record(reading(), 1, headers=[("traceparent", b"garbage"), ("x", b"1")]),
        record(reading(), 2, headers=[("other", UPSTREAM)]),
    ]
    assert propagate(records) is None
    assert passed_on(3, []) is None


def test_each_upstream_context_is_passed_on_in_w3c_version_00() -> None:
    later = b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03-more"
    unsampled = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02"
    records = [
        record(reading(), 0, headers=[("traceparent", UPSTREAM)]),
        record(reading(), 1),
        record(reading(), 2, headers=[("traceparent", later)]),
        record(reading(), 3, headers=[("traceparent", unsampled)]),
        record(reading(), 4, headers=[("traceparent", OTHER)]),
    ]
    assert (
        propagate(records)
        == [
            [("traceparent", UPSTREAM)],
            [],
            [("traceparent", UPSTREAM)],  # a later version: its known fields, sampled bit only
            [("traceparent", UPSTREAM[:-2] + b"00")],
            [("traceparent", OTHER)],
        ]
    )


def test_records_of_one_context_share_one_header_list() -> None:
    records = [
        record(reading(), i, headers=[("traceparent", UPSTREAM if i % 2 else OTHER)])
        for i in range(100)
    ]
    stamps = propagate(records)
    assert stamps is not None
    assert len({id(stamp) for stamp in stamps}) == 2


def test_the_default_observer_passes_the_context_to_outputs_and_dead_letters() -> None:
    records = [
        record(reading(sensor_id="a"), 0, headers=[("traceparent", UPSTREAM)]),
        record(reading(sensor_id="b"), 1),
        record(reading(sensor_id="c"), 2, headers=[("traceparent", OTHER), ("x", b"1")]),
        record(b"not json", 3, headers=[("x", b"2"), ("traceparent", UPSTREAM)]),
        record(b"not json", 4, headers=[("x", b"3")]),
    ]
    batch = Unobserved().begin(records, [0])
    result = process(STAGE, records, batch.stamps)
    batch.end(result.result, 0.0, None)
    assert [headers for _, _, headers in result.points] == [
        [("traceparent", UPSTREAM)],
        [],
        [("traceparent", OTHER)],
    ]
    assert [headers for _, _, headers in result.dead_letters] == [
        [("x", b"2"), ("traceparent", UPSTREAM), (ERROR_HEADER, b"invalid_json")],
        [("x", b"3"), (ERROR_HEADER, b"invalid_json")],
    ]


def test_the_default_observer_stamps_nothing_on_a_batch_without_trace_context() -> None:
    assert Unobserved().begin([record(reading(), i) for i in range(10)], [0]).stamps is None
