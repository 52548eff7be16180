"""The API side of the failure policy: custom headers (sealed, masked, reserved names refused), why and
since when a webhook is off, the account's notification address, operational types in the catalog."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.api_client import RunningApi
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration

NEW = {"name": "CRM Sync", "url": "https://localhost:9/hooks", "events": ["message.read"]}
TOKEN = "Bearer gw-token-9f8e7d6c5b4a3210"


async def _create(api: RunningApi, key: str, **fields: object) -> dict[str, Any]:
    reply = await api.call("POST", "/v1/webhooks", key, {**NEW, **fields})
    assert reply.status == 201, reply.body
    created: dict[str, Any] = reply.body
    return created


async def test_custom_headers_are_stored_sealed_and_shown_masked(api: RunningApi, key: str, database_url: str) -> None:
    created = await _create(api, key, headers={"Authorization": TOKEN, "X-Tenant": "acme"})
    assert created["headers"] == {"Authorization": "****3210", "X-Tenant": "****"}
    shown = (await api.call("GET", f"/v1/webhooks/{created['id']}", key)).body
    assert shown["headers"] == created["headers"]
    listed = (await api.call("GET", "/v1/webhooks", key)).body["data"]
    assert listed[0]["headers"] == created["headers"]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT headers_ciphertext FROM webhooks WHERE id = %s", (created["id"],)).fetchone()
    assert row is not None and b"gw-token" not in bytes(row[0]) and b"Authorization" not in bytes(row[0])

    changed = await api.call("PATCH", f"/v1/webhooks/{created['id']}", key, {"headers": {"X-Api-Key": "k" * 20}})
    assert changed.status == 200 and changed.body["headers"] == {"X-Api-Key": "****kkkk"}
    cleared = await api.call("PATCH", f"/v1/webhooks/{created['id']}", key, {"headers": {}})
    assert cleared.body["headers"] == {}
    assert TOKEN not in str(created) + str(shown) + str(listed)


@pytest.mark.parametrize(
    "name",
    [
        "X-Webhook-Signature",
        "x-webhook-id",
        "webhook-signature",
        "Content-Type",
        "host",
        "Content-Length",
        "User-Agent",
        "Transfer-Encoding",
        "connection",
        "Keep-Alive",
        "Upgrade",
        "Expect",
        "TE",
        "Trailer",
        "Proxy-Authorization",
        "proxy-connection",
    ],
)
async def test_reserved_header_names_are_refused_with_a_clear_422(api: RunningApi, key: str, name: str) -> None:
    reply = await api.call("POST", "/v1/webhooks", key, {**NEW, "headers": {name: "x"}})
    assert reply.status == 422, reply.body
    assert reply.error["field"] == "headers"
    assert "reserved" in reply.error["message"] and name in reply.error["message"]


async def test_bad_header_names_and_values_are_refused(api: RunningApi, key: str) -> None:
    for headers in (
        {"Bad Name": "x"},
        {"X-A\n": "x"},
        {"X-A": "line\r\nInjected: 1"},
        {"X-A": "trailing newline\n"},
        {"X-A": "naïve"},
        {f"X-{i}": "v" for i in range(21)},
    ):
        reply = await api.call("POST", "/v1/webhooks", key, {**NEW, "headers": headers})
        assert reply.status == 422, (headers, reply.body)


async def test_switching_off_by_hand_says_so_and_switching_on_clears_the_reason(
    api: RunningApi, key: str, database_url: str
) -> None:
    created = await _create(api, key)
    assert (created["disabled_reason"], created["disabled_at"]) == (None, None)
    off = (await api.call("PATCH", f"/v1/webhooks/{created['id']}", key, {"active": False})).body
    assert off["active"] is False and off["disabled_reason"] == "manual" and off["disabled_at"]
    again = (await api.call("PATCH", f"/v1/webhooks/{created['id']}", key, {"active": False})).body
    assert again["disabled_at"] == off["disabled_at"]  # already off: the time it went off stays
    with psycopg.connect(database_url) as conn:  # as the recorder does on a 410
        conn.execute("UPDATE webhooks SET disabled_reason = 'gone' WHERE id = %s", (created["id"],))
    gone = (await api.call("GET", f"/v1/webhooks/{created['id']}", key)).body
    assert gone["disabled_reason"] == "gone"
    on = (await api.call("PATCH", f"/v1/webhooks/{created['id']}", key, {"active": True})).body
    assert on["active"] is True and (on["disabled_reason"], on["disabled_at"]) == (None, None)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT enabled_at FROM webhooks WHERE id = %s", (created["id"],)).fetchone()
    assert row is not None and row[0] is not None  # restarts the auto-disable period


async def test_the_account_notification_address(api: RunningApi, key: str) -> None:
    shown = await api.call("GET", "/v1/account", key)
    assert shown.status == 200 and shown.body == {
        "id": "acct_a",
        "name": "Acme",
        "notification_email": None,
        "notification_email_confirmed": False,
    }
    changed = await api.call("PATCH", "/v1/account", key, {"notification_email": "ops@example.com"})
    assert changed.body["notification_email"] == "ops@example.com"
    for wrong in ("not-an-address", "ops@example.com\n", "\x00@example.com"):
        bad = await api.call("PATCH", "/v1/account", key, {"notification_email": wrong})
        assert bad.status == 422 and bad.error["field"] == "notification_email"
    removed = await api.call("PATCH", "/v1/account", key, {"notification_email": ""})
    assert removed.body["notification_email"] is None


async def test_event_types_lists_the_operational_ones_apart_and_webhooks_may_subscribe(
    api: RunningApi, key: str
) -> None:
    listing = (await api.call("GET", "/v1/event-types")).body["data"]
    kinds = {entry["type"]: entry["kind"] for entry in listing}
    assert [t for t, k in kinds.items() if k == "operational"] == [
        "webhook.failing",
        "webhook.recovered",
        "webhook.disabled",
    ]
    assert sum(k == "product" for k in kinds.values()) == 9
    created = await _create(api, key, events=["webhook.failing", "webhook.disabled"])
    assert created["events"] == ["webhook.disabled", "webhook.failing"]


async def test_a_successful_test_delivery_heals_a_failing_webhook_and_queues_one_webhook_recovered(
    api: RunningApi, key: str, database_url: str, receiver: HttpsReceiver
) -> None:
    created = await _create(api, key, url=receiver.url("/crm"), headers={"Authorization": TOKEN})
    receiver.expect("/crm", secret=created["secret"], statuses=[200])
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE webhooks SET status = 'failing', status_changed_at = now() - interval '1 hour',"
            " failing_since = now() - interval '1 hour' WHERE id = %s",
            (created["id"],),
        )
    for _ in range(2):  # the second success changes nothing, so it notifies nothing
        assert (await api.call("POST", f"/v1/webhooks/{created['id']}/test", key)).body["ok"] is True
    [delivered, _] = receiver.at("/crm")
    assert delivered.headers["Authorization"] == TOKEN  # the Test sends the custom headers too
    with psycopg.connect(database_url) as conn:
        state = conn.execute("SELECT status, failing_since FROM webhooks WHERE id = %s", (created["id"],)).fetchone()
        queued = conn.execute("SELECT account_id, event FROM operational_outbox").fetchall()
    assert state == ("healthy", None)
    [(account_id, event)] = queued
    assert account_id == "acct_a" and event["type"] == "webhook.recovered"
    assert event["data"]["webhook_id"] == created["id"] and event["data"]["reason"] == "delivered"


async def test_a_test_delivery_that_heals_an_opted_in_webhook_queues_its_spells_dead_letters_once(
    api: RunningApi, key: str, database_url: str, receiver: HttpsReceiver
) -> None:
    # Given an opted-in webhook failing for an hour, with two dead letters of that spell and one from before
    created = await _create(api, key, url=receiver.url("/crm"), redrive_on_recovery=True)
    receiver.expect("/crm", secret=created["secret"], statuses=[200])
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE webhooks SET status = 'failing', status_changed_at = now() - interval '10 minutes',"
            " failing_since = now() - interval '1 hour' WHERE id = %s",
            (created["id"],),
        )
        for event_id, ago in [("evt_before", "2 hours"), ("evt_first", "50 minutes"), ("evt_second", "20 minutes")]:
            conn.execute(
                "INSERT INTO dead_letters (event_id, webhook_id, account_id, event_type, task, dead_at)"
                " VALUES (%s, %s, 'acct_a', 'message.read', '{}', now() - %s::interval)",
                (event_id, created["id"], ago),
            )
    # When a Test delivery heals it (twice: the second heals nothing)
    for _ in range(2):
        assert (await api.call("POST", f"/v1/webhooks/{created['id']}/test", key)).body["ok"] is True
    # Then the spell's dead letters are queued for the recorders, oldest first, and webhook.recovered says so
    with psycopg.connect(database_url) as conn:
        queued = conn.execute("SELECT event_id FROM recovery_redrives ORDER BY position").fetchall()
        [(event,)] = conn.execute("SELECT event FROM operational_outbox").fetchall()
    assert [row[0] for row in queued] == ["evt_first", "evt_second"]
    assert (event["data"]["redriven"], event["data"]["dead_letters"]) == (2, 1)
