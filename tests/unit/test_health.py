"""Liveness and readiness are different questions: a role waiting for its broker is alive and unready;
only a loop that stopped turning is not alive."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from hookfleet import cli as cli_module
from hookfleet.metrics import HealthServer, Heartbeat, MetricsPortUnavailable


def get(port: int, path: str) -> tuple[int, dict[str, object] | str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            status, body = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode()
    return status, (json.loads(body) if body.startswith("{") else body)


class State:
    def __init__(self) -> None:
        self.ready = False

    def check(self) -> tuple[bool, str]:
        return (True, "assigned partitions: 3") if self.ready else (False, "kafka broker unreachable")


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture
def heartbeat() -> Heartbeat:
    return Heartbeat(stale_after_s=0.2)


@pytest.fixture
def server(state: State, heartbeat: Heartbeat) -> Iterator[HealthServer]:
    server = HealthServer(0, state.check, heartbeat, host="127.0.0.1").start()
    yield server
    server.stop()


def test_a_role_waiting_for_its_broker_is_alive_but_not_ready(server: HealthServer, heartbeat: Heartbeat) -> None:
    heartbeat.beat()
    assert get(server.port, "/livez")[0] == 200
    status, body = get(server.port, "/readyz")
    assert status == 503 and isinstance(body, dict) and body["reason"] == "kafka broker unreachable"
    assert get(server.port, "/healthz")[0] == 503, "/healthz stays readiness, for existing probes"
    assert REGISTRY.get_sample_value("hookfleet_ready") == 0


def test_ready_when_the_check_passes(server: HealthServer, state: State) -> None:
    state.ready = True
    assert get(server.port, "/readyz") == (200, {"ready": True, "reason": "assigned partitions: 3"})
    assert get(server.port, "/healthz")[0] == 200
    status, _ = get(server.port, "/metrics")
    assert status == 200
    assert REGISTRY.get_sample_value("hookfleet_ready") == 1


def test_a_loop_that_stops_beating_is_not_alive_even_when_ready(
    server: HealthServer, state: State, heartbeat: Heartbeat
) -> None:
    state.ready = True
    heartbeat.beat()
    assert get(server.port, "/livez")[0] == 200
    heartbeat._last -= 1.0  # the loop has not turned for a second (limit 0.2 s)
    status, body = get(server.port, "/livez")
    assert status == 503 and isinstance(body, dict) and "no progress" in str(body["reason"])
    assert get(server.port, "/readyz")[0] == 200, "readiness does not depend on the heartbeat"
    assert (REGISTRY.get_sample_value("hookfleet_loop_heartbeat_age_seconds") or 0) >= 1.0
    heartbeat.beat()
    assert get(server.port, "/livez")[0] == 200


def test_without_a_heartbeat_livez_only_proves_the_process_serves(state: State) -> None:
    server = HealthServer(0, state.check, host="127.0.0.1").start()
    try:
        status, body = get(server.port, "/livez")
        assert status == 200 and isinstance(body, dict) and "no loop heartbeat" in str(body["reason"])
        assert get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


def test_a_metrics_port_in_use_is_one_line_naming_the_setting() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        with pytest.raises(MetricsPortUnavailable) as caught:
            HealthServer(port, lambda: (True, "ok"), host="127.0.0.1")
        message = str(caught.value)
        assert message == (
            f"metrics port {port} is in use by another process: set HOOKFLEET_METRICS_PORT to a free port,"
            " or stop what holds it"
        )
        # What a role started by the command line prints and exits with: one line, no traceback
        assert MetricsPortUnavailable in cli_module._known_errors()
