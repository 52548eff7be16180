"""`send_each`: every message's own result, and what a partition without a leader does to the others."""

from __future__ import annotations

import pytest

from hookfleet.kafka import Headers, KafkaError, KafkaUnavailable, transient
from hookfleet.stream.sender import Outgoing, send_each
from tests.support.memory_kafka import DeliveryCallback, MemoryBroker, MemoryProducer


class StuckPartitionProducer(MemoryProducer):
    """Messages keyed `stuck` are never acknowledged: their partition has no leader."""

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
        partition: int | None = None,
    ) -> None:
        if key != "stuck":
            super().produce(topic, value, key, headers, on_delivery, partition)


MESSAGES = [Outgoing("t", b"a", "ok"), Outgoing("t", b"b", "stuck"), Outgoing("t", b"c", "ok")]


def test_with_partial_only_the_unsettled_messages_time_out_and_the_error_counts_as_transient() -> None:
    results = send_each(StuckPartitionProducer(MemoryBroker()), MESSAGES, timeout_s=0.2, partial=True)
    assert results[0] is None and results[2] is None
    assert results[1] is not None and results[1].code() == KafkaError._MSG_TIMED_OUT
    assert transient(results[1])


def test_without_partial_or_with_nothing_settled_the_broker_counts_as_unreachable() -> None:
    with pytest.raises(KafkaUnavailable, match=r"no broker acknowledgement for t within 0\.2s"):
        send_each(StuckPartitionProducer(MemoryBroker()), MESSAGES, timeout_s=0.2)
    with pytest.raises(KafkaUnavailable):
        send_each(StuckPartitionProducer(MemoryBroker()), [MESSAGES[1]], timeout_s=0.2, partial=True)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (KafkaError._MSG_TIMED_OUT, True),  # librdkafka's delivery report: retriable() is false
        (KafkaError.NOT_ENOUGH_REPLICAS, True),
        (KafkaError.LEADER_NOT_AVAILABLE, True),
        (KafkaError.MSG_SIZE_TOO_LARGE, False),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, False),
        (KafkaError.INVALID_RECORD, False),
    ],
)
def test_transient_names_the_broker_errors_a_later_produce_gets_past(code: int, expected: bool) -> None:
    assert transient(KafkaError(code)) is expected
