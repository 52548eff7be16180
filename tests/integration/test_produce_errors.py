"""A message the broker never acknowledges is counted per topic (hookfleet_produce_errors_total), the signal
of the HookfleetProduceErrors ticket; the product services' publisher counts nothing in their process."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from hookfleet.kafka import KafkaDeliveryError, KafkaProducer, KafkaUnavailable

pytestmark = pytest.mark.integration

FAST_TIMEOUT: dict[str, Any] = {"message.timeout.ms": 1500}


def test_an_unacknowledged_message_is_counted_by_topic(kafka_bootstrap: str) -> None:
    missing = f"t{uuid.uuid4().hex[:10]}.no-such-topic"  # the broker does not auto-create topics
    producer = KafkaProducer(kafka_bootstrap, **FAST_TIMEOUT)
    try:
        with pytest.raises((KafkaDeliveryError, KafkaUnavailable)):
            producer.send_sync(missing, b"{}", timeout_s=10)
    finally:
        producer.close(timeout_s=1)
    assert REGISTRY.get_sample_value("hookfleet_produce_errors_total", {"topic": missing}) == 1


def test_an_uncounted_producer_adds_no_series(kafka_bootstrap: str) -> None:
    missing = f"t{uuid.uuid4().hex[:10]}.no-such-topic"
    producer = KafkaProducer(kafka_bootstrap, count_errors=False, **FAST_TIMEOUT)
    try:
        with pytest.raises((KafkaDeliveryError, KafkaUnavailable)):
            producer.send_sync(missing, b"{}", timeout_s=10)
    finally:
        producer.close(timeout_s=1)
    assert REGISTRY.get_sample_value("hookfleet_produce_errors_total", {"topic": missing}) is None
