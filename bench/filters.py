"""Webhook filters: what one costs at fan-out, and the preview's time on a large stored log.

    .venv/bin/python -m bench.filters                     # both parts, a log of 1,000,000 events
    .venv/bin/python -m bench.filters --events 100000     # a quick check of the harness
    .venv/bin/python -m bench.filters --skip-preview      # evaluation cost only (no database)

Evaluation: `dispatcher.fanout.apply_filters` (the fan-out's own code on `cel-expr-python`: the event
converted once, then each filter) on a catalog-sized event and on a 12 KB one, with 1 and with 10 filtered
webhooks, beside the same work with the Rust binding `common-expression-language` (a context made once per
event, then each program). Rounds interleave the two, so machine load hits both alike; the median and the
best round are printed, in microseconds per event.

Preview: in a private schema of the configured PostgreSQL (dropped at the end, also on failure): migrate,
COPY `--events` stored events over 7 days, half of them one account's, then time the real API's
`POST /v1/webhooks/{id}/filter-preview` (in process, over HTTP): the first page at the default and the
maximum `limit`, and the whole week page by page at the maximum; and the time to build migration 0012's
index on that log.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from bench import machine
from delivery.endpoint import Endpoint
from dispatcher.fanout import apply_filters
from schemas.catalog import EventType, sample_data
from schemas.models import Event

FILTERS = (
    'account_id == "acct_bench" && data.channel == "whatsapp"',
    'data.contact.name.startsWith("Ana") && data.direction == "outbound"',
    'data.channel in ["whatsapp", "sms"] && has(data.sent_by)',
)
ROUNDS = 15


def _event(large: bool) -> Event:
    data = sample_data(EventType.MESSAGE_SENT)
    if large:  # 200 more fields of 50 characters: a 12 KB payload
        data["attributes"] = {f"attr_{n}": "v" * 50 for n in range(200)}
    return Event(
        id="evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W",
        type=EventType.MESSAGE_SENT,
        created_at=datetime.now(UTC),
        account_id="acct_bench",
        data=data,
    )


def _endpoints(count: int) -> list[Endpoint]:
    return [
        Endpoint(
            f"wh_{n}", "acct_bench", "https://example.com/", frozenset({EventType.MESSAGE_SENT}), True, "whsec_x",
            filter=FILTERS[n % len(FILTERS)],
        )
        for n in range(count)
    ]  # fmt: skip


def _time_per_event(work: Any, events: list[Any]) -> float:
    started = time.perf_counter()
    for event in events:
        work(event)
    return (time.perf_counter() - started) / len(events) * 1e6


def evaluation(per_round: int) -> dict[str, Any]:
    import cel as rust  # common-expression-language, the test extra

    rust_programs = [rust.compile(text) for text in FILTERS]
    report: dict[str, Any] = {}
    for size in ("catalog", "12kb"):
        # A fresh model per event, as fan-out sees: nothing converted by an earlier evaluation is reused.
        events = [_event(size == "12kb") for _ in range(per_round)]
        for webhooks in (1, 10):
            endpoints = _endpoints(webhooks)
            programs = [rust_programs[n % len(FILTERS)] for n in range(webhooks)]
            assert len(apply_filters(events[0], endpoints).endpoints) == webhooks  # every filter passes

            def rust_eval(event: Event, programs: list[Any] = programs) -> None:
                context = rust.Context({"type": event.type.value, "account_id": event.account_id, "data": event.data})
                for program in programs:
                    assert program.execute(context) is True

            chosen: list[float] = []
            alternative: list[float] = []
            for _ in range(ROUNDS):
                chosen.append(_time_per_event(lambda e, eps=endpoints: apply_filters(e, eps), events))
                alternative.append(_time_per_event(rust_eval, events))
            key = f"{size}_event_{webhooks}_webhooks"
            report[key] = {
                "cel-expr-python_us": {"median": _r(chosen), "best": round(min(chosen), 2)},
                "common-expression-language_us": {"median": _r(alternative), "best": round(min(alternative), 2)},
            }
            print(
                f"{key}: cel-expr-python (fan-out's apply_filters) {_r(chosen)} us/event (best {min(chosen):.2f}),"
                f" common-expression-language {_r(alternative)} us/event (best {min(alternative):.2f})",
                flush=True,
            )
    return report


def _r(values: list[float]) -> float:
    return round(statistics.median(values), 2)


# ------------------------------------------------------------------------------------------ preview

ACCOUNT = "acct_preview"
CHANNELS = ("whatsapp", "sms", "email")


def _rows(count: int, today: date) -> Any:
    """(event_id, account_id, event JSON, logged_on): half the account's, over 7 days; 8 of 10 of its events
    are of the two subscribed types, and one in ten lacks `channel` (the filter errors on it)."""
    rng = random.Random(7)
    types = [t.value for t in EventType if not t.value.startswith("webhook.")]
    for n in range(count):
        day = today - timedelta(days=n % 7)
        account = ACCOUNT if n % 2 == 0 else f"acct_other_{n % 40}"
        event_type = (
            ("message.incoming", "message.sent")[n % 2 == 0 and rng.random() < 0.5]
            if rng.random() < 0.8
            else (rng.choice(types))
        )
        data: dict[str, Any] = {"message_id": f"msg_{n}", "text": "Hi, is my order on its way?", "n": n}
        if rng.random() >= 0.1:
            data["channel"] = rng.choice(CHANNELS)
        event_id = f"evt_{n:026d}"
        event = {"id": event_id, "type": event_type, "created_at": f"{day}T10:00:00.000Z", "account_id": account,
                 "data": data}  # fmt: skip
        yield event_id, account, json.dumps(event), day


async def _preview_timings(url: str, days: int) -> dict[str, Any]:
    from aiohttp.test_utils import TestClient, TestServer

    from api.accounts import create_account
    from api.app import build_app
    from hookfleet.settings import LOCAL_KAFKA, ApiSettings

    settings = ApiSettings(
        database_url=url,
        kafka_bootstrap_servers=os.environ.get("HOOKFLEET_KAFKA_BOOTSTRAP_SERVERS", LOCAL_KAFKA),
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        secret_key=base64.b64encode(os.urandom(32)).decode(),
        allow_networks=["127.0.0.0/8"],
        filter_previews_per_minute=10_000,  # the whole-range walk asks for every page
    )
    _, key = create_account(url, "Preview", ACCOUNT)
    auth = {"Authorization": f"Bearer {key}"}
    client = TestClient(TestServer(build_app(settings), host="127.0.0.1"))
    await client.start_server()
    try:
        created = await client.post(
            "/v1/webhooks",
            json={"name": "Bench", "url": "https://127.0.0.1:9/x", "events": ["message.incoming", "message.sent"]},
            headers=auth,
        )
        assert created.status == 201, await created.text()
        path = f"/v1/webhooks/{(await created.json())['id']}/filter-preview"
        body = {"filter": 'data.channel == "whatsapp"', "days": days}

        async def page(**extra: Any) -> tuple[float, dict[str, Any]]:
            started = time.perf_counter()
            reply = await client.post(path, json={**body, **extra}, headers=auth)
            answer = await reply.json()
            assert reply.status == 200, answer
            return time.perf_counter() - started, answer

        report: dict[str, Any] = {}
        for limit in (1_000, 10_000):
            runs = [await page(limit=limit) for _ in range(5)]
            seconds = sorted(s for s, _ in runs)
            report[f"first_page_limit_{limit}"] = {
                "median_ms": round(statistics.median(seconds) * 1000, 1),
                "max_ms": round(seconds[-1] * 1000, 1),
                "scanned": runs[0][1]["scanned"],
                "cut_short": runs[0][1]["cut_short"],
            }
            print(f"first page, limit {limit}: {report[f'first_page_limit_{limit}']}", flush=True)
        totals = {"scanned": 0, "matched": 0, "not_matched": 0, "errored": 0, "other_types": 0}
        pages = cut = 0
        slowest = 0.0
        started = time.perf_counter()
        cursor = None
        while True:
            took, answer = await page(limit=10_000, **({"cursor": cursor} if cursor else {}))
            slowest = max(slowest, took)
            pages += 1
            cut += answer["cut_short"]
            totals = {k: v + answer[k] for k, v in totals.items()}
            cursor = answer["next_cursor"]
            if cursor is None:
                break
        report["whole_range"] = {
            "seconds": round(time.perf_counter() - started, 2),
            "pages": pages,
            "pages_cut_short": cut,
            "slowest_page_ms": round(slowest * 1000, 1),
            **totals,
        }
        print(f"whole range: {report['whole_range']}", flush=True)
        return report
    finally:
        await client.close()


def preview(database_url: str, events: int) -> dict[str, Any]:
    from hookfleet.db import migrate

    schema = f"bench_filters_{uuid.uuid4().hex[:8]}"
    url = psycopg.conninfo.make_conninfo(database_url, options=f"-c search_path={schema}")
    report: dict[str, Any] = {"events": events}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        migrate(url)
        today = datetime.now(UTC).date()
        with psycopg.connect(url, autocommit=True) as conn:
            for back in range(7):
                conn.execute("SELECT hookfleet_create_log_day(%s)", (today - timedelta(days=back),))
            conn.execute("DROP INDEX event_payloads_account_idx")
            started = time.monotonic()
            with (
                conn.cursor() as cur,
                cur.copy("COPY event_payloads (event_id, account_id, event, logged_on) FROM STDIN") as copy,
            ):
                for row in _rows(events, today):
                    copy.write_row(row)
            report["copy_s"] = round(time.monotonic() - started, 1)
            started = time.monotonic()
            conn.execute(
                "CREATE INDEX event_payloads_account_idx ON event_payloads (account_id, logged_on DESC, event_id DESC)"
            )
            report["index_build_s"] = round(time.monotonic() - started, 1)
            conn.execute("ANALYZE event_payloads")
            size = conn.execute(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                " WHERE inhparent = 'event_payloads'::regclass"
            ).fetchone()
            report["log_bytes"] = int(size[0]) if size and size[0] else 0
        print(
            f"seeded {events:,} events in {report['copy_s']} s, index built in {report['index_build_s']} s", flush=True
        )
        report.update(asyncio.run(_preview_timings(url, 7)))
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return report


def main() -> None:
    from hookfleet.settings import CommonSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="stored events for the preview")
    parser.add_argument("--per-round", type=int, default=2_000, help="events per evaluation round")
    parser.add_argument("--skip-preview", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": machine.describe(), "evaluation": evaluation(args.per_round)}
    if not args.skip_preview:
        report["preview"] = preview(CommonSettings().database_url.get_secret_value(), args.events)
    machine.save_report("filters", report)
    print(json.dumps(report["machine"]))


if __name__ == "__main__":
    main()
