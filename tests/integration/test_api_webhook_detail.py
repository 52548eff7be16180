"""What the webhook detail view reads, on real PostgreSQL and a real HTTPS receiver: the health stats
(hourly buckets by outcome, computed in PostgreSQL), one delivery in full (the body the receiver got, the
signatures it verified), and the secret revealed again to its own account."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from delivery.deliverer import DeliveryResult, attempt_record
from delivery.signing import hex_signature
from hookfleet.attempt_rows import LATENCY_BOUNDS_MS
from hookfleet.retention import prune
from recorder.batch import Batch
from recorder.store import RecorderStore
from schemas.catalog import EventType, sample_data
from schemas.ids import new_event_id
from schemas.models import Event, Outcome
from schemas.topics import Topics
from tests.support.api_client import RunningApi, api_settings
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics) -> AsyncIterator[RunningApi]:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle, topics)) as running:
        yield running


async def create(api: RunningApi, key: str, url: str) -> dict[str, Any]:
    reply = await api.call("POST", "/v1/webhooks", key, {"name": "CRM", "url": url, "events": ["message.read"]})
    assert reply.status == 201, reply.body
    created: dict[str, Any] = reply.body
    return created


def record(webhook_id: str, at: datetime, outcome: Outcome, status: int | None, ms: int, attempt: int = 1) -> Any:
    event = Event(
        id=new_event_id(),
        type=EventType.MESSAGE_READ,
        created_at=at,
        account_id="acct_a",
        data=sample_data(EventType.MESSAGE_READ),
    )
    result = DeliveryResult(outcome, status, None if outcome == Outcome.SUCCESS else outcome.value, ms, "", at)
    return attempt_record(event, webhook_id, attempt, result, "done" if outcome == Outcome.SUCCESS else "retry")


async def test_stats_count_each_hour_by_outcome_with_percentiles(api: RunningApi, key: str, database_url: str) -> None:
    webhook = await create(api, key, "https://localhost:9/crm")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    records = [
        record(webhook["id"], hour + timedelta(seconds=s), Outcome.SUCCESS, 200, ms)
        for s, ms in [(1, 10), (2, 20), (3, 30), (4, 40)]
    ]
    records.append(record(webhook["id"], hour + timedelta(seconds=5), Outcome.HTTP_ERROR, 500, 50))
    two_ago = hour - timedelta(hours=2)
    records.append(record(webhook["id"], two_ago + timedelta(minutes=3), Outcome.TIMEOUT, None, 5000, attempt=2))
    records.append(record(webhook["id"], two_ago + timedelta(minutes=4), Outcome.CONNECTION_ERROR, None, 3))
    records.append(record(webhook["id"], hour - timedelta(days=3), Outcome.TLS_ERROR, None, 7))  # only in 7d
    batch = Batch()
    for offset, one in enumerate(records):
        batch.add("attempts", 0, offset, one)
    store = RecorderStore(database_url)
    store.write(batch)
    store.write(batch)  # a replayed batch (the recorder restarted before committing): counted once
    store.close()

    day = await api.call("GET", f"/v1/webhooks/{webhook['id']}/stats", key)
    assert day.status == 200, day.body
    assert day.headers["Cache-Control"] == "no-store"
    stats = day.body
    assert stats["window"] == "24h" and stats["bucket_seconds"] == 3600 and len(stats["buckets"]) == 24
    last, earlier = stats["buckets"][-1], stats["buckets"][-3]
    assert last["start"] == hour.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert (last["success"], last["http_error"], last["timeout"], last["connection_error"]) == (4, 1, 0, 0)
    assert (last["p50_ms"], last["p95_ms"]) == (40, 60)  # upper bounds of the buckets [30, 40) and [50, 60)
    assert (earlier["timeout"], earlier["connection_error"]) == (1, 1)
    assert all(
        b["success"] + b["http_error"] + b["timeout"] + b["connection_error"] == 0
        for b in [*stats["buckets"][:-3], stats["buckets"][-2]]
    )
    summary = stats["summary"]
    assert summary["attempts"] == 7 and summary["successes"] == 4 and summary["failures"] == 3
    assert summary["deliveries"] == 6  # the timeout was attempt 2
    assert summary["success_rate"] == pytest.approx(4 / 7) and summary["dead_letters"] == 0
    assert summary["p50_ms"] == 40 and summary["p95_ms"] == 6000

    week = (await api.call("GET", f"/v1/webhooks/{webhook['id']}/stats", key, params={"window": "7d"})).body
    assert len(week["buckets"]) == 168 and week["summary"]["attempts"] == 8
    assert sum(b["connection_error"] for b in week["buckets"]) == 2  # TLS errors count as connection errors

    bad = await api.call("GET", f"/v1/webhooks/{webhook['id']}/stats", key, params={"window": "30d"})
    assert bad.status == 422 and bad.error["field"] == "window"


async def test_stats_of_a_webhook_without_deliveries_are_empty(api: RunningApi, key: str) -> None:
    webhook = await create(api, key, "https://localhost:9/crm")
    stats = (await api.call("GET", f"/v1/webhooks/{webhook['id']}/stats", key)).body
    assert stats["summary"]["attempts"] == 0 and stats["summary"]["success_rate"] is None
    assert stats["summary"]["p50_ms"] is None and len(stats["buckets"]) == 24


async def test_delivery_detail_shows_the_body_and_signatures_the_receiver_got(
    api: RunningApi, key: str, receiver: HttpsReceiver
) -> None:
    webhook = await create(api, key, receiver.url("/crm"))
    receiver.expect("/crm", secret=webhook["secret"], statuses=[503])
    tested = (await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key, {"event_type": "message.read"})).body
    [got] = receiver.at("/crm")

    reply = await api.call("GET", f"/v1/deliveries/{tested['attempt_id']}", key)
    assert reply.status == 200, reply.body
    detail = reply.body
    assert detail["webhook_id"] == webhook["id"] and detail["delivery"]["attempt_id"] == tested["attempt_id"]
    sent = detail["request"]
    assert sent["method"] == "POST" and sent["url"] == webhook["url"]
    assert sent["body"].encode() == got.body  # byte-for-byte, key order included
    for name in ("X-Webhook-Signature", "X-Webhook-Id", "X-Webhook-Timestamp", "webhook-signature", "User-Agent"):
        assert sent["headers"][name] == got.headers[name], name
    assert sent["headers"]["X-Webhook-Signature"] == hex_signature(webhook["secret"], got.body)
    answer = detail["response"]
    assert (answer["status_code"], answer["body_excerpt"], answer["headers"]) == (503, "answered 503", None)
    assert answer["response_ms"] == tested["response_ms"] and answer["error"] == tested["error"]
    assert [a["attempt_id"] for a in detail["timeline"]] == [tested["attempt_id"]]


async def test_redelivery_sends_the_same_bytes_as_the_first_delivery(
    api: RunningApi, key: str, receiver: HttpsReceiver, database_url: str
) -> None:
    """event_payloads keeps the JSON text (json, not jsonb), so the stored event re-serialises to the sent bytes."""
    webhook = await create(api, key, receiver.url("/crm"))
    receiver.expect("/crm", secret=webhook["secret"])
    tested = (await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key, {"event_type": "message.read"})).body
    [got] = receiver.at("/crm")
    assert list(json.loads(got.body)["data"]) == list(sample_data(EventType.MESSAGE_READ))
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT event::text FROM event_payloads WHERE event_id = %s", (tested["event_id"],)
        ).fetchone()
    assert row is not None and Event.model_validate_json(row[0]).body() == got.body


async def test_reveal_returns_the_secret_the_receiver_verifies_with(
    api: RunningApi, key: str, receiver: HttpsReceiver
) -> None:
    webhook = await create(api, key, receiver.url("/crm"))
    reply = await api.call("GET", f"/v1/webhooks/{webhook['id']}/secret", key)
    assert reply.status == 200 and reply.headers["Cache-Control"] == "no-store"
    assert reply.body == {"webhook_id": webhook["id"], "secret": webhook["secret"], "previous_secret_expires_at": None}
    rotated = (await api.call("POST", f"/v1/webhooks/{webhook['id']}/rotate-secret", key)).body
    after = (await api.call("GET", f"/v1/webhooks/{webhook['id']}/secret", key)).body
    assert after["secret"] == rotated["secret"] != webhook["secret"]
    assert after["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]
    receiver.expect("/crm", secret=after["secret"])
    await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key)
    [got] = receiver.at("/crm")
    assert got.signature_ok is True


async def test_hourly_stats_past_retention_are_pruned_with_the_log(
    api: RunningApi, key: str, database_url: str
) -> None:
    webhook = await create(api, key, "https://localhost:9/crm")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(database_url) as conn:
        for hour in (now - timedelta(days=40), now - timedelta(days=2)):
            conn.execute(
                "INSERT INTO webhook_stats_hourly VALUES (%s, %s, 'acct_a', 1, 0, 0, 0, 1, %s)",
                (webhook["id"], hour, [0] * (len(LATENCY_BOUNDS_MS) + 1)),
            )
    prune(database_url, retention_days=30)
    with psycopg.connect(database_url) as conn:
        kept = conn.execute("SELECT hour FROM webhook_stats_hourly ORDER BY hour").fetchall()
    assert [row[0] for row in kept] == [now - timedelta(days=2)]
