"""Batched attempt records (hookfleet/stream/record_batch.py) through the real broker into the real database."""

from __future__ import annotations

import asyncio

import pytest

from hookfleet.kafka import KafkaProducer, message_headers
from hookfleet.stream.record_batch import BATCH_HEADER, RecordBatcher, partition_for, split_batch
from schemas.models import AttemptRecord, Outcome
from schemas.topics import Topics
from tests.conftest import TEST_PARTITIONS
from tests.integration.recorder_fixtures import (
    committed_to_end,
    headers_of,
    make_attempt,
    make_event,
    read_topic,
    recorder_running,
    recorder_settings,
    scalar,
    wait_for,
)

pytestmark = pytest.mark.integration


def _rows(database_url: str) -> int:
    return int(scalar(database_url, "SELECT count(*) FROM delivery_attempts"))


async def _batch_all(producer: KafkaProducer, topic: str, records: list[AttemptRecord]) -> int:
    batcher = RecordBatcher(producer, topic, TEST_PARTITIONS)
    await asyncio.gather(*(batcher.add(r.model_dump_json().encode(), r.webhook_id) for r in records))
    return batcher.messages


def test_batched_attempts_become_rows_exactly_once_even_when_the_batches_are_replayed(
    kafka_bootstrap: str, topics: Topics, database_url: str, producer: KafkaProducer
) -> None:
    events = [make_event() for _ in range(30)]
    records = [make_attempt(f"wh_{i % 7}", outcome=Outcome.HTTP_ERROR, event=events[i % 30]) for i in range(300)]
    # Given 300 attempt records batched (a few messages per partition), then the same batches again (a replay)
    messages = asyncio.run(_batch_all(producer, topics.attempts, records))
    again = asyncio.run(_batch_all(producer, topics.attempts, records))
    assert messages <= 3 * TEST_PARTITIONS and again <= 3 * TEST_PARTITIONS  # 100 records per message at most

    # Every record went where a keyed message of its own goes (the one recorder owning its webhook reads it)
    written = read_topic(kafka_bootstrap, topics.attempts, expected=messages + again)
    for message in written:
        assert BATCH_HEADER in headers_of(message)
        for value in split_batch(message.value(), message_headers(message)):
            webhook_id = AttemptRecord.model_validate_json(value or b"").webhook_id
            assert message.partition() == partition_for(webhook_id, TEST_PARTITIONS)
    keyed = producer.send_sync(topics.dead, b"{}", key="wh_3")
    assert keyed.partition() == partition_for("wh_3", TEST_PARTITIONS)  # librdkafka's own partitioner agrees

    settings = recorder_settings(kafka_bootstrap, topics, database_url, batch_max=64)
    with recorder_running(settings) as running:
        wait_for(lambda: committed_to_end(kafka_bootstrap, settings.group_id, topics.attempts), what="offset commit")
        assert _rows(database_url) == 300
        assert running.stop() == 0
    # A new group re-reads every batch (as after a crash before the commit): nothing is added.
    replay = recorder_settings(kafka_bootstrap, topics, database_url)
    with recorder_running(replay):
        wait_for(lambda: committed_to_end(kafka_bootstrap, replay.group_id, topics.attempts), what="replay commit")
    assert _rows(database_url) == 300


def test_a_bad_record_in_a_batch_is_diverted_alone_and_a_miscounted_batch_whole(
    kafka_bootstrap: str, topics: Topics, database_url: str, producer: KafkaProducer
) -> None:
    good = [make_attempt("wh_1") for _ in range(3)]
    lines = [good[0].model_dump_json().encode(), b'{"attempt": "not a record"}', good[1].model_dump_json().encode()]
    partition = partition_for("wh_1", TEST_PARTITIONS)
    producer.produce(topics.attempts, b"\n".join(lines), headers=[(BATCH_HEADER, "3")], partition=partition)
    miscounted = good[2].model_dump_json().encode()
    producer.produce(topics.attempts, miscounted, headers=[(BATCH_HEADER, "2")], partition=partition)
    assert producer.flush() == 0
    settings = recorder_settings(kafka_bootstrap, topics, database_url)
    with recorder_running(settings):
        wait_for(lambda: committed_to_end(kafka_bootstrap, settings.group_id, topics.attempts), what="offset commit")
    assert _rows(database_url) == 2  # the batch's two good records; the miscounted batch is not trusted
    got = read_topic(kafka_bootstrap, topics.invalid, expected=2)
    by_offset = {headers_of(m)["source_offset"]: m for m in got}
    assert by_offset["0"].value() == lines[1]
    assert by_offset["1"].value() == miscounted
    assert "says 2 records, the value holds 1" in headers_of(by_offset["1"])["reason"]
