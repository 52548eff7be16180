"""A role started while its broker is unreachable waits, alive and unready, and starts by itself when the
broker answers: a broker outage during a rollout must not become a crash loop.

The broker is reached through a Kafka proxy that is cut before the roles start (the shared broker keeps
running for the other tests)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.support.fleet import Fleet, Role
from tests.support.kafka_proxy import KafkaProxy
from tests.support.ports import free_port, http_status

pytestmark = pytest.mark.integration

DOWN_S = 15.0


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


@pytest.mark.parametrize("role", ["retry-scheduler", "recorder", "dispatcher"])
def test_a_role_started_without_its_broker_waits_alive_and_unready_then_starts(
    fleet: Fleet, kafka_bootstrap: str, role: str
) -> None:
    host, _, port = kafka_bootstrap.rpartition(":")
    with KafkaProxy(host, int(port)) as proxy:
        proxy.cut()
        metrics_port = free_port()
        started: Role = fleet.start(
            role, KAFKA_BOOTSTRAP_SERVERS=proxy.bootstrap, HOOKFLEET_METRICS_PORT=str(metrics_port)
        )
        livez, readyz = (f"http://127.0.0.1:{metrics_port}/{path}" for path in ("livez", "readyz"))
        assert wait_until(lambda: http_status(livez) == 200, 30), started.log_text()[-2000:]
        assert started.wait_log("event=broker_unavailable_at_start", 30), started.log_text()[-2000:]
        deadline = time.monotonic() + DOWN_S
        while time.monotonic() < deadline:
            assert started.proc.poll() is None, f"{role} exited:\n{started.log_text()[-2000:]}"
            assert http_status(livez) == 200 and http_status(readyz) == 503
            time.sleep(1.0)  # timed scenario: checked once a second through the whole outage

        proxy.restore()
        assert wait_until(lambda: http_status(readyz) == 200, 60), f"{role} never ready:\n{started.log_text()[-3000:]}"
        assert "event=broker_available" in started.log_text()
        assert http_status(livez) == 200
        assert started.terminate() == 0
