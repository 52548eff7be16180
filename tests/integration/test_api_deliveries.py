"""Test, the delivery log, Redeliver and Recover on real PostgreSQL, the real broker and a real HTTPS
receiver; and tenant isolation: account B can neither see nor touch anything of account A."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from delivery.signing import verify_hex_signature
from schemas.catalog import EventType, sample_data
from schemas.ids import new_event_id
from schemas.models import DeliveryTask, Event
from schemas.topics import Topics
from tests.support.api_client import RunningApi, api_settings, consume, insert_attempt
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics) -> AsyncIterator[RunningApi]:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle, topics)) as running:
        yield running


async def create(api: RunningApi, key: str, url: str, events: list[str] | None = None) -> dict[str, Any]:
    body = {"name": "CRM Sync", "url": url, "events": events or ["message.read", "contact.created"]}
    reply = await api.call("POST", "/v1/webhooks", key, body)
    assert reply.status == 201, reply.body
    created: dict[str, Any] = reply.body
    return created


# ------------------------------------------------------------------------------------------ test


async def test_test_sends_the_sample_through_the_real_delivery_path_and_logs_it(
    api: RunningApi, key: str, receiver: HttpsReceiver
) -> None:
    webhook = await create(api, key, receiver.url("/crm"))
    receiver.expect("/crm", secret=webhook["secret"], statuses=[200])
    reply = await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key, {"event_type": "contact.created"})
    assert reply.status == 200, reply.body
    result = reply.body
    assert result["ok"] is True and result["outcome"] == "success" and result["status_code"] == 200
    assert result["response_excerpt"] == "answered 200" and result["response_ms"] >= 0
    assert result["event_type"] == "contact.created" and result["error"] is None

    [got] = receiver.at("/crm")
    assert got.signature_ok is True
    assert got.headers["X-Webhook-Id"] == result["event_id"] and got.headers["X-Webhook-Attempt"] == "1"
    assert got.headers["X-Webhook-Event"] == "contact.created"
    assert got.headers["User-Agent"].startswith("hookfleet/")
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= {h.lower() for h in got.headers}
    body = json.loads(got.body)
    assert body["data"] == sample_data(EventType.CONTACT_CREATED) and body["account_id"] == "acct_a"

    log = await api.call("GET", f"/v1/webhooks/{webhook['id']}/deliveries", key)
    [row] = log.body["data"]
    assert row["test"] is True and row["attempt_id"] == result["attempt_id"] and row["status_code"] == 200
    assert row["event_id"] == result["event_id"] and row["next_step"] == "done"


async def test_test_reports_receiver_failures_without_raising(
    api: RunningApi, key: str, receiver: HttpsReceiver
) -> None:
    webhook = await create(api, key, receiver.expect("/broken", statuses=[500]))
    failed = await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key)
    assert failed.status == 200
    assert failed.body["ok"] is False and failed.body["outcome"] == "http_error"
    assert failed.body["status_code"] == 500 and failed.body["error"] == "http 500"
    assert failed.body["event_type"] == "contact.created"  # the webhook's first event type by default

    closed = await create(api, key, "https://localhost:9/nobody-listens")
    refused = await api.call("POST", f"/v1/webhooks/{closed['id']}/test", key, {"event_type": "message.read"})
    assert refused.status == 200
    assert refused.body["outcome"] == "connection_error" and refused.body["status_code"] is None

    bad = await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key, {"event_type": "message.bounced"})
    assert bad.status == 422 and bad.error["field"] == "event_type"


@pytest.mark.parametrize("status", [600, 999])
async def test_test_reports_a_status_outside_100_to_599_as_an_invalid_response_not_a_5xx(
    api: RunningApi, key: str, receiver: HttpsReceiver, status: int
) -> None:
    webhook = await create(api, key, receiver.expect(f"/odd-{status}", statuses=[status]))
    reply = await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key)
    assert reply.status == 200, reply.body
    assert (reply.body["outcome"], reply.body["status_code"], reply.body["error"]) == (
        "connection_error",
        None,
        "invalid status code",
    )
    log = await api.call("GET", f"/v1/webhooks/{webhook['id']}/deliveries", key)
    [row] = log.body["data"]
    assert row["outcome"] == "connection_error" and row["status_code"] is None


async def test_a_response_body_with_nul_characters_is_logged_not_a_5xx(
    api: RunningApi, key: str, receiver: HttpsReceiver
) -> None:
    webhook = await create(api, key, receiver.expect("/nul", body=b"ok\x00done"))
    tested = await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key)
    assert tested.status == 200 and tested.body["ok"] is True
    log = await api.call("GET", f"/v1/webhooks/{webhook['id']}/deliveries", key)
    assert [row["response_excerpt"] for row in log.body["data"]] == ["ok\ufffddone"]


async def test_a_successful_test_clears_a_failing_status(api: RunningApi, key: str, receiver: HttpsReceiver) -> None:
    webhook = await create(api, key, receiver.expect("/ok"))
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        conn.execute(
            "UPDATE webhooks SET status = 'failing', status_changed_at = now() - interval '1 minute' WHERE id = %s",
            (webhook["id"],),
        )
    path = f"/v1/webhooks/{webhook['id']}"
    assert (await api.call("GET", path, key)).body["status"] == "failing"
    assert (await api.call("POST", f"{path}/test", key)).body["ok"] is True
    healed = (await api.call("GET", path, key)).body
    assert healed["status"] == "healthy" and healed["status_changed_at"] > webhook["status_changed_at"]


async def test_after_rotation_test_deliveries_carry_both_signatures(
    api: RunningApi, key: str, receiver: HttpsReceiver
) -> None:
    webhook = await create(api, key, receiver.expect("/rotating"))
    old = webhook["secret"]
    new = (await api.call("POST", f"/v1/webhooks/{webhook['id']}/rotate-secret", key)).body["secret"]
    assert (await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key)).body["ok"] is True
    [got] = receiver.at("/rotating")
    assert verify_hex_signature(new, got.body, got.headers["X-Webhook-Signature"])
    assert verify_hex_signature(old, got.body, got.headers["X-Webhook-Signature-Previous"])
    assert len(got.headers["webhook-signature"].split(" ")) == 2


async def test_inactive_webhooks_can_still_be_tested(api: RunningApi, key: str, receiver: HttpsReceiver) -> None:
    webhook = await create(api, key, receiver.expect("/paused"))
    await api.call("PATCH", f"/v1/webhooks/{webhook['id']}", key, {"active": False})
    assert (await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key)).body["ok"] is True
    assert len(receiver.at("/paused")) == 1


# ------------------------------------------------------------------------------------------ logs


async def test_the_log_is_newest_first_filtered_and_paginated(api: RunningApi, key: str) -> None:
    webhook = await create(api, key, "https://localhost:9/log")
    other = await create(api, key, "https://localhost:9/other")
    url = api.settings.database_url.get_secret_value()
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    ids = []
    for i in range(7):
        event_type = "message.read" if i % 2 == 0 else "contact.created"
        outcome, status = ("success", 200) if i != 3 else ("timeout", None)
        ids.append(insert_attempt(url, webhook["id"], start + timedelta(seconds=i), event_type, outcome, status)[0])
    insert_attempt(url, other["id"], start + timedelta(seconds=30))
    path = f"/v1/webhooks/{webhook['id']}/deliveries"

    everything = await api.call("GET", path, key)
    assert [r["attempt_id"] for r in everything.body["data"]] == ids[::-1]
    assert everything.body["next_cursor"] is None

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await api.call("GET", path, key, params=params)
        assert page.status == 200 and len(page.body["data"]) <= 3
        seen += [r["attempt_id"] for r in page.body["data"]]
        pages += 1
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1] and pages == 3

    reads = await api.call("GET", path, key, params={"event_type": "message.read"})
    assert [r["attempt_id"] for r in reads.body["data"]] == [ids[6], ids[4], ids[2], ids[0]]
    timeouts = await api.call("GET", path, key, params={"outcome": "timeout"})
    [row] = timeouts.body["data"]
    assert row["attempt_id"] == ids[3] and row["status_code"] is None and row["error"] == "timeout"
    recent = await api.call("GET", path, key, params={"since": (start + timedelta(seconds=5)).isoformat()})
    assert [r["attempt_id"] for r in recent.body["data"]] == [ids[6], ids[5]]


async def test_log_query_mistakes_are_422_naming_the_parameter(api: RunningApi, key: str) -> None:
    webhook = await create(api, key, "https://localhost:9/log")
    path = f"/v1/webhooks/{webhook['id']}/deliveries"
    for params, field in [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"outcome": "great"}, "outcome"),
        ({"event_type": "message.bounced"}, "event_type"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"colour": "blue"}, "colour"),
    ]:
        reply = await api.call("GET", path, key, params=params)
        assert reply.status == 422, (params, reply.body)
        assert reply.error["field"] == field


# ------------------------------------------------------------------------------------------ redeliver, recover


async def test_redeliver_publishes_the_logged_event_as_a_fresh_attempt(
    api: RunningApi, key: str, kafka_bootstrap: str, topics: Topics
) -> None:
    webhook = await create(api, key, "https://localhost:9/redeliver")
    attempt_id, event_id = insert_attempt(
        api.settings.database_url.get_secret_value(),
        webhook["id"],
        datetime.now(UTC),
        outcome="timeout",
        status_code=None,
    )
    reply = await api.call("POST", f"/v1/deliveries/{attempt_id}/redeliver", key)
    assert reply.status == 202, reply.body
    assert reply.body == {
        "status": "queued",
        "attempt_id": attempt_id,
        "event_id": event_id,
        "webhook_id": webhook["id"],
    }

    [(k, value)] = await asyncio.to_thread(consume, kafka_bootstrap, topics.deliveries, 1)
    task = DeliveryTask.model_validate_json(value)
    assert k == webhook["id"].encode()
    assert task.webhook_id == webhook["id"] and task.attempt == 1 and task.event.id == event_id
    assert task.event.account_id == "acct_a" and task.event.type is EventType.MESSAGE_READ
    assert abs(task.due_at / 1000 - datetime.now(UTC).timestamp()) < 30


async def test_redeliver_of_a_test_row_and_of_rows_without_payload(
    api: RunningApi, key: str, receiver: HttpsReceiver, kafka_bootstrap: str, topics: Topics
) -> None:
    webhook = await create(api, key, receiver.expect("/t"))
    tested = (await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key)).body
    again = await api.call("POST", f"/v1/deliveries/{tested['attempt_id']}/redeliver", key)
    assert again.status == 202 and again.body["event_id"] == tested["event_id"]
    [(_, value)] = await asyncio.to_thread(consume, kafka_bootstrap, topics.deliveries, 1)
    assert DeliveryTask.model_validate_json(value).event.id == tested["event_id"]

    orphan, _ = insert_attempt(
        api.settings.database_url.get_secret_value(), webhook["id"], datetime.now(UTC), with_payload=False
    )
    gone = await api.call("POST", f"/v1/deliveries/{orphan}/redeliver", key)
    assert gone.status == 404 and "no longer stored" in gone.error["message"]


def insert_dead_letter(database_url: str, webhook_id: str, dead_at: datetime, account_id: str = "acct_a") -> str:
    event = Event(
        id=new_event_id(),
        type=EventType.MESSAGE_FAILED,
        created_at=dead_at,
        account_id=account_id,
        data=sample_data(EventType.MESSAGE_FAILED),
    )
    task = DeliveryTask(event=event, webhook_id=webhook_id, attempt=4, due_at=0, last_error="http 503")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO dead_letters (event_id, webhook_id, account_id, event_type, task, last_error, dead_at)"
            " VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s)",
            (event.id, webhook_id, account_id, event.type.value, task.model_dump_json(), "http 503", dead_at),
        )
    return event.id


async def test_recover_redrives_dead_letters_since_a_time(
    api: RunningApi, key: str, kafka_bootstrap: str, topics: Topics
) -> None:
    webhook = await create(api, key, "https://localhost:9/recover")
    url = api.settings.database_url.get_secret_value()
    now = datetime.now(UTC)
    insert_dead_letter(url, webhook["id"], now - timedelta(days=2))
    recent = {insert_dead_letter(url, webhook["id"], now - timedelta(minutes=m)) for m in (1, 2)}
    path = f"/v1/webhooks/{webhook['id']}/recover"

    reply = await api.call("POST", path, key, {"since": (now - timedelta(hours=1)).isoformat()})
    assert reply.status == 202 and reply.body == {"webhook_id": webhook["id"], "redriven": 2}
    published = await asyncio.to_thread(consume, kafka_bootstrap, topics.deliveries, 2)
    tasks = [DeliveryTask.model_validate_json(value) for _, value in published]
    assert {t.event.id for t in tasks} == recent and {t.attempt for t in tasks} == {1}

    assert (await api.call("POST", path, key, {"since": (now - timedelta(hours=1)).isoformat()})).body["redriven"] == 0
    assert (await api.call("POST", path, key)).body["redriven"] == 1  # no body: every dead letter left
    invalid = await api.call("POST", path, key, {"since": "last week"})
    assert invalid.status == 422 and invalid.error["field"] == "since"


# ------------------------------------------------------------------------------------------ tenant isolation


async def test_account_b_can_neither_see_nor_touch_account_a(
    api: RunningApi, key: str, receiver: HttpsReceiver, kafka_bootstrap: str, topics: Topics
) -> None:
    _, key_b = api.account("Globex", "acct_b")
    webhook = await create(api, key, receiver.expect("/a-only"))
    tested = (await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key)).body
    insert_dead_letter(api.settings.database_url.get_secret_value(), webhook["id"], datetime.now(UTC))
    path = f"/v1/webhooks/{webhook['id']}"

    assert (await api.call("GET", "/v1/webhooks", key_b)).body == {"data": []}
    for method, target, body in [
        ("GET", path, None),
        ("PATCH", path, {"active": False, "url": "https://127.0.0.1:1/stolen"}),
        ("DELETE", path, None),
        ("POST", f"{path}/test", {}),
        ("POST", f"{path}/rotate-secret", None),
        ("GET", f"{path}/deliveries", None),
        ("POST", f"{path}/recover", {}),
        ("POST", f"/v1/deliveries/{tested['attempt_id']}/redeliver", None),
        ("GET", f"{path}/secret", None),
        ("GET", f"{path}/stats", None),
        ("GET", f"{path}/stats?window=7d", None),
        ("GET", f"/v1/deliveries/{tested['attempt_id']}", None),
    ]:
        reply = await api.call(method, target, key_b, body)
        assert reply.status == 404, (method, target, reply.body)
        assert reply.error["code"] == "not_found"

    after = (await api.call("GET", path, key)).body
    assert after["active"] is True and after["url"] == webhook["url"]
    assert after["secret"] == "whsec_****" + webhook["secret"][-4:]
    assert len(receiver.at("/a-only")) == 1  # B's test sent nothing
    log = (await api.call("GET", f"{path}/deliveries", key)).body["data"]
    assert [r["attempt_id"] for r in log] == [tested["attempt_id"]]
    assert await asyncio.to_thread(consume, kafka_bootstrap, topics.deliveries, 1, 2.0) == []
