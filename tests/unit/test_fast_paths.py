"""processor.kafka._aiokafka_private: the start-up check of aiokafka's internals finds them
on the pinned release, and turns a path off, by name, when its internals do not behave."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import version

import pytest

from processor.kafka import _aiokafka_private as private
from processor.kafka.probe import broker_probe
from processor.kafka.publisher import Publisher


class TwoPartitions:
    """A producer, as far as :meth:`Publisher.spec` asks it."""

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}


@pytest.fixture(autouse=True)
def _fresh_check() -> Iterator[None]:
    private.fast_paths.cache_clear()
    yield
    private.fast_paths.cache_clear()


async def test_the_pinned_release_passes_every_check_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="processor")
    assert private.fast_paths() == private.FastPaths(fetch=True, produce=True, probe=True)
    assert version("aiokafka").startswith(private.VERIFIED_WITH.removesuffix("x"))
    [line] = [r.getMessage() for r in caplog.records if "fast paths" in r.getMessage()]
    assert line == (
        f"aiokafka {version('aiokafka')} (verified with {private.VERIFIED_WITH}): "
        "fast paths on: fetch, produce, probe"
    )


def test_the_check_runs_outside_an_event_loop_too() -> None:
    assert private.fast_paths().fetch


async def test_switched_off_nothing_is_checked_and_everything_is_public(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="processor")
    assert private.fast_paths(wanted=False) == private.FastPaths(False, False, False)
    assert "fast paths off (PROCESSOR_AIOKAFKA_FAST_PATHS=false)" in caplog.text
    assert (await Publisher([TwoPartitions()], fast=False).spec("points")).prebuilt is False
    assert (await Publisher([TwoPartitions()]).spec("points")).prebuilt is True


async def test_a_prebuilt_batch_that_differs_from_aiokafkas_turns_the_produce_path_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(private.PrebuiltBatch, "_set_producer_state", lambda *_: None)
    caplog.set_level(logging.WARNING, logger="processor")
    paths = private.fast_paths()
    assert (paths.fetch, paths.produce, paths.probe) == (True, False, True)
    assert paths.missing == ("the record batch builder's internals (prebuilt bytes differ)",)
    assert "not found: the record batch builder's internals (prebuilt bytes differ)" in caplog.text
    assert "fast paths on: fetch, probe" in caplog.text


async def test_a_reader_that_reads_other_values_turns_the_produce_path_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The state reads its points back from prebuilt batches: a reader that does not give
    the values the builder was given must not be trusted with them."""
    monkeypatch.setattr(private, "DefaultRecordBatch", lambda data: [])
    paths = private.fast_paths()
    assert (paths.fetch, paths.produce, paths.probe) == (True, False, True)
    assert paths.missing == ("the record batch reader's internals (values differ)",)


async def test_bare_records_that_differ_from_aiokafkas_turn_the_fetch_path_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unpack = private._unpack

    def skips_a_record(partition: object, batches: object) -> private._Unpacked | None:
        unpacked = unpack(partition, batches)
        if unpacked is not None:
            unpacked.records = unpacked.records[1:]
        return unpacked

    monkeypatch.setattr(private, "_unpack", skips_a_record)
    paths = private.fast_paths()
    assert (paths.fetch, paths.produce) == (False, True)
    assert paths.missing == (
        "FetchResult.getall's internals (bare records differ from aiokafka's)",
    )


async def test_a_client_without_the_metadata_update_turns_the_probe_path_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(private.AIOKafkaClient, "force_metadata_update")
    paths = private.fast_paths()
    assert not paths.probe
    assert paths.missing == ("the consumer's client.force_metadata_update",)


class Reachable:
    """A consumer with a private client and the public ``topics()``."""

    def __init__(self) -> None:
        self._client = self
        self.asked: list[str] = []

    async def force_metadata_update(self) -> bool:
        self.asked.append("private")
        return True

    async def topics(self) -> set[str]:
        self.asked.append("public")
        return set()


async def test_switched_off_the_probe_asks_the_public_way() -> None:
    consumer = Reachable()
    probe = broker_probe(consumer, fast=False)
    assert probe.kind == "all_topics"
    assert await probe()
    assert consumer.asked == ["public"]
