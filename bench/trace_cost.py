"""``python -m bench.trace_cost``: what trace context costs per record (the README's Traces table).

Per case, the observer's work for one batch (``begin`` and ``end``: span, links and the
header stamps) on 2,000 sample readings read back through aiokafka's record parser, as the
consumer hands them over (best of ``--repeat`` runs); and what encoding the stamps adds to
the outputs. Microseconds per record; on a shared machine, read the rows against each other.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from opentelemetry.sdk.trace import SpanProcessor

from processor.config import Settings
from processor.kafka.batches import KeyPartitioner, encode_batches
from processor.messages.jobs import BatchSpec
from processor.telemetry.otel import Telemetry
from processor.tools.synthetic import readings

BATCH = 2_000
_HEADERS: dict[str, Callable[[int], list[tuple[str, bytes]]]] = {
    "inputs without traceparent": lambda i: [],
    "inputs from 10 upstream traces": lambda i: [("traceparent", _context(i % 10))],
    "every input its own upstream trace": lambda i: [("traceparent", _context(i))],
}


def _context(n: int) -> bytes:
    return b"00-%032x-%016x-01" % (0xA000 + n, 0xB000 + n)


def consumed(headers_of: Callable[[int], list[tuple[str, bytes]]]) -> list[Any]:
    """A batch of sample readings as aiokafka's C parser returns them to the consumer."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, 0, 64 << 20)
    for i, (key, value, _) in enumerate(readings(BATCH, invalid_ratio=0)):
        builder.append(i, 0, key, value, headers_of(i))
    return list(DefaultRecordBatch(bytes(builder.build())))


def per_record(work: Callable[[], object], repeat: int, number: int = 20) -> float:
    """Best time of ``work`` over ``repeat`` runs, in microseconds per record of a batch."""
    return min(timeit.repeat(work, number=number, repeat=repeat)) / number / BATCH * 1e6


def observer_cost(telemetry: Telemetry, records: Sequence[Any], repeat: int) -> float:
    def one_batch() -> None:
        telemetry.begin(records, [0]).end(None, 0.001, None)

    return per_record(one_batch, repeat)


def encoding_cost(records: Sequence[Any], stamps: Sequence[Any] | None, repeat: int) -> float:
    """What the stamps add to encoding the outputs: the median of paired runs with and
    without them (interleaved, so drift on a shared machine cancels), us per output."""
    spec = BatchSpec((0, 1, 2, 3), 1 << 20)
    partitioner = KeyPartitioner(spec.partitions)
    keys = [r.key for r in records]
    values = [r.value for r in records]
    bare: list[Any] = [[]] * len(records)
    stamped = list(stamps) if stamps is not None else bare
    differences = []
    for _ in range(repeat):
        with_stamps, without = (
            per_record(lambda h=h: encode_batches(spec, keys, values, h, partitioner), 3)
            for h in (stamped, bare)
        )
        differences.append(with_stamps - without)
    return statistics.median(differences)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_cost", description=__doc__)
    parser.add_argument("--repeat", type=int, default=15, help="runs per case (best taken)")
    repeat = parser.parse_args(argv).repeat
    settings = Settings(http_port=0)
    telemetries = {
        "nothing configured (no exporter)": Telemetry(settings),
        "tracing on": Telemetry(settings, span_processors=[SpanProcessor()]),
    }
    print(f"{'case':<70} {'observer us/rec':>16} {'encoding us/out':>16}")
    for mode, telemetry in telemetries.items():
        for inputs, headers_of in _HEADERS.items():
            records = consumed(headers_of)
            stamps = telemetry.begin(records, [0]).stamps
            encoding = encoding_cost(records, stamps, repeat)
            cost = observer_cost(telemetry, records, repeat)
            print(f"{mode + ', ' + inputs:<70} {cost:>16.3f} {encoding:>16.3f}")
        telemetry.shutdown()


if __name__ == "__main__":
    main()
