"""Prometheus metrics of every role, the loop heartbeat, and the `/metrics` + `/livez` + `/readyz` server.

All metrics are defined here so the dashboard, the alert rules and the code agree on names. Labels stay
low-cardinality: event type, outcome, stage, topic, partition, group. Never an account, webhook or URL on
a hot metric; the one exception is `hookfleet_webhook_failures_top`, a recorder-side gauge bounded to the
top `TOP_FAILING_WEBHOOKS` webhooks (see recorder/outcomes.py).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from hookfleet import __version__

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 7.5, 9, 10, 10.5, 12, 15, 30, 60)
"""Dense around the 10 s delivery timeout: a timed-out attempt lands in (10, 10.5], not in (10, 30], so 2 %
timeouts no longer read as a p99 of 20 s; 12-60 cover a raised HOOKFLEET_DELIVERY_TIMEOUT_S."""
SETTLED_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 450, 600, 900, 1800, 3600)
"""Event to settled (delivered or dead-lettered). The whole retry schedule (10 s + 60 s + 5 min, plus four
10 s timeouts) takes at most ~410 s, so the SLO threshold of 600 s is a bucket boundary."""
TOP_FAILING_WEBHOOKS = 10
"""Bound of the only webhook-labelled series (recorder-side, see recorder/outcomes.py)."""

BUILD_INFO = Gauge("hookfleet_build_info", "Always 1: the version and Python of this process", ["version", "python"])
BUILD_INFO.labels(__version__, platform.python_version()).set(1)
READY = Gauge("hookfleet_ready", "1 while this process answers /readyz with 200 (loop alive, broker, group joined)")
DATABASE_UP = Gauge(
    "hookfleet_database_up",
    "1 while this process reaches PostgreSQL, by how it knows (ping: the API, every 5 s; write: the recorder's"
    " last write); only the roles that check export it",
    ["check"],
)
PARTITIONS_ASSIGNED = Gauge(
    "hookfleet_partitions_assigned",
    "Partitions this process's consumers own now; 0 on a ready member beyond the partition count",
)
LOOP_HEARTBEAT_AGE = Gauge(
    "hookfleet_loop_heartbeat_age_seconds", "Seconds since the role's main loop last made progress (liveness)"
)
DELIVERIES = Counter("hookfleet_deliveries", "Delivery attempts by event type and outcome", ["event_type", "outcome"])
DELIVERY_DURATION = Histogram(
    "hookfleet_delivery_duration_seconds", "HTTP attempt duration", ["outcome"], buckets=_ATTEMPT_BUCKETS
)


@functools.cache
def attempt_series(event_type: str, outcome: str) -> tuple[Any, Any]:
    """The attempt counter and duration histogram of one (event type, outcome), looked up once rather than
    on every delivery (`labels()` costs more than the increment after it). Both label sets are closed."""
    return DELIVERIES.labels(event_type, outcome), DELIVERY_DURATION.labels(outcome)


EVENT_TO_DELIVERED = Histogram(
    "hookfleet_event_to_delivered_seconds",
    "Event created_at to a 2xx from the receiver (includes retries)",
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "hookfleet_deliveries_in_flight",
    "Deliveries started and not yet durable (request open, or its outcome not yet acknowledged by the broker)",
)
IN_FLIGHT_LIMIT = Gauge(
    "hookfleet_deliveries_in_flight_limit", "HOOKFLEET_MAX_IN_FLIGHT: above it the dispatcher pauses partitions"
)
PRODUCE_ERRORS = Counter(
    "hookfleet_produce_errors", "Messages the broker refused or never acknowledged, by topic", ["topic"]
)
SUBSCRIPTION_DB_ERRORS = Counter(
    "hookfleet_subscription_db_errors", "Failed subscription loads from PostgreSQL (the last index keeps serving)"
)
SUBSCRIPTIONS_AGE = Gauge(
    "hookfleet_subscriptions_age_seconds", "Seconds since the subscription index last heard from PostgreSQL"
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
DROPPED = Counter(
    "hookfleet_deliveries_dropped", "Tasks dropped: webhook disabled, deleted or gone (410) meanwhile", ["reason"]
)
INVALID_EVENTS = Counter(
    "hookfleet_invalid_events",
    "Messages routed to the invalid topic, by role and kind (hookfleet/stream/diversion.py)",
    ["role", "reason"],
)
EVENTS_CONSUMED = Counter("hookfleet_events_consumed", "Messages consumed by the dispatcher", ["topic_kind"])
FANNED_OUT = Counter("hookfleet_tasks_fanned_out", "Delivery tasks written by the fan-out stage")
IDEMPOTENT_DUPLICATES = Counter(
    "hookfleet_idempotent_duplicates",
    "Events not fanned out: another publish of their idempotency key was fanned out within the window",
)
IDEMPOTENCY_KEYS = Gauge("hookfleet_idempotency_keys", "Idempotency keys the fan-out holds, over its partitions")
IDEMPOTENCY_EVICTED = Counter(
    "hookfleet_idempotency_evicted",
    "Idempotency keys forgotten: expired (their window is over) or bound (HOOKFLEET_IDEMPOTENCY_MAX_KEYS reached,"
    " so the window was shorter for them)",
    ["reason"],
)
SKIPPED_ON_RESTART = Counter(
    "hookfleet_offsets_skipped_on_restart",
    "Offsets the previous owner finished above its last commit (its metadata), not worked again by this owner",
)
RECORDER_BATCH = Histogram(
    "hookfleet_recorder_batch_size", "Rows per recorder transaction", buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000)
)
RECORDER_LAG = Histogram(
    "hookfleet_recorder_write_lag_seconds", "Attempt time to row committed in PostgreSQL", buckets=_LATENCY_BUCKETS
)
RECORDER_DB_ERRORS = Counter("hookfleet_recorder_db_errors", "Failed recorder transactions (retried)")
ITEM_FAILURES = Counter(
    "hookfleet_item_failures",
    "Stored items (operational outbox rows) whose processing failed: marked failed, retried with backoff",
    ["loop"],
)
FAILING_WEBHOOKS = Gauge("hookfleet_failing_webhooks", "Webhooks whose status is failing (re-read every 30 s)")
OUTBOX_ROWS = Gauge(
    "hookfleet_outbox_rows",
    "Unsent operational events (webhook.failing/.recovered/.disabled) by state: pending, failed (waiting for"
    " the next try), given_up (kept for the operator); re-read every 30 s",
    ["state"],
)
OUTBOX_OLDEST_DUE = Gauge(
    "hookfleet_outbox_oldest_due_seconds",
    "How long the oldest operational event that is due to be sent has waited (0 when none is due)",
)


def set_outbox_backlog(pending: int, failed: int, given_up: int, oldest_due_s: float) -> None:
    OUTBOX_ROWS.labels("pending").set(pending)
    OUTBOX_ROWS.labels("failed").set(failed)
    OUTBOX_ROWS.labels("given_up").set(given_up)
    OUTBOX_OLDEST_DUE.set(oldest_due_s)


RECOVERY_REDRIVES_QUEUED = Gauge(
    "hookfleet_recovery_redrives_queued",
    "Dead letters queued by webhook recoveries (redrive on recovery) and not sent yet, over every webhook;"
    " re-read every 30 s",
)
RECOVERY_REDRIVES_OLDEST_OVERDUE = Gauge(
    "hookfleet_recovery_redrives_oldest_overdue_seconds",
    "How long past its due time (its place in its webhook's paced queue) the most overdue queued redrive has"
    " waited (0 when none is due); re-read every 30 s",
)


def set_recovery_redrive_backlog(queued: int, oldest_overdue_s: float) -> None:
    RECOVERY_REDRIVES_QUEUED.set(queued)
    RECOVERY_REDRIVES_OLDEST_OVERDUE.set(oldest_overdue_s)


DELIVERY_SETTLED = Histogram(
    "hookfleet_delivery_settled_seconds",
    "Event created_at to its delivery settled: a 2xx (delivered) or the last failure (dead_lettered); the SLI",
    ["outcome"],
    buckets=SETTLED_BUCKETS,
)
WEBHOOKS_ATTEMPTED = Gauge(
    "hookfleet_webhooks_attempted", "Distinct webhooks with an attempt recorded in the last 10 minutes"
)
WEBHOOKS_SUCCEEDING = Gauge(
    "hookfleet_webhooks_succeeding", "Distinct webhooks with a 2xx recorded in the last 10 minutes"
)
ACCOUNTS_ATTEMPTED = Gauge(
    "hookfleet_accounts_attempted", "Distinct accounts with an attempt recorded in the last 10 minutes (per recorder)"
)
ACCOUNTS_SUCCEEDING = Gauge(
    "hookfleet_accounts_succeeding", "Distinct accounts with a 2xx recorded in the last 10 minutes (per recorder)"
)
HEALTHY_WEBHOOK_MINUTES = Counter(
    "hookfleet_healthy_webhook_minutes",
    "Success SLI: minutes of webhooks that had a 2xx in the hour before, good = a 2xx in the minute",
    ["outcome"],
)
for _minute in ("good", "bad"):  # both series exist from the start, so the SLI's rates read 0, not nothing
    HEALTHY_WEBHOOK_MINUTES.labels(_minute)
WEBHOOK_FAILURES_TOP = Gauge(
    "hookfleet_webhook_failures_top",
    f"Failed attempts in the last 10 minutes of the {TOP_FAILING_WEBHOOKS} worst webhooks (bounded series)",
    ["webhook_id"],
)
CONSUMER_LAG = Gauge("hookfleet_consumer_lag", "High watermark minus committed offset", ["group", "topic", "partition"])
TOPIC_END_OFFSET = Gauge(
    "hookfleet_topic_end_offset",
    "Broker-side: sum of the topic's partition end offsets (messages ever written)",
    ["topic"],
)
GROUP_LAG_MESSAGES = Gauge(
    "hookfleet_group_lag_messages", "Broker-side: end offsets minus the group's committed offsets", ["group", "topic"]
)
GROUP_LAG_SECONDS = Gauge(
    "hookfleet_group_lag_seconds",
    "Broker-side: age of the oldest message the group has not committed past (0 when caught up)",
    ["group", "topic"],
)
RETRY_OVERDUE = Gauge(
    "hookfleet_retry_overdue_seconds",
    "Broker-side: how far past its due_at the oldest unhanded task of a delay topic is (0 when none is due)",
    ["topic"],
)
LAG_EXPORT_ERRORS = Counter("hookfleet_lag_export_errors", "Broker-side lag reads that failed")
GROUP_PARTITION_LAG_SECONDS = Gauge(
    "hookfleet_group_partition_lag_seconds",
    "Broker-side, per partition: age of the oldest message the group has not committed past (0 when caught up;"
    " on a delay topic it includes the wait). Bounded: watched groups x their topics x partitions",
    ["group", "topic", "partition"],
)
TOPIC_RETENTION_SECONDS = Gauge(
    "hookfleet_topic_retention_seconds", "Broker-side: the topic's retention.ms, in seconds", ["topic"]
)
LAG_EXPORT_TIMESTAMP = Gauge(
    "hookfleet_lag_export_timestamp_seconds",
    "Unix time of the last complete broker-side lag read: its age shows the lag series are stale",
)
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
LOG_PARTITION_NEWEST_DAY = Gauge(
    "hookfleet_log_partition_newest_day_timestamp_seconds",
    "Start (UTC midnight, unix seconds) of the newest day partition of each log table; made 3 days ahead",
    ["table"],
)
LOG_PRUNE_DURATION = Histogram(
    "hookfleet_log_prune_duration_seconds",
    "Time to drop the expired day partitions of the delivery log",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LOG_PARTITIONS_DROPPED = Counter("hookfleet_log_partitions_dropped", "Expired day partitions dropped")
REPLAY_EVENTS = Counter("hookfleet_replay_events", "Events of replays, by progress (selected, queued)", ["state"])
REPLAYS_RUNNING = Gauge("hookfleet_replays_running", "Replays this API process is enqueuing now")
FILTERED_OUT = Counter(
    "hookfleet_filtered_out", "Fan-out: deliveries a webhook's filter left out (it gave false)", ["event_type"]
)
FILTER_ERRORS = Counter(
    "hookfleet_filter_errors",
    "Fan-out: deliveries left out because the webhook's filter could not be evaluated on the event",
    ["event_type"],
)


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
        FILTERED_OUT.labels(event_type)
        FILTER_ERRORS.labels(event_type)
        for outcome in outcomes:
            DELIVERIES.labels(event_type, outcome)
    for stage in ("10s", "60s", "5m", "parked"):
        RETRIES_SCHEDULED.labels(stage)
    for reason in ("disabled", "deleted", "unsubscribed", "gone"):
        DROPPED.labels(reason)
    for reason in ("expired", "bound"):
        IDEMPOTENCY_EVICTED.labels(reason)


class MetricsPortUnavailable(OSError):
    """The port for /metrics, /readyz and /livez cannot be served; the message names the setting and the fix."""

    def __init__(self, port: int, cause: OSError) -> None:
        in_use = cause.errno == errno.EADDRINUSE
        why = "is in use by another process" if in_use else f"cannot be bound ({cause.strerror})"
        super().__init__(
            cause.errno,
            f"metrics port {port} {why}: set HOOKFLEET_METRICS_PORT to a free port, or stop what holds it",
        )

    def __str__(self) -> str:
        return str(self.strerror)


class Heartbeat:
    """Liveness of a role: its main loop calls `beat()` every turn; stale after `stale_after_s` without one.

    Liveness checks no dependency on purpose: a broker or database outage makes a role unready (readiness),
    never restarted; only a loop that stopped turning (deadlock, a call that never returns) restarts it.
    A plain float written by one thread and read by the health thread: no lock needed.
    """

    def __init__(self, stale_after_s: float = 60.0) -> None:
        self.stale_after_s = stale_after_s
        self._last = time.monotonic()
        LOOP_HEARTBEAT_AGE.set_function(self.age_s)

    def beat(self) -> None:
        self._last = time.monotonic()

    def age_s(self) -> float:
        return time.monotonic() - self._last

    def alive(self) -> tuple[bool, str]:
        age = self.age_s()
        if age > self.stale_after_s:
            return False, f"main loop made no progress for {age:.0f}s (limit {self.stale_after_s:g}s)"
        return True, f"main loop progressed {age:.1f}s ago"


def _serving() -> tuple[bool, str]:
    return True, "serving (no loop heartbeat registered)"


class HealthServer:
    """Serves `/metrics`, `/livez`, `/readyz` (and `/healthz`, the same as `/readyz`) on a thread, so sync
    and asyncio roles serve them the same way.

    `/readyz` answers 200 only while `ready()` is true (broker reachable and, for consumers, partitions
    assigned), else 503 with the reason: orchestrators stop routing to it. `/livez` answers 200 while the
    `heartbeat` is fresh: orchestrators restart only a role whose loop is stuck, never one that waits for
    its broker or database. Without a heartbeat `/livez` only proves the process serves.
    """

    def __init__(
        self,
        port: int,
        ready: Callable[[], tuple[bool, str]],
        heartbeat: Heartbeat | None = None,
        host: str = "0.0.0.0",  # noqa: S104
    ) -> None:
        ready_fn = ready
        alive_fn = heartbeat.alive if heartbeat is not None else _serving
        READY.set_function(lambda: 1.0 if ready_fn()[0] else 0.0)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
                elif path in ("/readyz", "/healthz"):
                    ok, reason = ready_fn()
                    body = json.dumps({"ready": ok, "reason": reason}).encode()
                    status, ctype = (200 if ok else 503), "application/json"
                elif path == "/livez":
                    ok, reason = alive_fn()
                    body = json.dumps({"alive": ok, "reason": reason}).encode()
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

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:  # one line naming the setting, not a traceback from socketserver
            raise MetricsPortUnavailable(port, exc) from None
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
