"""Prometheus metrics of every role, and the `/metrics` + `/healthz` server.

All metrics are defined here so the dashboard, the alert rules and the code agree on names. Labels stay
low-cardinality: event type, outcome, stage, topic, partition, group. Never an account, webhook or URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

DELIVERIES = Counter("hookfleet_deliveries", "Delivery attempts by event type and outcome", ["event_type", "outcome"])
DELIVERY_DURATION = Histogram(
    "hookfleet_delivery_duration_seconds", "HTTP attempt duration", ["outcome"], buckets=_LATENCY_BUCKETS
)
EVENT_TO_DELIVERED = Histogram(
    "hookfleet_event_to_delivered_seconds",
    "Event created_at to a 2xx from the receiver (includes retries)",
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "hookfleet_deliveries_in_flight",
    "Deliveries started and not yet durable (request open, or its outcome not yet acknowledged by the broker)",
)
PARTITIONS_PAUSED = Gauge("hookfleet_partitions_paused", "Partitions paused for backpressure or not-yet-due retries")
RETRIES_SCHEDULED = Counter(
    "hookfleet_retries_scheduled", "Tasks written to a delay topic, by stage (10s, 60s, 5m, parked)", ["stage"]
)
RETRY_LATENESS = Histogram(
    "hookfleet_retry_lateness_seconds",
    "Hand-off time minus due_at of a retry task",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
DEAD_LETTERS = Counter("hookfleet_dead_letters", "Deliveries dead-lettered after the last retry", ["event_type"])
DROPPED = Counter("hookfleet_deliveries_dropped", "Tasks dropped: webhook disabled or deleted meanwhile", ["reason"])
INVALID_EVENTS = Counter("hookfleet_invalid_events", "Messages routed to the invalid topic", ["reason"])
EVENTS_CONSUMED = Counter("hookfleet_events_consumed", "Messages consumed by the dispatcher", ["topic_kind"])
FANNED_OUT = Counter("hookfleet_tasks_fanned_out", "Delivery tasks written by the fan-out stage")
SKIPPED_ON_RESTART = Counter(
    "hookfleet_offsets_skipped_on_restart", "Consumed messages skipped: finished before the previous owner's commit"
)
RECORDER_BATCH = Histogram(
    "hookfleet_recorder_batch_size", "Rows per recorder transaction", buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000)
)
RECORDER_LAG = Histogram(
    "hookfleet_recorder_write_lag_seconds", "Attempt time to row committed in PostgreSQL", buckets=_LATENCY_BUCKETS
)
RECORDER_DB_ERRORS = Counter("hookfleet_recorder_db_errors", "Failed recorder transactions (retried)")
FAILING_WEBHOOKS = Gauge("hookfleet_failing_webhooks", "Webhooks whose status is failing")
CONSUMER_LAG = Gauge("hookfleet_consumer_lag", "High watermark minus committed offset", ["group", "topic", "partition"])
API_REQUESTS = Counter("hookfleet_api_requests", "API requests by operation and status class", ["operation", "status"])
API_REQUEST_DURATION = Histogram(
    "hookfleet_api_request_duration_seconds",
    "API request duration by operation",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)

LOG_PARTITION_ROWS = Gauge(
    "hookfleet_log_partition_rows", "Rows of a delivery-log day partition (planner estimate)", ["table", "day"]
)
LOG_PARTITION_BYTES = Gauge(
    "hookfleet_log_partition_bytes", "Bytes of a delivery-log day partition, indexes included", ["table", "day"]
)
LOG_PRUNE_DURATION = Histogram(
    "hookfleet_log_prune_duration_seconds",
    "Time to drop the expired day partitions of the delivery log",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LOG_PARTITIONS_DROPPED = Counter("hookfleet_log_partitions_dropped", "Expired day partitions dropped")
REPLAY_EVENTS = Counter("hookfleet_replay_events", "Events of replays, by progress (selected, queued)", ["state"])
REPLAYS_RUNNING = Gauge("hookfleet_replays_running", "Replays this API process is enqueuing now")


def stats_callback(group: str) -> Callable[[str], None]:
    """librdkafka `stats_cb`: publishes per-partition consumer lag (enable with statistics.interval.ms).

    Series of partitions this consumer no longer fetches are removed, so a rebalance does not leave a
    stale lag behind for the lag alert to read.
    """
    reported: set[tuple[str, str]] = set()

    def on_stats(raw: str) -> None:
        try:
            stats: dict[str, Any] = json.loads(raw)
        except ValueError:
            return
        current: set[tuple[str, str]] = set()
        for topic, tstats in stats.get("topics", {}).items():
            for partition, pstats in tstats.get("partitions", {}).items():
                if partition == "-1" or pstats.get("fetch_state") in (None, "none", "stopped"):
                    continue
                lag = pstats.get("consumer_lag_stored", pstats.get("consumer_lag", -1))
                if lag is not None and lag >= 0:
                    CONSUMER_LAG.labels(group, topic, partition).set(lag)
                    current.add((topic, partition))
        for topic, partition in reported - current:
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(group, topic, partition)
        reported.clear()
        reported.update(current)

    return on_stats


def init_label_values(event_types: Iterable[str], outcomes: Iterable[str]) -> None:
    """Create every known labelled series at 0, so `increase()` and alerts see the first occurrence of a
    dead letter or an outcome, not only the second."""
    outcomes = list(outcomes)
    for event_type in event_types:
        DEAD_LETTERS.labels(event_type)
        for outcome in outcomes:
            DELIVERIES.labels(event_type, outcome)
    for stage in ("10s", "60s", "5m", "parked"):
        RETRIES_SCHEDULED.labels(stage)
    for reason in ("disabled", "deleted", "unsubscribed"):
        DROPPED.labels(reason)


class HealthServer:
    """Serves `/metrics` and `/healthz` on a thread, so sync and asyncio roles serve them the same way.

    `/healthz` answers 200 only while `ready()` is true (connected to the broker and, for consumers,
    assigned), else 503 with the reason, so orchestrators route and restart on real state.
    """

    def __init__(self, port: int, ready: Callable[[], tuple[bool, str]], host: str = "0.0.0.0") -> None:  # noqa: S104
        ready_fn = ready

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
                elif self.path.startswith("/healthz"):
                    ok, reason = ready_fn()
                    body = json.dumps({"ready": ok, "reason": reason}).encode()
                    status, ctype = (200 if ok else 503), "application/json"
                else:
                    body, status, ctype = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-server", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("event=health_server_started port=%d", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
