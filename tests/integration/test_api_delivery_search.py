"""The delivery log of every webhook of an account (`GET /v1/deliveries`) on real PostgreSQL, its rows written by
the recorder's own batch write: newest first across webhooks, each filter exactly, keyset pages that neither
skip nor repeat a row while the log grows, another account's rows never, and a 422 naming each bad field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from delivery.deliverer import DeliveryResult, attempt_record
from producer.publisher import build_event
from recorder.batch import Batch
from recorder.store import RecorderStore
from schemas.catalog import EventType
from schemas.models import AttemptRecord, Outcome
from tests.support.api_client import RunningApi, api_settings
from tests.support.fleet import TEST_SECRET_KEY, seed_webhook

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str) -> AsyncIterator[RunningApi]:
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, secret_key=TEST_SECRET_KEY)
    async with RunningApi(settings) as running:
        yield running


@dataclass(frozen=True)
class Row:
    attempt_id: str
    event_id: str
    webhook_id: str
    event_type: str
    outcome: str
    status: int | None
    at: datetime


def write(database_url: str, records: list[AttemptRecord]) -> None:
    batch = Batch()
    for offset, record in enumerate(records):
        batch.add("attempts", 0, offset, record)
    store = RecorderStore(database_url)
    try:
        store.write(batch)
    finally:
        store.close()


OUTCOMES: list[tuple[Outcome, int | None]] = [
    (Outcome.SUCCESS, 200),
    (Outcome.HTTP_ERROR, 503),
    (Outcome.SUCCESS, 204),
    (Outcome.TIMEOUT, None),
    (Outcome.HTTP_ERROR, 500),
    (Outcome.SUCCESS, 200),
]
TYPES = [EventType.MESSAGE_READ, EventType.CONTACT_CREATED, EventType.MESSAGE_READ]


def seed_log(database_url: str, account: str, webhooks: list[str], count: int, minutes_apart: float) -> list[Row]:
    """`count` attempts spread over the webhooks, every `minutes_apart` back from now, across two UTC days."""
    records, rows = [], []
    for i in range(count):
        at = NOW - timedelta(minutes=minutes_apart * (i + 1))
        outcome, status = OUTCOMES[i % len(OUTCOMES)]
        event = build_event(account, TYPES[i % len(TYPES)], {"n": i}, created_at=at)
        webhook_id = webhooks[i % len(webhooks)]
        error = None if outcome is Outcome.SUCCESS else f"http {status}" if status else "timeout"
        result = DeliveryResult(outcome, status, error, 10 + i, "", at)
        record = attempt_record(event, webhook_id, 1, result, "done" if outcome is Outcome.SUCCESS else "retry")
        records.append(record)
        rows.append(Row(record.attempt_id, event.id, webhook_id, event.type.value, outcome.value, status, at))
    write(database_url, records)
    return sorted(rows, key=lambda r: (r.at, r.attempt_id), reverse=True)


async def search(api: RunningApi, key: str, **params: Any) -> dict[str, Any]:
    reply = await api.call("GET", "/v1/deliveries", key, params={k: str(v) for k, v in params.items()})
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


async def all_pages(api: RunningApi, key: str, cursor: str | None = None, **params: Any) -> list[dict[str, Any]]:
    """Every page from `cursor` (None: the first) to the last."""
    got: list[dict[str, Any]] = []
    for _ in range(200):
        page = await search(api, key, **params, **({"cursor": cursor} if cursor else {}))
        got += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return got
    raise AssertionError("the pages never ended")


def ids(rows: list[dict[str, Any]] | list[Row]) -> list[str]:
    return [r["attempt_id"] if isinstance(r, dict) else r.attempt_id for r in rows]


async def test_the_account_log_across_webhooks_each_filter_and_keyset_pages(api: RunningApi, database_url: str) -> None:
    # Given 60 attempts over three webhooks of one account, across two days, and another account's log
    account, key = api.account("Acme", "acct_a")
    hooks = [seed_webhook(database_url, account, f"https://127.0.0.1:9/{n}", ["message.read"])[0] for n in range(3)]
    log = seed_log(database_url, account, hooks, 60, minutes_apart=47)
    _, key_b = api.account("Globex", "acct_b")
    b_hook, _ = seed_webhook(database_url, "acct_b", "https://127.0.0.1:9/b", ["message.read"])
    theirs = seed_log(database_url, "acct_b", [b_hook], 10, minutes_apart=13)

    # The first page: the newest rows of every webhook, each with its webhook
    first = await search(api, key, limit=5)
    assert ids(first["data"]) == ids(log[:5]) and first["next_cursor"]
    assert [r["webhook_id"] for r in first["data"]] == [r.webhook_id for r in log[:5]]
    row = first["data"][0]
    assert (row["event_id"], row["event_type"], row["outcome"], row["status_code"]) == (
        log[0].event_id,
        log[0].event_type,
        log[0].outcome,
        log[0].status,
    )

    # Every page in turn: all 60 rows once, in order, none of the other account's
    assert ids(await all_pages(api, key, limit=7)) == ids(log)
    assert ids(await all_pages(api, key_b, limit=3)) == ids(theirs)

    # Each filter, alone and together, exactly
    def expect(keep: Any) -> list[str]:
        return ids([r for r in log if keep(r)])

    assert ids(await all_pages(api, key, event_type="contact.created", limit=4)) == expect(
        lambda r: r.event_type == "contact.created"
    )
    assert ids(await all_pages(api, key, outcome="http_error", limit=4)) == expect(lambda r: r.outcome == "http_error")
    assert ids(await all_pages(api, key, outcome="timeout")) == expect(lambda r: r.outcome == "timeout")
    assert ids(await all_pages(api, key, status=503, limit=3)) == expect(lambda r: r.status == 503)
    assert ids(await all_pages(api, key, status=204)) == expect(lambda r: r.status == 204)
    assert ids(await all_pages(api, key, status=404)) == []
    since, until = log[40].at, log[10].at
    assert ids(await all_pages(api, key, since=since.isoformat(), until=until.isoformat(), limit=6)) == expect(
        lambda r: since <= r.at < until
    )
    assert ids(
        await all_pages(api, key, since=since.isoformat(), outcome="success", event_type="message.read", limit=2)
    ) == expect(lambda r: r.at >= since and r.outcome == "success" and r.event_type == "message.read")
    assert ids(await all_pages(api, key, event_id=log[17].event_id)) == [log[17].attempt_id]
    assert (await search(api, key_b, event_id=log[17].event_id))["data"] == [], "another account's event"
    assert (await search(api, key, event_id=theirs[0].event_id))["data"] == []

    # A page is a keyset: rows logged meanwhile above it neither shift nor repeat what follows
    page = await search(api, key, limit=10)
    seed_log(database_url, account, hooks, 5, minutes_apart=0.01)
    rest = await all_pages(api, key, limit=10, cursor=page["next_cursor"])
    assert ids(page["data"]) + ids(rest) == ids(log)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "abc"}, "status"),
        ({"status": "99"}, "status"),
        ({"status": "600"}, "status"),
        ({"event_id": "att_01JD8Z6Q3K4M5N6P7R8S9T0V1W"}, "event_id"),
        ({"event_type": "message.eaten"}, "event_type"),
        ({"outcome": "great"}, "outcome"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-12-01T10:00:00"}, "until"),  # no time zone
        ({"since": "2026-12-01T10:00:00Z", "until": "2026-12-01T09:00:00Z"}, "until"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"webhook": "wh_1"}, "webhook"),
    ],
)
async def test_a_bad_query_is_a_422_naming_the_field(api: RunningApi, query: dict[str, str], field: str) -> None:
    _, key = api.account("Acme", "acct_a")
    reply = await api.call("GET", "/v1/deliveries", key, params=query)
    assert reply.status == 422, reply.body
    assert reply.error["code"] == "invalid_field" and reply.error["field"] == field, reply.error


async def test_a_cursor_past_the_retention_is_a_410(api: RunningApi) -> None:
    from api import cursor

    _, key = api.account("Acme", "acct_a")
    old = cursor.encode(NOW - timedelta(days=400), "att_0")
    reply = await api.call("GET", "/v1/deliveries", key, params={"cursor": old})
    assert reply.status == 410 and reply.error["code"] == "past_retention"
    assert (await api.call("GET", "/v1/deliveries")).status == 401
