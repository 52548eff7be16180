"""The in-memory broker keeps the librdkafka behaviour the roles rely on (tests/support/memory_kafka.py)."""

from __future__ import annotations

import pytest

from hookfleet.kafka import KafkaException, TopicPartition
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer


def test_partition_order_pause_seek_and_resume() -> None:
    broker = MemoryBroker(partitions=1)
    for n in range(3):
        broker.append("t", f"m{n}".encode())
    consumer = MemoryConsumer(broker)
    consumer.subscribe(["t"])
    assert [m.value() for m in consumer.consume(2, 0)] == [b"m0", b"m1"]
    consumer.pause([TopicPartition("t", 0)])
    consumer.seek(TopicPartition("t", 0, 0))
    assert consumer.consume(5, 0) == []
    consumer.resume([TopicPartition("t", 0)])
    assert [m.offset() for m in consumer.consume(5, 0)] == [0, 1, 2]


def test_commit_stored_or_given_offsets_and_a_new_member_starts_there() -> None:
    broker = MemoryBroker(partitions=2)
    for n in range(4):
        broker.append("t", b"x", partition=n % 2)
    first = MemoryConsumer(broker, "g")
    first.subscribe(["t"])
    first.consume(4, 0)
    with pytest.raises(KafkaException):
        first.commit(asynchronous=False)  # nothing stored: _NO_OFFSET, as librdkafka says
    first.store_offsets(offsets=[TopicPartition("t", 0, 1)])
    first.commit(asynchronous=False)
    first.commit(offsets=[TopicPartition("t", 1, 2, metadata="done:3")], asynchronous=False)
    (tp0, tp1) = first.committed([TopicPartition("t", 0), TopicPartition("t", 1)])
    assert (tp0.offset, tp1.offset, tp1.metadata) == (1, 2, "done:3")
    second = MemoryConsumer(broker, "g")
    second.subscribe(["t"])
    assert [(m.partition(), m.offset()) for m in second.consume(5, 0)] == [(0, 1)]


def test_producer_holds_or_fails_acknowledgements_on_request() -> None:
    broker = MemoryBroker()
    producer = MemoryProducer(broker, acks="manual")
    acks: list[object] = []
    producer.produce("t", b"a", key="k", on_delivery=lambda error, _m: acks.append(error))
    assert (len(broker.messages("t")), acks) == (1, [])
    producer.fail_next()
    producer.produce("t", b"b", on_delivery=lambda error, _m: acks.append(error))
    assert producer.flush() == 0
    assert acks[0] is None and acks[1] is not None
    assert [m.value() for m in broker.messages("t")] == [b"a"]
