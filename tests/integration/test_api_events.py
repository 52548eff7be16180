"""Where did event X go (`GET /v1/events/{event_id}`), end to end: a real dispatcher, retry scheduler and recorder
deliver one event to three webhooks of an account (one answers at once, one after a retry, one never), the
recorder logs every attempt and the dead letter, a replay sends it again, and the API shows all of it per
webhook. Then what it refuses: an unknown event and another account's event (404 with a JSON body), an id that
is no event id (422 naming `event_id`); and an event whose payload is past the retention."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from delivery.deliverer import DeliveryResult, attempt_record
from producer.publisher import build_event
from recorder.batch import Batch
from recorder.store import RecorderStore
from schemas.catalog import EventType
from schemas.models import AttemptRecord, Event, NextStep, Outcome
from schemas.topics import Topics
from tests.integration.test_dispatcher import publisher_for
from tests.support.api_client import RunningApi, api_settings
from tests.support.fleet import TEST_SECRET_KEY, Fleet, seed_webhook
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics) -> AsyncIterator[RunningApi]:
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, topics, secret_key=TEST_SECRET_KEY)
    async with RunningApi(settings) as running:
        yield running


async def event_until(
    api: RunningApi, key: str, event_id: str, done: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0
) -> dict[str, Any]:
    """The event view once `done` holds; fails with the last view when it does not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        reply = await api.call("GET", f"/v1/events/{event_id}", key)
        last = reply.body
        if reply.status == 200 and done(reply.body):
            return dict(reply.body)
        await asyncio.sleep(0.3)
    raise AssertionError(f"the event view never got there within {timeout_s} s; last: {json.dumps(last)[:2000]}")


def by_webhook(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["webhook_id"]: w for w in view["webhooks"]}


async def test_one_event_shows_every_webhook_it_went_to_with_each_attempt_its_dead_letter_and_its_replay(
    api: RunningApi, fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    # Given an account with three webhooks for message.read (answering at once, after one 500, never) and one
    # for another type, and another account's webhook for the same type
    account, key = api.account("Acme", "acct_a")
    ok_id, ok_secret = seed_webhook(database_url, account, receiver.url("/ok"), ["message.read"], name="CRM")
    flaky_id, flaky_secret = seed_webhook(database_url, account, receiver.url("/flaky"), ["message.read"], name="ERP")
    down_id, down_secret = seed_webhook(database_url, account, receiver.url("/down"), ["message.read"], name="Old")
    other_type, _ = seed_webhook(database_url, account, receiver.url("/contacts"), ["contact.created"])
    _, key_b = api.account("Globex", "acct_b")
    b_id, b_secret = seed_webhook(database_url, "acct_b", receiver.url("/b"), ["message.read"])
    receiver.expect("/ok", secret=ok_secret)
    receiver.expect("/flaky", secret=flaky_secret, statuses=[500, 200])
    receiver.expect("/down", secret=down_secret, statuses=[503])
    receiver.expect("/b", secret=b_secret)
    delays = {"HOOKFLEET_RETRY_DELAYS_S": "[0.5, 0.5, 0.5]"}
    fleet.start_dispatcher(**delays)
    fleet.start("retry-scheduler", **delays)
    fleet.start("recorder", **delays)

    # When one event of each account is published
    event = build_event(account, EventType.MESSAGE_READ, {"message_id": "m-42"})
    theirs = build_event("acct_b", EventType.MESSAGE_READ, {"message_id": "m-b"})
    with publisher_for(kafka_bootstrap, topics) as publisher:
        publisher.publish_and_wait(event)
        publisher.publish_and_wait(theirs)

    # Then its view shows each of the three webhooks: delivered at once, delivered on attempt 2, dead-lettered
    def settled(view: dict[str, Any]) -> bool:
        states = {w["webhook_id"]: w["state"] for w in view["webhooks"]}
        return states == {ok_id: "delivered", flaky_id: "delivered", down_id: "dead_lettered"} and all(
            w["dead_letter"] is not None for w in view["webhooks"] if w["webhook_id"] == down_id
        )

    view = await event_until(api, key, event.id, settled)
    assert (view["event_id"], view["event_type"], view["truncated"]) == (event.id, "message.read", False)
    assert view["payload"] == json.loads(event.body()), "the payload is the body the receivers got"
    assert view["created_at"] == event.model_dump(mode="json")["created_at"]
    hooks = by_webhook(view)
    assert [w["webhook_id"] for w in view["webhooks"]] == sorted(hooks) and other_type not in hooks
    assert (hooks[ok_id]["webhook_name"], hooks[flaky_id]["webhook_name"]) == ("CRM", "ERP")

    [sent] = hooks[ok_id]["attempts"]
    [got] = receiver.at("/ok")
    assert (sent["attempt"], sent["outcome"], sent["status_code"], sent["next_step"]) == (1, "success", 200, "done")
    assert sent["event_id"] == got.event_id == event.id and sent["response_ms"] >= 0 and sent["attempted_at"]

    flaky = [(a["attempt"], a["outcome"], a["status_code"], a["next_step"]) for a in hooks[flaky_id]["attempts"]]
    assert flaky == [(1, "http_error", 500, "retry"), (2, "success", 200, "done")]
    assert hooks[flaky_id]["attempts"][0]["attempted_at"] < hooks[flaky_id]["attempts"][1]["attempted_at"]

    down = hooks[down_id]
    assert [(a["attempt"], a["status_code"]) for a in down["attempts"]] == [(1, 503), (2, 503), (3, 503), (4, 503)]
    assert [a["next_step"] for a in down["attempts"]] == ["retry", "retry", "retry", "dead"]
    assert down["dead_letter"]["last_error"] == "http 503" and down["dead_letter"]["redriven_at"] is None
    assert len(receiver.at("/down")) == 4

    # And the other account's event is not part of it, nor visible to this account, and vice versa
    assert b_id not in hooks
    await event_until(api, key_b, theirs.id, lambda v: [w["webhook_id"] for w in v["webhooks"]] == [b_id])
    for who, whose in ((key, theirs.id), (key_b, event.id)):
        hidden = await api.call("GET", f"/v1/events/{whose}", who)
        assert hidden.status == 404 and hidden.error == {"code": "not_found", "message": f"event {whose} not found"}

    # When the event is replayed to the first webhook, it shows the replay and the replayed attempt
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    started = await api.call("POST", f"/v1/webhooks/{ok_id}/replay", key, {"since": since})
    assert started.status == 202, started.body
    replay_id = started.body["id"]

    def replayed(view: dict[str, Any]) -> bool:
        ok = by_webhook(view)[ok_id]
        return len(ok["attempts"]) == 2 and bool(ok["replays"]) and ok["replays"][0]["queued_at"] is not None

    view = await event_until(api, key, event.id, replayed)
    ok = by_webhook(view)[ok_id]
    assert [a["replay"] for a in ok["attempts"]] == [None, replay_id] and ok["state"] == "delivered"
    assert [r["replay_id"] for r in ok["replays"]] == [replay_id] and len(receiver.at("/ok")) == 2


def _record(
    event: Event, webhook_id: str, attempt: int, outcome: Outcome, status: int | None, step: NextStep, at: datetime
) -> AttemptRecord:
    result = DeliveryResult(outcome, status, None if status == 200 else "timeout", 25, "", at)
    return attempt_record(event, webhook_id, attempt, result, step)


async def test_unknown_malformed_and_foreign_event_ids_and_a_payload_past_retention(
    api: RunningApi, database_url: str
) -> None:
    account, key = api.account("Acme", "acct_a")
    _, key_b = api.account("Globex", "acct_b")
    webhook_id, _ = seed_webhook(database_url, account, "https://127.0.0.1:9/x", ["message.read"])
    at = datetime.now(UTC) - timedelta(hours=1)
    event = build_event(account, EventType.MESSAGE_READ, {"message_id": "m-1"}, created_at=at)
    batch = Batch()
    batch.add("attempts", 0, 0, _record(event, webhook_id, 1, Outcome.TIMEOUT, None, "retry", at))
    store = RecorderStore(database_url)
    try:
        store.write(batch)
    finally:
        store.close()

    shown = await api.call("GET", f"/v1/events/{event.id}", key)
    assert shown.status == 200 and by_webhook(shown.body)[webhook_id]["state"] == "pending"
    assert shown.body["payload"]["data"] == {"message_id": "m-1"}

    unknown = await api.call("GET", "/v1/events/evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W", key)
    assert unknown.status == 404 and unknown.headers["Content-Type"].startswith("application/json")
    assert unknown.error["code"] == "not_found" and "evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W" in unknown.error["message"]
    foreign = await api.call("GET", f"/v1/events/{event.id}", key_b)
    assert (foreign.status, foreign.body) == (
        unknown.status,
        {"error": {**unknown.error, "message": f"event {event.id} not found"}},
    )

    for bad in ("nope", "evt_", "evt_a-b", "wh_01JD8Z6Q3K4M5N6P7R8S9T0V1W", "evt_" + "A" * 65, "evt_%C3%A9"):
        refused = await api.call("GET", f"/v1/events/{bad}", key)
        assert refused.status == 422, (bad, refused.body)
        assert refused.error["code"] == "invalid_field" and refused.error["field"] == "event_id"
        assert "event_id must be an event id" in refused.error["message"]
    assert (await api.call("GET", f"/v1/events/{event.id}")).status == 401

    # A payload past the retention (its day dropped): the attempts are still listed, the payload is null
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM event_payloads WHERE event_id = %s", (event.id,))
    gone = await api.call("GET", f"/v1/events/{event.id}", key)
    assert gone.status == 200 and gone.body["payload"] is None and gone.body["created_at"] is None
    assert gone.body["event_type"] == "message.read" and len(gone.body["webhooks"][0]["attempts"]) == 1


@pytest.mark.parametrize(("count", "truncated"), [(2000, False), (2001, True)])
async def test_an_event_with_more_attempts_than_one_answer_holds_says_so(
    api: RunningApi, database_url: str, count: int, truncated: bool
) -> None:
    account, key = api.account("Acme", "acct_a")
    webhook_id, _ = seed_webhook(database_url, account, "https://127.0.0.1:9/x", ["message.read"])
    at = datetime.now(UTC) - timedelta(hours=2)
    with psycopg.connect(database_url) as conn:  # redelivered over and over: one event, `count` attempts
        conn.execute("SELECT hookfleet_create_log_day(%s)", (at.date(),))
        conn.execute(
            "INSERT INTO delivery_attempts (attempt_id, event_id, event_type, account_id, webhook_id, attempt, outcome,"
            " status_code, response_ms, attempted_at, next_step)"
            " SELECT 'att_many' || lpad(i::text, 5, '0'), 'evt_many', 'message.read', %s, %s, 1, 'http_error', 500, 9,"
            " %s + i * interval '1 millisecond', 'retry' FROM generate_series(1, %s) i",
            (account, webhook_id, at, count),
        )
    view = await api.call("GET", "/v1/events/evt_many", key)
    assert view.status == 200 and view.body["truncated"] is truncated
    [hook] = view.body["webhooks"]
    assert len(hook["attempts"]) == 2000 and hook["attempts"][0]["attempt_id"] == "att_many00001"
