"""One trace per event, checked in a real OTLP/HTTP trace backend (tests/support/otlp_backend.py): the roles'
SDK exporters send it OTLP protobuf over HTTP, it decodes the requests with the OTLP definitions, and the test
queries the spans it received."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from schemas.catalog import EventType
from tests.support.fleet import HOOKFLEET, Fleet, seed_account, seed_webhook
from tests.support.otlp_backend import OtlpBackend, Span
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
def otlp() -> Iterator[OtlpBackend]:
    backend = OtlpBackend().start()
    try:
        yield backend
    finally:
        backend.stop()


def test_one_trace_holds_publish_fanout_both_attempts_and_the_record_in_order(
    otlp: OtlpBackend, fleet: Fleet, fleet_env: dict[str, str], receiver: HttpsReceiver, database_url: str
) -> None:
    tracing_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
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

    def complete() -> bool:
        return sum(1 for s in otlp.trace(trace_id) if s.name == "record") >= 2

    assert otlp.wait_for(complete, timeout_s=30, interval_s=0.5), [s.name for s in otlp.trace(trace_id)]
    assert otlp.rejected == []
    found = otlp.trace(trace_id)
    names = [s.name for s in found]
    assert names[:2] == ["publish", "fanout"], names
    assert found[0].service == "hookfleet-producer" and found[0].parent_span_id == ""  # the event's root span
    delivers = [s for s in found if s.name == "deliver"]
    tags = [s.attributes for s in delivers]
    assert [(t["hookfleet.attempt"], t["http.response.status_code"]) for t in tags] == [(1, 500), (2, 200)]
    assert {t["hookfleet.event_type"] for t in tags} == {EventType.MESSAGE_SENT.value}
    assert all("hookfleet.webhook_id" in t and "hookfleet.duration_ms" in t for t in tags)
    last_record = max(s.start_ns for s in found if s.name == "record")
    assert found[0].start_ns <= found[1].start_ns <= delivers[0].start_ns < delivers[1].start_ns
    assert delivers[1].start_ns < last_record
    assert all(s.end_ns >= s.start_ns for s in found), [(s.name, s.start_ns, s.end_ns) for s in found]
    # The receivers saw the attempt spans themselves as parents.
    span_ids = {s.span_id for s in delivers}
    assert {first.headers["traceparent"].split("-")[2], second.headers["traceparent"].split("-")[2]} == span_ids
    # Every span hangs from another span of the same trace, up to the one root.
    by_id: dict[str, Span] = {s.span_id: s for s in found}
    assert all(s.parent_span_id in by_id for s in found[1:]), [(s.name, s.parent_span_id) for s in found]
