"""The account's delivery log search (`GET /v1/deliveries`) and one event's view (`GET /v1/events/{id}`) on a log
of millions of rows.

    .venv/bin/python -m bench.delivery_search                        # 3,000,000 rows of one account + 2,000,000
    .venv/bin/python -m bench.delivery_search --rows 200000 --others 100000   # a quick check of the harness

In a private schema of the configured PostgreSQL (dropped at the end, also on failure): the migrations before
0016, then `--rows` attempt rows of ONE account over 200 of its webhooks and `--others` rows of 40 other
accounts (400 webhooks), spread over the 30 days of the default retention (generate_series, in SQL): 90% 2xx,
5% HTTP 500, 1.5% 503, 0.4% 410, 0.1% 429, 2% timeouts, 1% connection errors; event types skewed (40%
message.read ... 0.1% transfer.created); one event of the account delivered to 5 webhooks with retries and a
dead letter. Then migration 0016 itself, timed (its indexes built on that log: what a rollout waits for).

Then the API's own store code (`api.store.Store`, its pool and queries) is timed for each search: the first
page, a page 20 pages deep, each filter (a common and a rare event type, each outcome, a common, a rare and an
absent status), time ranges, an event id, and combinations; 3 warm-up runs and 15 timed runs each, the median
and max in ms, with the plan's top nodes. And what the new indexes cost the recorder: its batch write
(`RecorderStore.write`, 100 attempts) with and without them, alternating batch by batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from api.store import DeliveryFilter, Store, account_log_query
from bench import machine
from delivery.deliverer import DeliveryResult, attempt_record
from hookfleet.db import bundled_migrations, migrate
from recorder.batch import Batch
from schemas.catalog import EventType, sample_data
from schemas.ids import new_event_id
from schemas.models import Event, NextStep, Outcome

ACCOUNT = "acct_bench"
EVENT = "evt_benchtraced0"
DAYS = 30
NEW_MIGRATION = "0016_event_lookup"

# i % 1000 decides the outcome and the status, (i / 7) % 1000 the type, so the two are independent.
_FILL = """
INSERT INTO delivery_attempts (attempt_id, event_id, event_type, account_id, webhook_id, attempt, outcome,
    status_code, error, response_ms, response_excerpt, attempted_at, next_step)
SELECT 'att_' || %(tag)s || lpad(i::text, 9, '0'), 'evt_' || %(tag)s || lpad(i::text, 9, '0'),
    CASE WHEN (i / 7) %% 1000 < 400 THEN 'message.read' WHEN (i / 7) %% 1000 < 600 THEN 'message.sent'
         WHEN (i / 7) %% 1000 < 750 THEN 'message.delivered' WHEN (i / 7) %% 1000 < 850 THEN 'message.incoming'
         WHEN (i / 7) %% 1000 < 920 THEN 'contact.updated' WHEN (i / 7) %% 1000 < 970 THEN 'contact.created'
         WHEN (i / 7) %% 1000 < 990 THEN 'message.failed' WHEN (i / 7) %% 1000 < 999 THEN 'campaign.completed'
         ELSE 'transfer.created' END,
    %(account)s || CASE WHEN %(accounts)s > 1 THEN (i %% %(accounts)s)::text ELSE '' END,
    %(webhook)s || (i %% %(webhooks)s)::text, 1 + (i %% 4 = 0)::int,
    CASE WHEN i %% 1000 < 900 THEN 'success' WHEN i %% 1000 < 975 THEN 'http_error'
         WHEN i %% 1000 < 990 THEN 'timeout' ELSE 'connection_error' END,
    CASE WHEN i %% 1000 < 900 THEN 200 WHEN i %% 1000 < 950 THEN 500 WHEN i %% 1000 < 965 THEN 503
         WHEN i %% 1000 < 969 THEN 410 WHEN i %% 1000 < 970 THEN 429 WHEN i %% 1000 < 975 THEN 500 END,
    CASE WHEN i %% 1000 < 900 THEN NULL WHEN i %% 1000 < 975 THEN 'http error' WHEN i %% 1000 < 990 THEN 'timeout'
         ELSE 'connection refused' END,
    5 + (i::bigint * 7919) %% 496, 'ok', %(until)s - (i::bigint * %(step_us)s) * interval '1 microsecond', 'done'
FROM generate_series(%(first)s::int, %(last)s::int) i
"""


def _fill(conn: psycopg.Connection[Any], rows: int, others: int, now: datetime) -> None:
    for i in range(DAYS + 1):
        conn.execute("SELECT hookfleet_create_log_day(%s)", ((now - timedelta(days=i)).date(),))
    until = now - timedelta(seconds=1)
    chunk = 500_000
    for tag, account, accounts, webhook, webhooks, count in (
        ("b", ACCOUNT, 1, "wh_b", 200, rows),
        ("o", "acct_o", 40, "wh_o", 400, others),
    ):
        step_us = int(DAYS * 86_400_000_000 // max(count, 1))
        for first in range(1, count + 1, chunk):
            conn.execute(
                _FILL,
                {
                    "tag": tag,
                    "account": account,
                    "accounts": accounts,
                    "webhook": webhook,
                    "webhooks": webhooks,
                    "until": until,
                    "step_us": step_us,
                    "first": first,
                    "last": min(first + chunk - 1, count),
                },
            )


def _trace_event(database_url: str, now: datetime) -> None:
    """One event of the account as the recorder writes it: 5 webhooks, retries, one dead letter."""
    from recorder.batch import DeadLetter
    from recorder.store import RecorderStore
    from schemas.models import DeliveryTask

    at = now - timedelta(days=3)
    event = Event(id=EVENT, type=EventType.MESSAGE_READ, created_at=at, account_id=ACCOUNT, data={"n": 1})
    batch = Batch()
    offset = 0
    for w in range(5):
        statuses = [200] if w < 3 else [500, 200] if w == 3 else [503, 503, 503, 503]
        for n, status in enumerate(statuses, start=1):
            ok = status == 200
            step: NextStep = "done" if ok else "dead" if n == 4 else "retry"
            result = DeliveryResult(
                Outcome.SUCCESS if ok else Outcome.HTTP_ERROR, status, None, 30, "", at + timedelta(seconds=n)
            )
            batch.add("attempts", 0, offset, attempt_record(event, f"wh_b{w}", n, result, step))
            offset += 1
    task = DeliveryTask(event=event, webhook_id="wh_b4", attempt=4, due_at=int((at.timestamp() + 5) * 1000))
    batch.add("dead", 0, offset, DeadLetter(task))
    store = RecorderStore(database_url)
    try:
        store.write(batch)
    finally:
        store.close()


Case = tuple[str, DeliveryFilter]


def _cases(now: datetime) -> list[Case]:
    ten_days = now - timedelta(days=10)
    return [
        ("first page", DeliveryFilter()),
        ("event type, common (message.read, 40%)", DeliveryFilter(event_type="message.read")),
        ("event type, rare (transfer.created, 0.1%)", DeliveryFilter(event_type="transfer.created")),
        ("event type, none of them (webhook.disabled)", DeliveryFilter(event_type="webhook.disabled")),
        ("outcome success", DeliveryFilter(outcome="success")),
        ("outcome http_error (7.5%)", DeliveryFilter(outcome="http_error")),
        ("outcome timeout (1.5%)", DeliveryFilter(outcome="timeout")),
        ("outcome tls_error (none)", DeliveryFilter(outcome="tls_error")),
        ("status 200", DeliveryFilter(status_code=200)),
        ("status 503 (1.5%)", DeliveryFilter(status_code=503)),
        ("status 429 (0.1%)", DeliveryFilter(status_code=429)),
        ("status 418 (none)", DeliveryFilter(status_code=418)),
        ("one hour, 10 days ago", DeliveryFilter(since=ten_days, until=ten_days + timedelta(hours=1))),
        ("one day, 10 days ago", DeliveryFilter(since=ten_days, until=ten_days + timedelta(days=1))),
        ("since 10 days ago", DeliveryFilter(since=ten_days)),
        ("event id", DeliveryFilter(event_id=EVENT)),
        ("event id of another account", DeliveryFilter(event_id="evt_o000000007")),
        ("rare type + timeout", DeliveryFilter(event_type="transfer.created", outcome="timeout")),
        ("common type + status 503, one day", DeliveryFilter(event_type="message.read", status_code=503,
                                                             since=ten_days, until=ten_days + timedelta(days=1))),
    ]  # fmt: skip


async def _timed(call: Callable[..., Awaitable[Any]], *args: Any, runs: int = 15) -> tuple[dict[str, float], Any]:
    for _ in range(3 if runs > 5 else 1):
        answer = await call(*args)
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        answer = await call(*args)
        samples.append((time.perf_counter() - began) * 1000)
    return {"median_ms": round(statistics.median(samples), 2), "max_ms": round(max(samples), 2)}, answer


def _plan(conn: psycopg.Connection[Any], where: DeliveryFilter, limit: int) -> str:
    """The plan's nodes down to the first per-partition scan, with what it read (EXPLAIN ANALYZE)."""
    query, params = account_log_query(ACCOUNT, where, limit)
    rows = conn.execute(psycopg.sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) ") + query, params).fetchall()
    lines = [str(r[0]).strip().removeprefix("->  ") for r in rows]
    scans = [line for line in lines if " Scan " in line or line.startswith(("Index", "Seq", "Bitmap"))]
    top = [line.split(" (actual")[0] for line in lines[:3]]
    return " / ".join([*top, scans[0].split(" on ")[0] if scans else ""])


async def _searches(url: str, now: datetime) -> dict[str, Any]:
    store = await Store.open(url, max_size=2)
    results: dict[str, Any] = {}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for name, where in _cases(now):
                timing, rows = await _timed(store.search_deliveries, ACCOUNT, where, 51)
                results[name] = {**timing, "rows": len(rows), "plan": _plan(conn, where, 51)}
                print(f"  {name}: {json.dumps(results[name])}", flush=True)
            # 20 pages deep: the keyset cursor makes page 20 an index range scan like page 1
            where = DeliveryFilter()
            for _ in range(19):
                page = await store.search_deliveries(ACCOUNT, where, 51)
                last = page[49][1]
                where = DeliveryFilter(before=(last.attempted_at, last.attempt_id))
            timing, rows = await _timed(store.search_deliveries, ACCOUNT, where, 51)
            results["page 20 (cursor)"] = {**timing, "rows": len(rows), "plan": _plan(conn, where, 51)}
            deep = replace(where, outcome="timeout")
            timing, rows = await _timed(store.search_deliveries, ACCOUNT, deep, 51)
            results["timeouts after that cursor"] = {**timing, "rows": len(rows)}
            timing, trace = await _timed(store.event_trace, ACCOUNT, EVENT)
            assert trace is not None and len(trace.attempts) == 9 and len(trace.dead_letters) == 1
            results["GET /v1/events/{id}: the event's store work"] = {**timing, "attempts": len(trace.attempts)}
            timing, none = await _timed(store.event_trace, ACCOUNT, "evt_o000000007")
            assert none is None
            results["GET /v1/events/{id}: another account's event (404)"] = timing
    finally:
        await store.close()
    print(f"  deep: {json.dumps({k: v for k, v in results.items() if 'page 20' in k or 'events' in k})}", flush=True)
    return results


NEW_LOG_INDEXES = (
    "delivery_attempts_account_idx",
    "delivery_attempts_account_type_idx",
    "delivery_attempts_account_failed_idx",
    "delivery_attempts_account_failed_status_idx",
)

CONTRAST = ("first page", "event type, rare (transfer.created, 0.1%)", "event type, none of them (webhook.disabled)",
            "outcome timeout (1.5%)", "status 429 (0.1%)", "status 418 (none)")  # fmt: skip


async def _without_new_indexes(url: str, now: datetime) -> dict[str, Any]:
    """For contrast: some searches with only the indexes the log had before 0016 (5 timed runs each)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name in NEW_LOG_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
    store = await Store.open(url, max_size=2)
    results: dict[str, Any] = {}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for name, where in _cases(now):
                if name in CONTRAST:
                    timing, rows = await _timed(store.search_deliveries, ACCOUNT, where, 51, runs=5)
                    results[name] = {**timing, "rows": len(rows), "plan": _plan(conn, where, 51)}
                    print(f"  without 0016: {name}: {json.dumps(results[name])}", flush=True)
    finally:
        await store.close()
    return results


def _write_cost(url: str, batches: int = 120, size: int = 100) -> dict[str, Any]:
    """The recorder's batch write (100 attempts of the account to 50 webhooks, 10% failures, and their payloads)
    with the 0016 indexes, against the same write with them dropped, alternating batch by batch."""
    from recorder.store import RecorderStore

    now = datetime.now(UTC)
    timings: dict[str, list[float]] = {"with_0016_indexes": [], "without": []}
    store = RecorderStore(url)
    indexes = list(NEW_LOG_INDEXES)
    with psycopg.connect(url, autocommit=True) as conn:
        definitions = [
            str(conn.execute("SELECT pg_get_indexdef(%s::regclass)", (name,)).fetchone()[0])  # type: ignore[index]
            for name in indexes
        ]
        try:
            for n in range(batches):
                with_indexes = n % 2 == 1
                if with_indexes and conn.execute("SELECT to_regclass(%s)", (indexes[0],)).fetchone() == (None,):
                    for definition in definitions:
                        conn.execute(definition)
                elif not with_indexes:
                    for name in indexes:
                        conn.execute(f"DROP INDEX IF EXISTS {name}")
                batch = Batch()
                for i in range(size):
                    event = Event(
                        id=new_event_id(),
                        type=EventType.MESSAGE_READ,
                        created_at=now,
                        account_id=ACCOUNT,
                        data=sample_data(EventType.MESSAGE_READ),
                    )
                    ok = i % 10 != 0
                    result = DeliveryResult(
                        Outcome.SUCCESS if ok else Outcome.HTTP_ERROR,
                        200 if ok else 500,
                        None if ok else "http 500",
                        5 + i,
                        "ok",
                        now - timedelta(seconds=n),
                    )
                    record = attempt_record(event, f"wh_write{i % 50}", 1, result, "done" if ok else "retry")
                    batch.add("attempts", 0, n * size + i, record)
                began = time.perf_counter()
                store.write(batch)
                timings["with_0016_indexes" if with_indexes else "without"].append((time.perf_counter() - began) * 1000)
        finally:
            store.close()
            for definition in definitions:
                conn.execute(definition.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))
    return {name: {"batches": len(t), "p50_ms": round(statistics.median(t), 1)} for name, t in timings.items()}


def run(database_url: str, rows: int, others: int) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": machine.describe(),
        "rows_of_the_account": rows,
        "rows_of_other_accounts": others,
        "days": DAYS,
    }
    schema = f"bench_search_{uuid.uuid4().hex[:8]}"
    url = psycopg.conninfo.make_conninfo(database_url, options=f"-c search_path={schema}")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        before = [m for m in bundled_migrations() if m.version < NEW_MIGRATION]
        new = [m for m in bundled_migrations() if m.version == NEW_MIGRATION]
        migrate(url, before)
        now = datetime.now(UTC)
        with psycopg.connect(url, autocommit=True) as conn:
            began = time.monotonic()
            _fill(conn, rows, others, now)
            report["fill_s"] = round(time.monotonic() - began, 1)
            conn.execute("VACUUM ANALYZE delivery_attempts")
        print(f"filled {rows + others} rows in {report['fill_s']} s", flush=True)
        began = time.monotonic()
        migrate(url, new)
        report["migration_0016_s"] = round(time.monotonic() - began, 1)
        print(f"migration 0016 on that log: {report['migration_0016_s']} s", flush=True)
        _trace_event(url, now)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE delivery_attempts")
            conn.execute("ANALYZE dead_letters")
            kinds = {  # name patterns of the day partitions' indexes
                "account": "%account_id_attempted%",
                "account + type": "%account_id_event_type%",
                "failed by outcome (partial)": "%account_id_outcome%",
                "failed by status (partial)": "%account_id_status_code%",
                "webhook (0001, for scale)": "%webhook_id_attempted%",
            }
            report["index_mb"] = {}
            for name, pattern in kinds.items():
                size = conn.execute(
                    "SELECT coalesce(sum(pg_relation_size(c.oid)), 0) FROM pg_class c"
                    " WHERE c.relkind = 'i' AND c.relnamespace = current_schema()::regnamespace AND c.relname LIKE %s",
                    (pattern,),
                ).fetchone()
                report["index_mb"][name] = round(int(size[0]) / 1e6, 1) if size else 0.0
        report["searches"] = asyncio.run(_searches(url, now))
        report["recorder_batch_write"] = _write_cost(url)
        report["without_0016_log_indexes"] = asyncio.run(_without_new_indexes(url, now))
        print(json.dumps({k: report[k] for k in ("index_mb", "recorder_batch_write")}), flush=True)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    report["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return report


def main() -> None:
    from hookfleet.settings import CommonSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3_000_000, help="attempt rows of the searched account")
    parser.add_argument("--others", type=int, default=2_000_000, help="attempt rows of 40 other accounts")
    args = parser.parse_args()
    report = run(CommonSettings().database_url.get_secret_value(), args.rows, args.others)
    print(machine.save_report("delivery_search", report))


if __name__ == "__main__":
    main()
