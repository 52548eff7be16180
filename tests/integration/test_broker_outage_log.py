"""During a broker outage a client logs state changes, not every reconnect (real librdkafka clients
against a port where nothing listens, then a proxy to the shared broker opened on that port)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from hookfleet import kafka
from hookfleet.kafka import BrokerErrorLog, KafkaProducer
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

FAST_RECONNECT: dict[str, Any] = {"reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 50}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hookfleet.kafka"]


def test_an_unreachable_broker_is_logged_as_down_still_down_and_recovered(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka, "BROKER_ERRORS", BrokerErrorLog(repeat_s=3.0, quiet_s=4.0))
    caplog.set_level(logging.INFO, logger="hookfleet.kafka")
    port = _closed_port()
    producer = KafkaProducer(f"127.0.0.1:{port}", **FAST_RECONNECT)
    try:
        # Timed scenario: 7 s of outage against repeat_s=3 (librdkafka reconnects every ~50 ms: well over
        # 100 errors), then what was logged over that span is checked.
        time.sleep(7.0)
        down = _lines(caplog)
        assert kafka.BROKER_ERRORS._errors > 20, "the client should have failed many times"
        assert down[0].startswith("event=kafka_down code=")
        assert [line.split()[0] for line in down[1:]] in (["event=kafka_still_down"] * 2, ["event=kafka_still_down"])
        assert len(down) <= 3, down
        # The broker becomes reachable on that address: errors stop, one "recovered" line follows.
        host, _, broker_port = kafka_bootstrap.rpartition(":")
        with TcpProxy(host, int(broker_port), listen_port=port):
            deadline = time.monotonic() + 20
            while not any(line.startswith("event=kafka_recovered") for line in _lines(caplog)):
                assert time.monotonic() < deadline, _lines(caplog)
                time.sleep(0.2)
    finally:
        producer.close(1.0)
    recovered = [line for line in _lines(caplog) if line.startswith("event=kafka_recovered")]
    assert len(recovered) == 1 and "errors=" in recovered[0]


def test_event_publisher_prints_nothing_on_its_callers_stderr(tmp_path: object) -> None:
    script = (
        "import time\n"
        "from hookfleet.settings import CommonSettings\n"
        "from producer.publisher import EventPublisher\n"
        f"publisher = EventPublisher(CommonSettings(kafka_bootstrap_servers='127.0.0.1:{_closed_port()}'))\n"
        "time.sleep(3)  # timed scenario: the outage the publisher lives through\n"
        "publisher.close(0.5)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
