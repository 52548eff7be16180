"""Redrive on recovery end to end: real HTTPS receivers, the real broker, PostgreSQL and every role
(docs/architecture.md#redrive-on-recovery). The outage is shortened by the retry schedule (0.5 s delays)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from producer.publisher import build_event
from schemas.catalog import EventType
from schemas.topics import Topics
from tests.integration.test_dispatcher import publisher_for
from tests.support.fleet import Fleet, seed_account, seed_webhook
from tests.support.group_offsets import fleet_idle
from tests.support.receiver import HttpsReceiver, Received
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

OPERATIONAL = ["webhook.failing", "webhook.recovered", "webhook.disabled"]
RATE = 4.0
"""HOOKFLEET_RECOVERY_REDRIVE_RATE: dead letters per second per webhook."""
OUTAGE = 5
"""Events published to each webhook while its receiver is down."""


def _scalar(database_url: str, sql: str, *args: object) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]


def _dead_in_order(database_url: str, webhook_id: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT event_id FROM dead_letters WHERE webhook_id = %s ORDER BY dead_at, event_id", (webhook_id,)
        ).fetchall()
    return [str(row[0]) for row in rows]


def _set_mark(database_url: str, webhook_id: str, on: bool) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE webhooks SET redrive_on_recovery = %s WHERE id = %s", (on, webhook_id))


def _recovered(received: list[Received], webhook_id: str) -> list[dict[str, Any]]:
    """The data of every webhook.recovered about `webhook_id`."""
    notes = [json.loads(r.body)["data"] for r in received if r.headers["X-Webhook-Event"] == "webhook.recovered"]
    return [data for data in notes if data["webhook_id"] == webhook_id]


def _publish(
    kafka_bootstrap: str, topics: Topics, event_type: EventType, count: int, spacing_s: float = 0.0
) -> list[str]:
    ids = []
    with publisher_for(kafka_bootstrap, topics) as publisher:
        for n in range(count):
            event = build_event("acct_a", event_type, {"n": n})
            publisher.publish_and_wait(event)
            ids.append(event.id)
            if spacing_s:
                time.sleep(spacing_s)  # publish order = dead-letter order for the unordered webhooks, not a sync
    return ids


def _since(received: list[Received], at: float) -> list[Received]:
    return [r for r in received if r.at >= at]


def test_a_recovered_webhook_gets_its_dead_letters_once_oldest_first_paced_and_only_when_opted_in(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    # Given three webhooks of one account whose receivers are down: two opted in (one FIFO), one not;
    # and a fourth, healthy, subscribed to the operational events
    seed_account(database_url, "acct_a")
    hooks: dict[str, tuple[str, str]] = {}
    for path, event_type, ordering in [
        ("/redrive", "message.sent", "unordered"),
        ("/fifo", "message.read", "fifo"),
        ("/plain", "contact.created", "unordered"),
    ]:
        hooks[path] = seed_webhook(
            database_url, "acct_a", receiver.url(path), [event_type], name=path[1:], ordering=ordering
        )
        receiver.expect(path, secret=hooks[path][1], statuses=[500])
    _set_mark(database_url, hooks["/redrive"][0], True)
    _set_mark(database_url, hooks["/fifo"][0], True)
    _, ops_secret = seed_webhook(database_url, "acct_a", receiver.url("/ops"), OPERATIONAL, name="ops")
    receiver.expect("/ops", secret=ops_secret)
    env = {"HOOKFLEET_RETRY_DELAYS_S": "[0.5, 0.5, 0.5]", "HOOKFLEET_RECOVERY_REDRIVE_RATE": str(RATE)}
    fleet.start_dispatcher(**env)
    fleet.start("retry-scheduler", **env)
    fleet.start("recorder", **env)

    # When each gets events during the outage, until every one of them is dead-lettered
    _publish(kafka_bootstrap, topics, EventType.MESSAGE_SENT, OUTAGE, spacing_s=0.3)
    fifo_events = _publish(kafka_bootstrap, topics, EventType.MESSAGE_READ, OUTAGE)
    _publish(kafka_bootstrap, topics, EventType.CONTACT_CREATED, OUTAGE)
    ids = {path: webhook_id for path, (webhook_id, _) in hooks.items()}
    wait_until(
        lambda: all(len(_dead_in_order(database_url, ids[p])) == OUTAGE for p in ids)
        and all(_scalar(database_url, "SELECT status FROM webhooks WHERE id = %s", ids[p]) == "failing" for p in ids),
        90,
        "every outage event dead-lettered and every webhook failing",
    )
    dead = {path: _dead_in_order(database_url, ids[path]) for path in ids}
    # and then the receivers recover and a new event succeeds for each
    for path in ids:
        receiver.expect(path, secret=hooks[path][1], statuses=[200])
    recovered_at = time.time()
    _publish(kafka_bootstrap, topics, EventType.MESSAGE_SENT, 1)
    _publish(kafka_bootstrap, topics, EventType.MESSAGE_READ, 1)
    _publish(kafka_bootstrap, topics, EventType.CONTACT_CREATED, 1)

    # Then the opted-in webhooks get every dead-lettered event, once, oldest first, at the configured pace
    def redriven(path: str) -> list[Received]:
        return [r for r in _since(receiver.at(path), recovered_at) if r.event_id in dead[path]]

    assert receiver.wait_for(lambda: all(len(redriven(p)) >= OUTAGE for p in ("/redrive", "/fifo")), timeout_s=60)
    wait_until(
        lambda: len(_recovered(receiver.at("/ops"), ids["/plain"])) == 1
        and _scalar(database_url, "SELECT count(*) FROM recovery_redrives") == 0
        and fleet_idle(kafka_bootstrap, topics),
        60,
        "the fleet to finish the recoveries",
    )
    for path in ("/redrive", "/fifo"):
        got = redriven(path)
        assert [r.event_id for r in got] == dead[path], path  # once each, oldest dead letter first
        assert {r.attempt for r in got} == {1} and all(r.signature_ok for r in got)
        span = got[-1].at - got[0].at
        assert span >= (OUTAGE - 1) / RATE - 0.3, (path, span)  # paced: 5 at 4/s take about a second
    assert dead["/fifo"] == fifo_events  # the FIFO webhook's dead letters, so its redrive, in publish order
    # and the webhook that did not opt in gets nothing back: only the event that healed it
    assert [r.event_id for r in _since(receiver.at("/plain"), recovered_at) if r.event_id in dead["/plain"]] == []
    assert len(_since(receiver.at("/plain"), recovered_at)) == 1
    # and each webhook.recovered says how many it queued
    assert [d["redriven"] for d in _recovered(receiver.at("/ops"), ids["/redrive"])] == [OUTAGE]
    assert [d["redriven"] for d in _recovered(receiver.at("/ops"), ids["/fifo"])] == [OUTAGE]
    assert [(d["redriven"], d["dead_letters"]) for d in _recovered(receiver.at("/ops"), ids["/plain"])] == [
        (0, OUTAGE)
    ]

    # When the opted-in webhook fails again (one more dead letter) and recovers a second time
    receiver.expect("/redrive", secret=hooks["/redrive"][1], statuses=[500])
    [second_dead] = _publish(kafka_bootstrap, topics, EventType.MESSAGE_SENT, 1)
    wait_until(
        lambda: second_dead in _dead_in_order(database_url, ids["/redrive"])
        and _scalar(database_url, "SELECT status FROM webhooks WHERE id = %s", ids["/redrive"]) == "failing",
        60,
        "the second outage's dead letter",
    )
    receiver.expect("/redrive", secret=hooks["/redrive"][1], statuses=[200])
    again_at = time.time()
    _publish(kafka_bootstrap, topics, EventType.MESSAGE_SENT, 1)
    wait_until(
        lambda: len(_recovered(receiver.at("/ops"), ids["/redrive"])) == 2
        and _scalar(database_url, "SELECT count(*) FROM recovery_redrives") == 0
        and fleet_idle(kafka_bootstrap, topics),
        60,
        "the second recovery to finish",
    )
    # Then only the new dead letter is redriven: the first outage's are not sent again
    after = Counter(r.event_id for r in _since(receiver.at("/redrive"), again_at))
    assert after[second_dead] == 1 and not set(after) & set(dead["/redrive"]), after
    assert _recovered(receiver.at("/ops"), ids["/redrive"])[1]["redriven"] == 1
