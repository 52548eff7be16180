"""Broker-side lag, read from a real broker: seconds behind for a consumer group that stopped, and
overdue seconds for a delay topic whose scheduler is not running — while a not-yet-due retry is not."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from hookfleet.broker_lag import BrokerLag
from hookfleet.kafka import KafkaProducer, TopicSpec, delete_topics, ensure_topics
from schemas.topics import Topics

pytestmark = pytest.mark.integration

GROUPS = {
    "hookfleet-dispatcher": ["webhooks.events", "webhooks.deliveries"],
    "hookfleet-retry-scheduler": ["webhooks.retry.10s", "webhooks.retry.60s", "webhooks.retry.5m"],
}


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


def task(due_at_ms: int) -> bytes:
    return json.dumps({"webhook_id": "wh_1", "attempt": 2, "due_at": due_at_ms, "event": {}}).encode()


def test_lag_in_seconds_and_overdue_retries_come_from_the_broker(
    kafka_bootstrap: str, producer: KafkaProducer, topics: Topics
) -> None:
    now_ms = time.time_ns() // 1_000_000
    for n in range(3):
        producer.send_sync(topics.events, b"{}", key=f"acct_{n}")
    producer.send_sync(topics.retry_10s, task(now_ms - 90_000), key="wh_1")  # 90 s overdue: nobody handed it back
    producer.send_sync(topics.retry_5m, task(now_ms + 200_000), key="wh_2")  # waiting, as designed
    time.sleep(2.0)  # the thing measured: the oldest unconsumed event is 2 s old when the lag is read

    lag = BrokerLag(kafka_bootstrap, topics.prefix, GROUPS)
    lag.read_once()

    assert sample("hookfleet_topic_end_offset", topic="webhooks.events") == 3
    assert sample("hookfleet_group_lag_messages", group="hookfleet-dispatcher", topic="webhooks.events") == 3
    assert 1.5 <= sample("hookfleet_group_lag_seconds", group="hookfleet-dispatcher", topic="webhooks.events") < 30
    assert sample("hookfleet_group_lag_seconds", group="hookfleet-dispatcher", topic="webhooks.deliveries") == 0
    assert 90 <= sample("hookfleet_retry_overdue_seconds", topic="webhooks.retry.10s") < 120
    assert sample("hookfleet_retry_overdue_seconds", topic="webhooks.retry.5m") == 0
    assert sample("hookfleet_group_lag_messages", group="hookfleet-retry-scheduler", topic="webhooks.retry.5m") == 1


def test_each_partition_has_its_age_the_topic_its_retention_and_the_export_its_time(
    kafka_bootstrap: str, producer: KafkaProducer
) -> None:
    """The retention alert compares one partition's oldest unfinished message with the topic's retention.ms as
    the broker keeps it; the export timestamp says when these were last read."""
    topics = Topics.with_prefix(f"t{uuid.uuid4().hex[:10]}.")
    ensure_topics(kafka_bootstrap, [TopicSpec(n, 3, 1, {"retention.ms": "3600000"}) for n in topics.all()])
    try:
        behind = str(producer.send_sync(topics.events, b"{}", key="acct_1").partition())
        time.sleep(1.0)  # the thing measured: the unconsumed event is at least 1 s old when the lag is read
        before = time.time()

        BrokerLag(kafka_bootstrap, topics.prefix, GROUPS).read_once()

        group, topic = "hookfleet-dispatcher", "webhooks.events"
        assert 1.0 <= sample("hookfleet_group_partition_lag_seconds", group=group, topic=topic, partition=behind) < 30
        for caught_up in {"0", "1", "2"} - {behind}:
            assert sample("hookfleet_group_partition_lag_seconds", group=group, topic=topic, partition=caught_up) == 0
        assert sample("hookfleet_topic_retention_seconds", topic="webhooks.events") == 3600
        assert sample("hookfleet_topic_retention_seconds", topic="webhooks.retry.5m") == 3600
        assert before <= sample("hookfleet_lag_export_timestamp_seconds") <= time.time()
    finally:
        delete_topics(kafka_bootstrap, topics.all())
