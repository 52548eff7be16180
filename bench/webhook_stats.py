"""The webhook detail view's health query (`GET /v1/webhooks/{id}/stats`) at 1,000,000 attempt rows for one webhook.

    .venv/bin/python -m bench.webhook_stats                    # 1,000,000 rows of one webhook, 30 days
    .venv/bin/python -m bench.webhook_stats --rows 100000      # a quick check of the harness

In a private schema of the configured PostgreSQL (dropped at the end, also on failure): migrate, create the
day partitions, and write `--rows` attempt rows for ONE webhook (generate_series, in SQL; 1 in 10 an HTTP
error, 1 in 50 a timeout, response times 5-500 ms) plus as many rows of 200 other webhooks, in two layouts:

- `spread`: over the 30 days of the default retention (what a webhook with 1M rows in its log looks like);
- `week`: all of them within the last 7 days (the worst case for the 7-day window: every row is in it).

Then the hourly rollup is built from that log with the writers' own statement (`rollup_sql`, as migration 0008
does), and the API's work for one request is timed: its query (`api.store.STATS_SQL`) and `build_stats`, 24 h
and 7 d windows, 3 warm-up runs and 15 timed runs each; reported: median and max in ms, the attempts in the
window. Target: < 100 ms. For contrast, the 7 d window aggregated straight from the log (median of 5). And
what the rollup costs the recorder: its batch write with and without it, alternating (spread layout only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from api.store import STATS_SQL, StatsRow
from api.webhook_stats import build_stats, window_bounds
from bench import machine
from delivery.deliverer import DeliveryResult, attempt_record
from hookfleet.attempt_rows import rollup_sql
from hookfleet.db import migrate
from recorder.batch import Batch
from schemas.catalog import EventType, sample_data
from schemas.ids import new_event_id
from schemas.models import Event, Outcome

WEBHOOK = "wh_bench0stats"
ACCOUNT = "acct_bench"

_FILL = """
INSERT INTO delivery_attempts (attempt_id, event_id, event_type, account_id, webhook_id, attempt, outcome,
    status_code, error, response_ms, response_excerpt, attempted_at, next_step)
SELECT 'att_' || %(tag)s || lpad(i::text, 9, '0'), 'evt_' || %(tag)s || lpad(i::text, 9, '0'), 'message.read',
    %(account)s, %(webhook)s, 1 + (i %% 3 = 0)::int,
    CASE WHEN i %% 10 = 0 THEN 'http_error' WHEN i %% 50 = 1 THEN 'timeout' ELSE 'success' END,
    CASE WHEN i %% 10 = 0 THEN 500 WHEN i %% 50 = 1 THEN NULL ELSE 200 END,
    CASE WHEN i %% 10 = 0 THEN 'http 500' WHEN i %% 50 = 1 THEN 'timeout' END,
    5 + (i::bigint * 7919) %% 496, 'ok', %(until)s - (i::bigint * %(step_us)s) * interval '1 microsecond', 'done'
FROM generate_series(1, %(rows)s) i
"""


def _fill(conn: psycopg.Connection[Any], rows: int, days: int, now: datetime) -> None:
    step_us = int(days * 86_400_000_000 // rows)
    for i in range(days + 1):
        conn.execute("SELECT hookfleet_create_log_day(%s)", ((now - timedelta(days=i)).date(),))
    until = now - timedelta(seconds=1)
    conn.execute(
        _FILL, {"tag": "t", "account": ACCOUNT, "webhook": WEBHOOK, "until": until, "step_us": step_us, "rows": rows}
    )
    for n in range(200):  # neighbours on the same partitions and indexes
        conn.execute(
            _FILL,
            {
                "tag": f"n{n}x",
                "account": "acct_other",
                "webhook": f"wh_other{n}",
                "until": until,
                "step_us": step_us * 200,
                "rows": rows // 200,
            },
        )


def _time(conn: psycopg.Connection[Any], window: str) -> dict[str, Any]:
    """What the API does for one request: the rollup's rows of the window, then the buckets and percentiles."""
    since, until = window_bounds(window, datetime.now(UTC))  # type: ignore[arg-type]
    params = (WEBHOOK, ACCOUNT, since, until)

    def once() -> Any:
        rows = [StatsRow(*row) for row in conn.execute(STATS_SQL, params).fetchall()]
        return build_stats(WEBHOOK, window, since, until, rows, 0)  # type: ignore[arg-type]

    for _ in range(3):
        once()
    samples = []
    for _ in range(15):
        began = time.perf_counter()
        stats = once()
        samples.append((time.perf_counter() - began) * 1000)
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + STATS_SQL, params).fetchall())
    return {
        "median_ms": round(statistics.median(samples), 2),
        "max_ms": round(max(samples), 2),
        "attempts_in_window": stats.summary.attempts,
        "p50_ms": stats.summary.p50_ms,
        "p95_ms": stats.summary.p95_ms,
        "plan_first_line": plan.splitlines()[0].split("  (")[0],
    }


def _time_log_aggregate(conn: psycopg.Connection[Any], window: str) -> float:
    """For contrast: counting the window straight from the log (the rollup's first design), median of 5 runs."""
    since, until = window_bounds(window, datetime.now(UTC))  # type: ignore[arg-type]
    samples = []
    for _ in range(5):
        began = time.perf_counter()
        conn.execute(_FROM_LOG, (WEBHOOK, ACCOUNT, since, until)).fetchall()
        samples.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(samples), 1)


_FROM_LOG = """
SELECT date_bin('1 hour', attempted_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'), outcome, count(*),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY response_ms),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY response_ms)
FROM delivery_attempts WHERE webhook_id = %s AND account_id = %s AND attempted_at >= %s AND attempted_at < %s
GROUP BY 1, 2
"""


def _write_cost(url: str, batches: int = 200, size: int = 100) -> dict[str, Any]:
    """The recorder's batch write (`RecorderStore.write`, 100 attempts to 50 webhooks and their payloads) with
    the rollup in its statement, against the same statement without it, alternating batch by batch."""
    import recorder.store as recorder_store

    with_rollup = recorder_store._MOVE_STAGED
    without = with_rollup.split(" rolled AS (")[0].rstrip(", ") + " SELECT count(*) FROM moved"  # noqa: S608
    store = recorder_store.RecorderStore(url)
    now = datetime.now(UTC)
    timings: dict[str, list[float]] = {"with_rollup": [], "without": []}
    try:
        for n in range(batches):
            batch = Batch()
            for i in range(size):
                event = Event(
                    id=new_event_id(),
                    type=EventType.MESSAGE_READ,
                    created_at=now,
                    account_id=ACCOUNT,
                    data=sample_data(EventType.MESSAGE_READ),
                )
                result = DeliveryResult(Outcome.SUCCESS, 200, None, 5 + i, "ok", now - timedelta(seconds=n))
                batch.add("attempts", 0, n * size + i, attempt_record(event, f"wh_write{i % 50}", 1, result, "done"))
            variant = "with_rollup" if n % 2 else "without"
            recorder_store._MOVE_STAGED = with_rollup if n % 2 else without
            began = time.perf_counter()
            store.write(batch)
            timings[variant].append((time.perf_counter() - began) * 1000)
    finally:
        recorder_store._MOVE_STAGED = with_rollup
        store.close()
    return {name: {"batches": len(t), "p50_ms": round(statistics.median(t), 1)} for name, t in timings.items()}


def run(database_url: str, rows: int) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine.describe(), "rows_for_the_webhook": rows, "layouts": {}}
    for layout, days in (("spread", 30), ("week", 7)):
        schema = f"bench_stats_{uuid.uuid4().hex[:8]}"
        url = psycopg.conninfo.make_conninfo(database_url, options=f"-c search_path={schema}")
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            migrate(url)
            with psycopg.connect(url, autocommit=True) as conn:
                began = time.monotonic()
                _fill(conn, rows, days, datetime.now(UTC))
                fill_s = round(time.monotonic() - began, 1)
                began = time.monotonic()
                conn.execute(rollup_sql("delivery_attempts"))  # what migration 0008 does with an existing log
                rollup_s = round(time.monotonic() - began, 1)
                conn.execute("VACUUM ANALYZE delivery_attempts")
                conn.execute("VACUUM ANALYZE webhook_stats_hourly")
                result = {
                    "days": days,
                    "fill_s": fill_s,
                    "rollup_backfill_s": rollup_s,
                    "24h": _time(conn, "24h"),
                    "7d": _time(conn, "7d"),
                    "7d_from_the_log_ms": _time_log_aggregate(conn, "7d"),
                }
            if layout == "spread":
                result["recorder_batch_write"] = _write_cost(url)
            report["layouts"][layout] = result
            print(layout, json.dumps(result), flush=True)
        finally:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return report


def main() -> None:
    from hookfleet.settings import CommonSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    report = run(CommonSettings().database_url.get_secret_value(), args.rows)
    machine.save_report("webhook_stats", report)


if __name__ == "__main__":
    main()
