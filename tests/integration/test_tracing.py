"""One trace per event, checked in a real trace backend: Jaeger v2 (built once by deploy/local/jaeger.sh,
`make tools`), receiving OTLP/HTTP from the real roles, queried through its HTTP API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.catalog import EventType
from tests.support.fleet import HOOKFLEET, Fleet, seed_account, seed_webhook
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration

JAEGER_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local" / "jaeger.sh"
CONFIG = """
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{query_grpc_port}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 1000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - http://127.0.0.1 built here
        return json.loads(answer.read())


class Jaeger:
    def __init__(self, query_port: int, otlp_port: int) -> None:
        self.query = f"http://127.0.0.1:{query_port}"
        self.otlp = f"http://127.0.0.1:{otlp_port}"

    def traces(self, service: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = _get(f"{self.query}/api/traces?service={service}&limit=20").get("data") or []
        return found


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    built = subprocess.run([str(JAEGER_SCRIPT)], capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, f"deploy/local/jaeger.sh failed (run `make tools`):\n{built.stderr[-2000:]}"
    binary = built.stdout.strip().splitlines()[-1]
    ports = {"query_port": _free_port(), "query_grpc_port": _free_port(), "otlp_port": _free_port()}
    folder = tmp_path_factory.mktemp("jaeger")
    config = folder / "config.yaml"
    config.write_text(CONFIG.format(**ports))
    log = (folder / "jaeger.log").open("wb")
    proc = subprocess.Popen([binary, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    backend = Jaeger(ports["query_port"], ports["otlp_port"])
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (folder / "jaeger.log").read_text()[-3000:]
            try:
                _get(f"{backend.query}/api/services")
                break
            except OSError:
                assert time.monotonic() < deadline, (folder / "jaeger.log").read_text()[-3000:]
                time.sleep(0.3)
        yield backend
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:  # the backend's shutdown is not under test: do not fail on it
            proc.kill()
            proc.wait(10)
        log.close()


def test_one_trace_holds_publish_fanout_both_attempts_and_the_record_in_order(
    jaeger: Jaeger, fleet: Fleet, fleet_env: dict[str, str], receiver: HttpsReceiver, database_url: str
) -> None:
    tracing_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within 0.2 s rather than 5 s
        "HOOKFLEET_TRACE_RECEIVERS": "true",
        "HOOKFLEET_RETRY_DELAYS_S": "[1, 1, 1]",
    }
    seed_account(database_url, "acct_t")
    _, secret = seed_webhook(database_url, "acct_t", receiver.url("/traced"), [EventType.MESSAGE_SENT.value])
    receiver.expect("/traced", secret=secret, statuses=[500, 200])
    fleet.start_dispatcher(**tracing_env)
    fleet.start("retry-scheduler", **tracing_env)
    fleet.start("recorder", **tracing_env)

    published = subprocess.run(
        [HOOKFLEET, "publish", "--account", "acct_t", "--type", EventType.MESSAGE_SENT.value, "--data", "{}"],
        env={**os.environ, **fleet_env, **tracing_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert published.returncode == 0, published.stderr
    assert receiver.wait_for(lambda: len(receiver.at("/traced")) == 2, timeout_s=30)
    first, second = receiver.at("/traced")
    trace_id = first.headers["traceparent"].split("-")[1]
    assert second.headers["traceparent"].split("-")[1] == trace_id  # the retry joined the same trace

    def spans() -> list[dict[str, Any]]:
        for trace in jaeger.traces("hookfleet-producer"):
            if trace["traceID"] == trace_id:
                return sorted(trace["spans"], key=lambda s: s["startTime"])
        return []

    def complete() -> bool:
        return sum(1 for s in spans() if s["operationName"] == "record") >= 2

    assert receiver.wait_for(complete, timeout_s=30, interval_s=0.5), [s["operationName"] for s in spans()]
    found = spans()
    names = [s["operationName"] for s in found]
    assert names[:2] == ["publish", "fanout"], names
    delivers = [s for s in found if s["operationName"] == "deliver"]
    tags = [{t["key"]: t["value"] for t in s["tags"]} for s in delivers]
    assert [(t["hookfleet.attempt"], t["http.response.status_code"]) for t in tags] == [(1, 500), (2, 200)]
    assert {t["hookfleet.event_type"] for t in tags} == {EventType.MESSAGE_SENT.value}
    assert all("hookfleet.webhook_id" in t and "hookfleet.duration_ms" in t for t in tags)
    last_record = max(s["startTime"] for s in found if s["operationName"] == "record")
    assert found[0]["startTime"] <= found[1]["startTime"] <= delivers[0]["startTime"] < delivers[1]["startTime"]
    assert delivers[1]["startTime"] < last_record
    # The receivers saw the attempt spans themselves as parents.
    span_ids = {s["spanID"] for s in delivers}
    assert {first.headers["traceparent"].split("-")[2], second.headers["traceparent"].split("-")[2]} == span_ids
