"""The failure policy end to end, with real receivers, the real broker and PostgreSQL:

410 switches a webhook off and notifies; Retry-After (seconds, HTTP date, capped) moves the next attempt;
state changes reach subscribed webhooks and the account's mailbox exactly once with two recorders;
auto-disable after HOOKFLEET_DISABLE_AFTER on the records' own clock; custom headers arrive and stay out
of the logs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller

from hookfleet.kafka import KafkaProducer
from producer.publisher import build_event
from schemas.catalog import EventType
from schemas.models import AttemptRecord, Outcome
from schemas.topics import Topics
from tests.integration.recorder_fixtures import make_attempt, make_dead_task, make_event, publish
from tests.integration.test_dispatcher import publisher_for
from tests.support.fleet import Fleet, seed_account, seed_webhook
from tests.support.group_offsets import committed_to_end, fleet_idle, fleet_lag, high_watermarks
from tests.support.lateness import EARLY_SLACK_S, RETRY_LATE_S
from tests.support.mailbox import Mailbox as _Mailbox
from tests.support.ports import free_port
from tests.support.receiver import HttpsReceiver, Received
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

DELAYS = (1.0, 2.0, 3.0)
OPERATIONAL = ["webhook.failing", "webhook.recovered", "webhook.disabled"]


def _row(database_url: str, sql: str, *args: object) -> tuple[Any, ...] | None:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, args).fetchone()


def _delays_env(delays: tuple[float, float, float], **extra: str) -> dict[str, str]:
    return {"HOOKFLEET_RETRY_DELAYS_S": json.dumps(list(delays)), **extra}


def _start_fleet(fleet: Fleet, delays: tuple[float, float, float] = DELAYS, **extra: str) -> None:
    env = _delays_env(delays, **extra)
    fleet.start_dispatcher(**env)
    fleet.start("retry-scheduler", **env)
    fleet.start("recorder", **env)


def _recorded(kafka_bootstrap: str, topics: Topics) -> bool:
    """The recorder has written (and committed) every attempt record and dead letter published so far."""
    return committed_to_end(kafka_bootstrap, topics.prefix + "hookfleet-recorder", topics.attempts, topics.dead)


def _all_processed(kafka_bootstrap: str, topics: Topics, database_url: str) -> bool:
    """Nothing is in flight: the operational outbox is drained (its events published), then every role has
    finished everything written so far; a retry or a duplicate, had one been made, has arrived or waits
    in a delay topic by the time this holds."""
    drained = _row(database_url, "SELECT count(*) FROM operational_outbox") == (0,)
    return drained and fleet_idle(kafka_bootstrap, topics)


def _unfinished(kafka_bootstrap: str, topics: Topics, database_url: str) -> str:
    """What `_all_processed` found unfinished, named when a wait on it times out."""
    outbox = _row(database_url, "SELECT count(*) FROM operational_outbox")
    return f"the fleet to finish its work (outbox rows {outbox}; {fleet_lag(kafka_bootstrap, topics)})"


def _retries_scheduled(kafka_bootstrap: str, topics: Topics) -> int:
    return sum(sum(high_watermarks(kafka_bootstrap, topic).values()) for topic in topics.retries)


def _operational(received: list[Received]) -> list[tuple[str, dict[str, Any]]]:
    return [(r.headers["X-Webhook-Event"], json.loads(r.body)["data"]) for r in received]


def test_410_switches_the_webhook_off_and_a_subscribed_webhook_gets_one_signed_webhook_disabled(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_a")
    gone_id, gone_secret = seed_webhook(database_url, "acct_a", receiver.url("/gone"), ["message.read"])
    receiver.expect("/gone", secret=gone_secret, statuses=[410])
    ops_id, ops_secret = seed_webhook(database_url, "acct_a", receiver.url("/ops"), OPERATIONAL, name="Ops")
    receiver.expect("/ops", secret=ops_secret)
    _start_fleet(fleet)

    with publisher_for(kafka_bootstrap, topics) as publisher:
        publisher.publish_and_wait(build_event("acct_a", EventType.MESSAGE_READ, {"message_id": "m1"}))

    assert receiver.wait_for(lambda: len(receiver.at("/ops")) >= 1, timeout_s=30)
    wait_until(
        lambda: _all_processed(kafka_bootstrap, topics, database_url),
        30,
        lambda: _unfinished(kafka_bootstrap, topics, database_url),
    )
    assert _retries_scheduled(kafka_bootstrap, topics) == 0  # no retry after a 410
    assert len(receiver.at("/gone")) == 1
    row = _row(
        database_url, "SELECT active, disabled_reason, disabled_at, name, url FROM webhooks WHERE id = %s", gone_id
    )
    assert row is not None
    active, reason, disabled_at, name, url = row
    assert (active, reason) == (False, "gone") and disabled_at is not None
    [note] = receiver.at("/ops")
    assert note.signature_ok and note.headers["X-Webhook-Event"] == "webhook.disabled"
    data = json.loads(note.body)["data"]
    assert (data["webhook_id"], data["name"], data["url"], data["reason"]) == (gone_id, name, url, "gone")
    assert (data["active"], data["last_error"]) == (False, "http 410")
    step = _row(database_url, "SELECT next_step, status_code FROM delivery_attempts WHERE webhook_id = %s", gone_id)
    assert step == ("disabled", 410)
    assert _row(database_url, "SELECT count(*) FROM dead_letters") == (0,)
    # The notification webhook is healthy and untouched.
    assert _row(database_url, "SELECT active, status FROM webhooks WHERE id = %s", ops_id) == (True, "healthy")


@pytest.mark.slow
def test_429_with_retry_after_30_brings_attempt_2_after_30_s_not_10(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_a")
    _, secret = seed_webhook(database_url, "acct_a", receiver.url("/busy"), ["contact.created"])
    receiver.expect("/busy", secret=secret, statuses=[429, 200], headers={"Retry-After": "30"})
    _start_fleet(fleet, (10.0, 60.0, 300.0))
    with publisher_for(kafka_bootstrap, topics) as publisher:
        publisher.publish_and_wait(build_event("acct_a", EventType.CONTACT_CREATED, {}))
    assert receiver.wait_for(lambda: len(receiver.at("/busy")) == 2, timeout_s=60)
    first, second = receiver.at("/busy")
    gap = second.at - first.at
    assert 29.0 <= gap <= 30.0 + RETRY_LATE_S, gap
    assert (first.attempt, second.attempt) == (1, 2) and first.event_id == second.event_id


def test_retry_after_as_an_http_date_is_honoured_a_huge_one_capped_and_503_without_it_follows_the_schedule(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_a")
    paths = {"/date": 429, "/huge": 503, "/plain": 503}
    for path in paths:
        _, secret = seed_webhook(database_url, "acct_a", receiver.url(path), ["message.sent"], name=path[1:])
        headers: Any = None
        if path == "/date":
            headers = lambda: {"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)}  # noqa: E731
        elif path == "/huge":
            headers = {"Retry-After": "86400"}
        receiver.expect(path, secret=secret, statuses=[paths[path], 200], headers=headers)
    # The cap (7 s) is longer than the longest delay topic (3 s): the retry scheduler relays the task
    # through that topic until due instead of holding it (and everything behind it).
    _start_fleet(fleet, DELAYS, HOOKFLEET_RETRY_AFTER_CAP_S="7")
    with publisher_for(kafka_bootstrap, topics) as publisher:
        publisher.publish_and_wait(build_event("acct_a", EventType.MESSAGE_SENT, {}))
    assert receiver.wait_for(lambda: all(len(receiver.at(p)) == 2 for p in paths), timeout_s=40)

    def gap(path: str) -> float:
        first, second = receiver.at(path)
        assert (first.attempt, second.attempt) == (1, 2)
        return second.at - first.at

    assert 4.0 - EARLY_SLACK_S <= gap("/date") <= 5.0 + RETRY_LATE_S, gap("/date")  # HTTP dates: whole seconds
    assert 7.0 - EARLY_SLACK_S <= gap("/huge") <= 7.0 + RETRY_LATE_S + 1.0, gap("/huge")  # two relays on the way
    assert DELAYS[0] - EARLY_SLACK_S <= gap("/plain") <= DELAYS[0] + RETRY_LATE_S, gap("/plain")


def _attempt(webhook_id: str, at: datetime, outcome: Outcome, account_id: str = "acct_a") -> AttemptRecord:
    record = make_attempt(webhook_id, outcome=outcome, attempted_at=at, account_id=account_id)
    return record if outcome is Outcome.SUCCESS else record.model_copy(update={"error": outcome.value})


def _healthy_since(database_url: str, webhook_id: str, since: datetime) -> None:
    """Backdate the webhook's last status change, so dead letters from `since` on count (status.py)."""
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE webhooks SET status_changed_at = %s WHERE id = %s", (since, webhook_id))


def test_failing_recovered_failing_notifies_once_each_with_two_recorders_by_webhook_and_by_mail(
    fleet: Fleet,
    receiver: HttpsReceiver,
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
    producer: KafkaProducer,
) -> None:
    seed_account(database_url, "acct_a")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE accounts SET notification_email = 'ops@example.com', notification_email_confirmed_at = now()"
            " WHERE id = 'acct_a'"
        )
    watched, _ = seed_webhook(database_url, "acct_a", "https://example.com/never-called", ["message.read"])
    ops_id, ops_secret = seed_webhook(database_url, "acct_a", receiver.url("/ops"), OPERATIONAL, name="Ops")
    receiver.expect("/ops", secret=ops_secret)
    mailbox = _Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        env = _delays_env(DELAYS, HOOKFLEET_SMTP_URL=f"smtp://127.0.0.1:{smtp.port}")
        fleet.start_dispatcher(**env)
        fleet.start("recorder", name="recorder-1", **env)
        fleet.start("recorder", name="recorder-2", **env)

        start = datetime.now(UTC) - timedelta(minutes=10)
        _healthy_since(database_url, watched, start - timedelta(hours=1))
        # Every record is published twice (a replay): a state change still notifies once.
        dead = make_dead_task(watched, dead_at=start, event=make_event("acct_a"))
        publish(producer, topics.dead, [dead, dead])
        wait_until(lambda: len(receiver.at("/ops")) == 1, 30, "the first notification")
        success = _attempt(watched, start + timedelta(minutes=1), Outcome.SUCCESS)
        publish(producer, topics.attempts, [success, success])
        wait_until(lambda: len(receiver.at("/ops")) == 2, 30, "the second notification")
        again = make_dead_task(watched, dead_at=start + timedelta(minutes=2), event=make_event("acct_a"))
        publish(producer, topics.dead, [again, again])
        wait_until(lambda: len(receiver.at("/ops")) == 3, 30, "the third notification")
        wait_until(lambda: len(mailbox.messages) >= 3, 30, "three mails")
        # Every record was published twice: once all are processed, a duplicate would have arrived.
        wait_until(
            lambda: _all_processed(kafka_bootstrap, topics, database_url),
            30,
            lambda: _unfinished(kafka_bootstrap, topics, database_url),
        )

        notes = _operational(receiver.at("/ops"))
        assert [kind for kind, _ in notes] == ["webhook.failing", "webhook.recovered", "webhook.failing"]
        assert all(data["webhook_id"] == watched for _, data in notes)
        assert [data["reason"] for _, data in notes] == ["dead_letter", "delivered", "dead_letter"]
        assert notes[0][1]["last_error"] == "http 500" and notes[0][1]["dead_letters"] == 1
        assert all(r.signature_ok for r in receiver.at("/ops"))
        assert mailbox.subjects() == [
            "Webhook failing: CRM Sync",
            "Webhook recovered: CRM Sync",
            "Webhook failing: CRM Sync",
        ]
        assert all(to == ["ops@example.com"] for to, _ in mailbox.messages)
        assert "http 500" in mailbox.messages[0][1].get_payload()
        assert _row(database_url, "SELECT count(*) FROM operational_outbox") == (0,)
        # Never its own: the notification webhook is not sent anything about itself.
        assert all(data["webhook_id"] != ops_id for _, data in notes)
    finally:
        smtp.stop()


def test_auto_disable_after_the_configured_period_on_the_records_clock_and_re_enable_heals(
    fleet: Fleet,
    receiver: HttpsReceiver,
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
    producer: KafkaProducer,
) -> None:
    seed_account(database_url, "acct_a")
    watched, _ = seed_webhook(database_url, "acct_a", "https://example.com/never-called", ["message.read"])
    ops_id, ops_secret = seed_webhook(database_url, "acct_a", receiver.url("/ops"), OPERATIONAL, name="Ops")
    receiver.expect("/ops", secret=ops_secret)
    env = _delays_env(DELAYS, HOOKFLEET_DISABLE_AFTER="P5D")
    fleet.start_dispatcher(**env)
    fleet.start("recorder", **env)

    def state() -> tuple[Any, ...] | None:
        return _row(
            database_url, "SELECT active, status, disabled_reason, disabled_at FROM webhooks WHERE id = %s", watched
        )

    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    _healthy_since(database_url, watched, t0 - timedelta(days=1))
    publish(producer, topics.dead, [make_dead_task(watched, dead_at=t0, event=make_event("acct_a"))])
    wait_until(lambda: (state() or ())[:2] == (True, "failing"), 30, lambda: f"status failing, got {state()}")
    # Four days of failures: still on.
    publish(producer, topics.attempts, [_attempt(watched, t0 + timedelta(days=4), Outcome.HTTP_ERROR)])
    wait_until(lambda: _recorded(kafka_bootstrap, topics), 30, "the recorder to commit the 4-day failure")
    assert (state() or ())[:3] == (True, "failing", None)
    # A failure five days (and a second) after it started failing: switched off, reason "failing".
    off_at = t0 + timedelta(days=5, seconds=1)
    publish(producer, topics.attempts, [_attempt(watched, off_at, Outcome.TIMEOUT)])
    wait_until(lambda: (state() or ())[:3] == (False, "failing", "failing"), 30, lambda: f"switched off, got {state()}")
    assert (state() or ())[3] == off_at

    # Switched on again (as the API does): the reason clears and the period starts over, so an old-style
    # failure right after does not switch it off; the next success heals the status.
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE webhooks SET active = true, disabled_reason = NULL, disabled_at = NULL, enabled_at = now()"
            " WHERE id = %s",
            (watched,),
        )
    now = datetime.now(UTC)
    publish(producer, topics.attempts, [_attempt(watched, now + timedelta(seconds=1), Outcome.HTTP_ERROR)])
    wait_until(lambda: _recorded(kafka_bootstrap, topics), 30, "the recorder to commit the failure after re-enabling")
    assert (state() or ())[:3] == (True, "failing", None)
    publish(producer, topics.attempts, [_attempt(watched, now + timedelta(seconds=2), Outcome.SUCCESS)])
    wait_until(lambda: (state() or ())[:3] == (True, "healthy", None), 30, lambda: f"healthy, got {state()}")

    wait_until(lambda: len(receiver.at("/ops")) == 3, 30, "three notifications")
    wait_until(
        lambda: _all_processed(kafka_bootstrap, topics, database_url),
        30,
        lambda: _unfinished(kafka_bootstrap, topics, database_url),
    )
    kinds = [kind for kind, _ in _operational(receiver.at("/ops"))]
    assert kinds == ["webhook.failing", "webhook.disabled", "webhook.recovered"]
    disabled = _operational(receiver.at("/ops"))[1][1]
    assert (disabled["reason"], disabled["last_error"], disabled["active"]) == ("failing", "timeout", False)
    assert _row(database_url, "SELECT active FROM webhooks WHERE id = %s", ops_id) == (True,)


def test_custom_headers_arrive_with_every_delivery_and_never_reach_the_logs(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    token = "Bearer gw-token-9f8e7d6c5b4a"
    seed_account(database_url, "acct_a")
    _, secret = seed_webhook(
        database_url,
        "acct_a",
        receiver.url("/gateway"),
        ["message.read"],
        headers={"Authorization": token, "X-Tenant": "acme"},
    )
    receiver.expect("/gateway", secret=secret, statuses=[500, 200])
    _start_fleet(fleet, HOOKFLEET_LOG_LEVEL="DEBUG")
    with publisher_for(kafka_bootstrap, topics) as publisher:
        publisher.publish_and_wait(build_event("acct_a", EventType.MESSAGE_READ, {"message_id": "m1"}))
    assert receiver.wait_for(lambda: len(receiver.at("/gateway")) == 2, timeout_s=30)
    for request in receiver.at("/gateway"):  # the first attempt and the retry
        assert request.headers["Authorization"] == token
        assert request.headers["X-Tenant"] == "acme"
        assert request.signature_ok
    wait_until(
        lambda: _all_processed(kafka_bootstrap, topics, database_url),
        30,
        lambda: _unfinished(kafka_bootstrap, topics, database_url),
    )
    fleet.stop_all()  # every line the roles would log about these deliveries is written when they exit
    logs = fleet.logs()
    assert "gw-token" not in logs and "acme" not in logs
