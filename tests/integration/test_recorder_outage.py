"""A PostgreSQL outage delays the attempt log but loses nothing (the shared server is never stopped:
the recorder reaches it through a TCP proxy that the test cuts and restores)."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest
from prometheus_client import REGISTRY

from hookfleet.kafka import KafkaProducer
from schemas.models import AttemptRecord, Outcome
from schemas.topics import Topics
from tests.integration.recorder_fixtures import (
    committed_to_end,
    make_attempt,
    recorder_running,
    recorder_settings,
    scalar,
    wait_for,
)
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0


class AttemptStream:
    """Publishes attempt records at a steady pace on a thread until stopped."""

    def __init__(self, producer: KafkaProducer, topic: str, per_second: float = 25.0) -> None:
        self.producer = producer
        self.topic = topic
        self.interval = 1.0 / per_second
        self.sent: list[AttemptRecord] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> AttemptStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.producer.flush() == 0

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval):
            record = make_attempt(f"wh_{n % 11}", outcome=Outcome.HTTP_ERROR if n % 3 else Outcome.SUCCESS)
            self.producer.produce(self.topic, record.model_dump_json().encode(), key=record.webhook_id)
            self.sent.append(record)
            n += 1


def _rows(database_url: str) -> int:
    return int(scalar(database_url, "SELECT count(*) FROM delivery_attempts"))


def test_database_outage_during_a_stream_loses_nothing(
    kafka_bootstrap: str, topics: Topics, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="recorder")
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    proxy = TcpProxy(str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432))))
    via_proxy = psycopg.conninfo.make_conninfo(database_url, host="127.0.0.1", port=proxy.port)
    settings = recorder_settings(kafka_bootstrap, topics, database_url=via_proxy)
    db_errors_before = REGISTRY.get_sample_value("hookfleet_recorder_db_errors_total") or 0.0
    producer = KafkaProducer(kafka_bootstrap)
    try:
        with recorder_running(settings) as running:
            with AttemptStream(producer, topics.attempts) as stream:
                wait_for(lambda: _rows(database_url) >= 25, what="rows before the outage")
                proxy.cut()
                time.sleep(OUTAGE_S / 2)  # timed scenario: the first half of the outage
                met = lambda: any("event=db_unavailable" in r.getMessage() for r in caplog.records)  # noqa: E731
                wait_for(met, what="the recorder to meet the outage (a write failed)")
                # Mid-outage: messages keep coming, nothing is committed past what is in the table.
                rows_during = _rows(database_url)
                assert not committed_to_end(kafka_bootstrap, settings.group_id, topics.attempts)
                time.sleep(OUTAGE_S / 2)  # timed scenario: the second half of the outage
                assert _rows(database_url) == rows_during
                proxy.restore()
                time.sleep(2)  # timed scenario: the stream goes on for 2 s after the database is back
            sent = {r.attempt_id for r in stream.sent}
            assert len(sent) > rows_during + 200  # a real share of the stream was produced during the outage
            wait_for(lambda: _rows(database_url) == len(sent), timeout_s=30, what="every row after the outage")
            wait_for(lambda: committed_to_end(kafka_bootstrap, settings.group_id, topics.attempts), what="commit")
            assert running.stop() == 0
    finally:
        producer.close()
        proxy.close()

    with psycopg.connect(database_url) as conn:
        stored = {str(row[0]) for row in conn.execute("SELECT attempt_id FROM delivery_attempts")}
    assert stored == sent
    messages = [r.getMessage() for r in caplog.records]
    assert sum("event=db_unavailable" in m for m in messages) == 1
    assert sum("event=db_recovered" in m for m in messages) == 1
    recovered_at = next(i for i, m in enumerate(messages) if "event=db_recovered" in m)
    revoked_at = [i for i, m in enumerate(messages) if "event=partitions_revoked" in m]
    assert all(i > recovered_at for i in revoked_at)  # stayed in the group throughout the outage
    assert (REGISTRY.get_sample_value("hookfleet_recorder_db_errors_total") or 0.0) > db_errors_before
