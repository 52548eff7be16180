"""The foundation against the real broker and the real database."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest

from hookfleet.db import migrate
from hookfleet.kafka import KafkaProducer, TopicSpec, ensure_topics, new_consumer
from schemas.topics import Topics

pytestmark = pytest.mark.integration


def test_publish_and_consume_on_the_real_broker(kafka_bootstrap: str, topics: Topics) -> None:
    producer = KafkaProducer(kafka_bootstrap)
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(20)}
    for key, value in sent.items():
        producer.produce(topics.events, value, key=key)
    assert producer.close() == 0

    consumer = new_consumer(kafka_bootstrap, f"g-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topics.events])
    got: dict[bytes, bytes] = {}
    try:
        for _ in range(100):
            for message in consumer.consume(50, timeout=0.5):
                assert message.error() is None
                got[message.key() or b""] = message.value() or b""
            if len(got) == len(sent):
                break
    finally:
        consumer.close()
    assert got == sent


def test_ensure_topics_is_idempotent(kafka_bootstrap: str) -> None:
    name = f"t{uuid.uuid4().hex[:10]}.idem"
    spec = [TopicSpec(name, 2, 1, {"retention.ms": "3600000"})]
    assert ensure_topics(kafka_bootstrap, spec) == [name]
    assert ensure_topics(kafka_bootstrap, spec) == []


def test_migrations_apply_once_and_are_idempotent(database_root_url: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = psycopg.conninfo.make_conninfo(database_root_url, options=f"-c search_path={schema}")
    with psycopg.connect(database_root_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        first = migrate(url)
        second = migrate(url)
        assert first and first[0] == "0001_init"
        assert second == []
        with psycopg.connect(url) as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
                )
            }
        assert {"accounts", "api_keys", "webhooks", "delivery_attempts", "dead_letters", "schema_migrations"} <= tables
    finally:
        with psycopg.connect(database_root_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "hookfleet.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["frobnicate"], {}, "invalid choice: 'frobnicate'"),
        (["topics", "ensure"], {"KAFKA_BOOTSTRAP_SERVERS": "no-port-here"}, "bootstrap servers must be host:port"),
        (
            ["topics", "ensure"],
            {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
            "kafka broker at 127.0.0.1:1 did not answer",
        ),
        (["db", "migrate"], {"DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/x"}, "postgresql at 127.0.0.1:1/x"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(args: list[str], env: dict[str, str], expected: str) -> None:
    result = _cli(*args, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_cli_schemas_export_writes_every_schema(tmp_path) -> None:
    result = _cli("schemas", "export", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "AttemptRecord.schema.json",
        "DeliveryTask.schema.json",
        "Event.schema.json",
        "Webhook.schema.json",
    ]


def test_settings_print_masks_the_database_password() -> None:
    result = _cli("settings", "dispatcher", env={"DATABASE_URL": "postgresql://u:hunter2@db/x"})
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout and "**********" in result.stdout
