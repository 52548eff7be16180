"""Every CLI action says what it does in --help, and `hookfleet topics list` shows partitions, end
offsets and consumer lag per group (real broker)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hookfleet.kafka import KafkaProducer, TopicPartition, new_consumer
from schemas.topics import Topics
from tests.conftest import TEST_PARTITIONS

pytestmark = pytest.mark.integration

HOOKFLEET = str(Path(sys.executable).with_name("hookfleet"))


def _help(*argv: str) -> str:
    result = subprocess.run([HOOKFLEET, *argv, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("command", "actions"),
    [
        (
            ("webhooks",),
            [
                "create",
                "list",
                "show",
                "update",
                "enable",
                "disable",
                "delete",
                "test",
                "logs",
                "redeliver",
                "recover",
                "rotate-secret",
                "rotate-signing-key",
            ],
        ),
        (("topics",), ["ensure", "list"]),
        (("dev",), ["up", "down", "status"]),
        (("db",), ["migrate"]),
        (("accounts",), ["create", "keys"]),
        (("accounts", "keys"), ["create", "list", "revoke"]),
        (("dead-letters",), ["redrive"]),
        (("events",), ["show", "search"]),
    ],
)
def test_every_action_has_a_one_line_description(command: tuple[str, ...], actions: list[str]) -> None:
    text = _help(*command)
    lines = text.splitlines()
    for action in actions:
        index = next(i for i, line in enumerate(lines) if line.strip().split(" ")[0] == action)
        described = lines[index].strip().removeprefix(action).strip() or lines[index + 1].strip()
        assert len(described) > 8 and not described.startswith(("{", "-")), (action, text)


def test_topics_list_shows_partitions_end_offsets_and_lag_per_group(kafka_bootstrap: str, topics: Topics) -> None:
    producer = KafkaProducer(kafka_bootstrap)
    try:
        for n in range(5):
            producer.send_sync(topics.events, b'{"n": %d}' % n, key="acct_1")
        message = producer.send_sync(topics.deliveries, b"{}", key="wh_1")
    finally:
        producer.close()
    group = f"{topics.prefix}hookfleet-dispatcher"
    consumer = new_consumer(kafka_bootstrap, group)
    try:
        partition = next(
            p for p in range(TEST_PARTITIONS) if consumer.get_watermark_offsets(TopicPartition(topics.events, p))[1]
        )
        consumer.commit(offsets=[TopicPartition(topics.events, partition, 2)], asynchronous=False)
    finally:
        consumer.close()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "HOOKFLEET_TOPIC_PREFIX": topics.prefix}
    result = subprocess.run([HOOKFLEET, "topics", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert set(rows) == set(topics.all())
    events = rows[topics.events]
    assert events[1:4] == [str(TEST_PARTITIONS), "5", "5"], result.stdout
    assert events[4] == f"{group}=3", result.stdout
    deliveries = rows[topics.deliveries]
    assert deliveries[1:5] == [str(TEST_PARTITIONS), "1", "1", "-"], result.stdout
    assert message.topic() == topics.deliveries
