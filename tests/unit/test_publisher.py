"""processor.publisher: which producer carries which partition, and in what order."""

from __future__ import annotations

import asyncio
from typing import Any

from processor.kafka.publisher import Publisher
from processor.messages.jobs import EncodedBatch


class RecordingProducer:
    """Stands in for AIOKafkaProducer.send_batch: records calls, may hold them back."""

    def __init__(self, calls: list[tuple[int, int, bytes]], index: int) -> None:
        self.calls = calls
        self.index = index
        self.release = asyncio.Event()
        self.release.set()
        self.sent = asyncio.Event()  # set at each batch sent

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    async def send_batch(self, batch: Any, topic: str, partition: int) -> asyncio.Future[None]:
        await self.release.wait()  # aiokafka waits here while the partition's slot is taken
        self.calls.append((self.index, partition, batch._build()))
        self.sent.set()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def batches() -> list[EncodedBatch]:
    return [EncodedBatch(p, b"p%d-%d" % (p, n), 1) for n in range(3) for p in (0, 1, 2, 3)]


async def test_a_partition_always_goes_through_the_same_producer_in_order() -> None:
    calls: list[tuple[int, int, bytes]] = []
    publisher = Publisher([RecordingProducer(calls, 0), RecordingProducer(calls, 1)])
    futures = await publisher.send("points", batches())
    assert len(futures) == 12
    assert {(producer, partition) for producer, partition, _ in calls} == {
        (0, 0),
        (1, 1),
        (0, 2),
        (1, 3),
    }
    for p in (0, 1, 2, 3):
        assert [data for _, partition, data in calls if partition == p] == [
            b"p%d-%d" % (p, n) for n in range(3)
        ]


async def test_a_waiting_producer_does_not_hold_up_the_other_partitions() -> None:
    calls: list[tuple[int, int, bytes]] = []
    slow, fast = RecordingProducer(calls, 0), RecordingProducer(calls, 1)
    slow.release.clear()
    publisher = Publisher([slow, fast])
    sending = asyncio.create_task(publisher.send("points", batches()))
    async with asyncio.timeout(5):
        while len(calls) < 6:  # the fast producer's six batches, without the slow one's
            fast.sent.clear()
            await fast.sent.wait()
    assert {partition for _, partition, _ in calls} == {1, 3}
    slow.release.set()
    assert len(await sending) == 12
