"""The recorder against the real broker and the real database."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from datetime import timedelta

import psycopg
import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from hookfleet.kafka import KafkaProducer, TopicPartition, new_consumer
from hookfleet.shutdown import Shutdown
from recorder.main import new_recorder
from schemas.models import Outcome
from schemas.topics import Topics
from tests.integration.recorder_fixtures import (
    an_hour_ago,
    committed_to_end,
    headers_of,
    insert_webhook,
    make_attempt,
    make_dead_task,
    make_event,
    now_ms_precision,
    publish,
    read_topic,
    recorder_running,
    recorder_settings,
    scalar,
    wait_for,
    webhook_status,
)
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


_COUNT = {
    "delivery_attempts": "SELECT count(*) FROM delivery_attempts",
    "event_payloads": "SELECT count(*) FROM event_payloads",
}


def _count(database_url: str, table: str = "delivery_attempts") -> int:
    return int(scalar(database_url, _COUNT[table]))


def test_attempts_become_rows_exactly_once_even_when_produced_twice(
    kafka_bootstrap: str, topics: Topics, database_url: str, producer: KafkaProducer
) -> None:
    events = [make_event() for _ in range(40)]
    records = [
        make_attempt(f"wh_{i % 7}", outcome=Outcome.HTTP_ERROR, event=events[i % 40], test=i == 0) for i in range(300)
    ]
    publish(producer, topics.attempts, records)
    publish(producer, topics.attempts, records)  # the same records again: a replay
    port = free_port()
    settings = recorder_settings(kafka_bootstrap, topics, database_url, batch_max=64, metrics_port=port)
    with recorder_running(settings) as running:
        wait_for(lambda: committed_to_end(kafka_bootstrap, settings.group_id, topics.attempts), what="offset commit")
        assert _count(database_url) == 300
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "hookfleet_recorder_batch_size_count" in scrape
        lag = {"group": settings.group_id, "topic": topics.attempts, "partition": "0"}
        wait_for(lambda: REGISTRY.get_sample_value("hookfleet_consumer_lag", lag) == 0, what="consumer lag metric")
        assert running.stop() == 0

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT outcome, status_code, response_excerpt, test, attempt, attempted_at FROM delivery_attempts "
            "WHERE attempt_id = %s",
            (records[0].attempt_id,),
        ).fetchone()
    assert row == ("http_error", 500, "boom", True, 1, records[0].attempted_at)
    # Every event's payload is kept once, so any row can be redelivered later.
    assert _count(database_url, "event_payloads") == 40
    body = scalar(database_url, "SELECT event::text FROM event_payloads WHERE event_id = %s", (events[3].id,))
    assert type(events[3]).model_validate_json(body) == events[3]

    # A new group re-reads everything (as after a crash before the offset commit): nothing is added.
    again = recorder_settings(kafka_bootstrap, topics, database_url)
    with recorder_running(again):
        wait_for(lambda: committed_to_end(kafka_bootstrap, again.group_id, topics.attempts), what="replay commit")
    assert _count(database_url) == 300


def test_dead_letter_sets_failing_and_only_a_later_success_heals(
    kafka_bootstrap: str, topics: Topics, database_url: str, producer: KafkaProducer
) -> None:
    webhook = insert_webhook(database_url, changed_at=an_hour_ago())
    bystander = insert_webhook(database_url, changed_at=an_hour_ago())
    dead_at = now_ms_precision() - timedelta(minutes=1)
    settings = recorder_settings(kafka_bootstrap, topics, database_url)
    with recorder_running(settings):
        task = make_dead_task(webhook, dead_at=dead_at)
        publish(producer, topics.dead, [task])
        wait_for(lambda: webhook_status(database_url, webhook)[0] == "failing", what="failing")
        assert webhook_status(database_url, webhook) == ("failing", dead_at)
        assert webhook_status(database_url, bystander)[0] == "healthy"
        assert scalar(database_url, "SELECT last_error FROM dead_letters WHERE event_id = %s", (task.event.id,)) == (
            "http 500"
        )
        wait_for(lambda: REGISTRY.get_sample_value("hookfleet_failing_webhooks") == 1, what="failing gauge")

        # A success that happened before the dead letter (it arrives late) changes nothing.
        older = make_attempt(webhook, attempted_at=dead_at - timedelta(seconds=5))
        publish(producer, topics.attempts, [older])
        wait_for(lambda: _count(database_url) == 1, what="older success row")
        assert webhook_status(database_url, webhook) == ("failing", dead_at)

        # A later success (a Test delivery counts too) heals it, at the time of that success.
        later = make_attempt(webhook, attempted_at=dead_at + timedelta(seconds=5), test=True)
        publish(producer, topics.attempts, [later])
        wait_for(lambda: webhook_status(database_url, webhook)[0] == "healthy", what="healthy")
        assert webhook_status(database_url, webhook) == ("healthy", later.attempted_at)
        wait_for(lambda: REGISTRY.get_sample_value("hookfleet_failing_webhooks") == 0, what="failing gauge reset")

        # The dead letter, replayed after the heal, is older than the heal: still healthy.
        publish(producer, topics.dead, [task])
        wait_for(lambda: committed_to_end(kafka_bootstrap, settings.group_id, topics.dead), what="replay commit")
        assert webhook_status(database_url, webhook) == ("healthy", later.attempted_at)


def test_garbage_goes_to_the_invalid_topic_and_later_rows_still_arrive(
    kafka_bootstrap: str, topics: Topics, database_url: str, producer: KafkaProducer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="recorder")
    producer.produce(topics.attempts, b"\x00garbage", key=b"wh_1")
    producer.produce(topics.dead, b'{"event": 1}', key=b"wh_1")
    publish(producer, topics.attempts, [make_attempt("wh_1") for _ in range(5)])
    settings = recorder_settings(kafka_bootstrap, topics, database_url)
    with recorder_running(settings):
        wait_for(lambda: _count(database_url) == 5, what="rows after garbage")
        wait_for(lambda: committed_to_end(kafka_bootstrap, settings.group_id, topics.dead), what="dead commit")

    got = read_topic(kafka_bootstrap, topics.invalid, expected=2)
    assert len(got) == 2
    by_source = {headers_of(m)["source_topic"]: m for m in got}
    assert set(by_source) == {topics.attempts, topics.dead}
    assert by_source[topics.attempts].value() == b"\x00garbage"
    assert headers_of(by_source[topics.attempts])["reason"].startswith("value: Invalid JSON")
    assert headers_of(by_source[topics.dead])["reason"].startswith("event: ")
    for message in got:
        headers = headers_of(message)
        assert headers["role"] == "recorder"
        assert headers["source_partition"].isdigit()
        assert headers["source_offset"] == "0"  # each was the first message of its partition
    assert sum("event=message_diverted" in r.getMessage() for r in caplog.records) == 2


def test_sigterm_finishes_the_batch_commits_and_exits_zero(
    kafka_bootstrap: str, topics: Topics, database_url: str, producer: KafkaProducer
) -> None:
    group = recorder_settings(kafka_bootstrap, topics, database_url).group_id
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": database_url,
        "HOOKFLEET_TOPIC_PREFIX": topics.prefix,
        "HOOKFLEET_GROUP_ID": group,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "hookfleet.cli", "recorder"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        publish(producer, topics.attempts, [make_attempt("wh_1") for _ in range(20)])
        wait_for(lambda: _count(database_url) == 20, what="rows from the recorder process")
        wait_for(lambda: committed_to_end(kafka_bootstrap, group, topics.attempts), what="offset commit")
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "event=shutdown_requested reason=SIGTERM" in err
    assert "event=recorder_stopped" in err


def test_shutdown_writes_the_batch_in_hand_before_its_wait_is_over(
    kafka_bootstrap: str, topics: Topics, database_url: str, producer: KafkaProducer
) -> None:
    settings = recorder_settings(kafka_bootstrap, topics, database_url, batch_wait_ms=60_000)
    shutdown = Shutdown()
    recorder = new_recorder(settings, shutdown)
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(recorder.run()))
    thread.start()
    try:
        publish(producer, topics.attempts, [make_attempt("wh_1") for _ in range(20)])
        wait_for(lambda: recorder.batch.size == 20, what="20 messages held in the batch")
        assert _count(database_url) == 0  # the batch is still waiting for more
        shutdown.requested.set()
        thread.join(30)
    finally:
        shutdown.requested.set()
        thread.join(30)
    assert exit_code == [0]
    assert _count(database_url) == 20
    assert committed_to_end(kafka_bootstrap, settings.group_id, topics.attempts)


def _start_cli_recorder(env: dict[str, str], log_path: str) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "hookfleet.cli", "recorder"], env=env, stdout=log, stderr=log)


def _committed_total(kafka_bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offsets on `topic`, summed: the records it has committed as written."""
    consumer = new_consumer(kafka_bootstrap, group)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in committed)


def _written_by(port: int) -> int:
    """Records the recorder at `port` wrote in its transactions (its batch-size histogram's sum)."""
    scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(scrape):
        if family.name == "hookfleet_recorder_batch_size":
            return int(next(s.value for s in family.samples if s.name == "hookfleet_recorder_batch_size_sum"))
    raise AssertionError(f"hookfleet_recorder_batch_size missing from the recorder's /metrics at port {port}")


def test_kill_9_mid_stream_writes_again_at_most_what_was_in_flight_plus_one_commit_interval(
    kafka_bootstrap: str, topics: Topics, database_url: str, tmp_path
) -> None:
    """The recorder commits its offsets after each batch's transaction, so a recorder killed mid-stream
    leaves its successor at most the batch whose transaction committed just before the kill to write again
    (its offsets not yet committed), plus one commit interval (one batch: a failed commit is logged and
    tolerated, the next one covers it). Without a commit per batch, the successor re-reads everything."""
    total, batch_max = 20_000, 500
    events = [make_event() for _ in range(200)]
    records = [make_attempt(f"wh_{i % 97}", event=events[i % 200]) for i in range(total)]
    client = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "linger.ms": 20})
    for record in records:
        value = record.model_dump_json().encode()
        while True:
            try:
                client.produce(topics.attempts, value, key=record.webhook_id)
                break
            except BufferError:
                client.poll(0.05)
    assert client.flush(30) == 0
    group = recorder_settings(kafka_bootstrap, topics, database_url).group_id
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": database_url,
        "HOOKFLEET_TOPIC_PREFIX": topics.prefix,
        "HOOKFLEET_GROUP_ID": group,
        "HOOKFLEET_BATCH_MAX": str(batch_max),
        "HOOKFLEET_LAG_EXPORT_S": "0",
    }
    log_path = str(tmp_path / "recorder.log")
    # Given a recorder writing the stream, killed with SIGKILL several batches (and commits) in
    first = _start_cli_recorder(env, log_path)
    try:
        wait_for(lambda: _count(database_url) >= 6 * batch_max, timeout_s=90, what="six batches written")
        first.kill()
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    rows_at_kill = _count(database_url)
    committed_at_kill = _committed_total(kafka_bootstrap, group, topics.attempts)
    assert rows_at_kill < total, f"the stream was written whole before the kill; nothing was proven (log {log_path})"
    # When a second recorder of the same group takes over
    port = free_port()
    second = _start_cli_recorder({**env, "HOOKFLEET_METRICS_PORT": str(port)}, log_path)
    try:
        wait_for(lambda: _count(database_url) >= total, timeout_s=90, what=f"{total} rows (log {log_path})")
        wait_for(
            lambda: committed_to_end(kafka_bootstrap, group, topics.attempts),
            timeout_s=90,
            what=f"the second recorder's commit to the end (log {log_path})",
        )
        written_by_second = _written_by(port)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(30)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait(10)
    # Then no row is missing, none is there twice, and what was written again is bounded
    with psycopg.connect(database_url) as conn:
        stored = [row[0] for row in conn.execute("SELECT attempt_id FROM delivery_attempts").fetchall()]
    assert len(stored) == len(set(stored)) == total, (len(stored), len(set(stored)), total)
    assert set(stored) == {record.attempt_id for record in records}
    written_again = written_by_second - (total - rows_at_kill)
    bound = batch_max + batch_max
    print(
        f"rows at the kill {rows_at_kill} of {total} (committed {committed_at_kill}); the second recorder wrote "
        f"{written_by_second}, {written_again} of them again; bound {bound} (batch_max {batch_max} in flight "
        f"+ one commit interval of one batch, {batch_max})"
    )
    assert 0 <= written_again <= bound, (
        f"the second recorder wrote {written_again} records again (wrote {written_by_second}, {total - rows_at_kill} "
        f"were left at the kill), more than the bound {bound} = batch_max {batch_max} in flight + one commit "
        f"interval of one batch ({batch_max}); log {log_path}"
    )
