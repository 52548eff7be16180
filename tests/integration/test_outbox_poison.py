"""One outbox row can never crash-loop the recorder: a webhook name or a notification address the mail
library refuses fails that row alone (marked failed, retried with backoff), and the recorder goes on
mailing everyone else. Real broker, real PostgreSQL, a real SMTP server (aiosmtpd).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY

from hookfleet.kafka import KafkaProducer
from schemas.models import DeliveryTask
from schemas.topics import Topics
from tests.integration.recorder_fixtures import (
    insert_webhook,
    make_dead_task,
    make_event,
    now_ms_precision,
    publish,
    recorder_running,
    recorder_settings,
    scalar,
    wait_for,
)
from tests.support.mailbox import Mailbox as _Mailbox
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def mailbox() -> Iterator[tuple[_Mailbox, int]]:
    box = _Mailbox()
    smtp = Controller(box, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        yield box, smtp.port
    finally:
        smtp.stop()


def _account(database_url: str, account_id: str, email: str, webhook_name: str) -> str:
    """An account with a notification address and one webhook, healthy for an hour (as the API could
    have stored them before it refused such input)."""
    webhook_id = insert_webhook(database_url, account_id=account_id, changed_at=now_ms_precision() - timedelta(hours=1))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE accounts SET notification_email = %s, notification_email_confirmed_at = now() WHERE id = %s",
            (email, account_id),
        )
        conn.execute("UPDATE webhooks SET name = %s WHERE id = %s", (webhook_name, webhook_id))
    return webhook_id


def _dead(webhook_id: str, account_id: str) -> DeliveryTask:
    """A dead letter now: it turns its healthy webhook failing, which writes one outbox row."""
    return make_dead_task(webhook_id, dead_at=now_ms_precision(), event=make_event(account_id))


def _failures() -> float:
    return REGISTRY.get_sample_value("hookfleet_item_failures_total", {"loop": "outbox"}) or 0.0


@pytest.mark.parametrize(
    "email", ["a@[b.c", ":;a@b.c", "ops@example.com\r\nBcc: x@b.c"], ids=["open-bracket", "empty-group", "CR-LF"]
)
def test_a_row_the_mail_library_refuses_is_marked_failed_and_the_recorder_mails_the_others(
    kafka_bootstrap: str,
    topics: Topics,
    database_url: str,
    producer: KafkaProducer,
    mailbox: tuple[_Mailbox, int],
    email: str,
) -> None:
    box, port = mailbox
    # Given a poisoned account and a sound one, each with a webhook about to become failing
    poisoned = _account(database_url, "acct_poison", email, "CRM Sync")
    sound = _account(database_url, "acct_sound", "ops@example.com", "CRM Sync")
    settings = recorder_settings(kafka_bootstrap, topics, database_url, smtp_url=f"smtp://127.0.0.1:{port}")
    failures_before = _failures()

    with recorder_running(settings) as running:
        # When the poisoned webhook's dead letter comes first, and the sound one's after it
        publish(producer, topics.dead, [_dead(poisoned, "acct_poison")])
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM operational_outbox") == 1, what="poisoned row")
        wait_for(
            lambda: scalar(database_url, "SELECT state FROM operational_outbox") == "failed", what="row marked failed"
        )
        publish(producer, topics.dead, [_dead(sound, "acct_sound")])

        # Then the sound account is mailed, and the recorder is still running
        wait_for(lambda: box.subjects() == ["Webhook failing: CRM Sync"], what="the sound account's mail")
        assert [to for to, _ in box.messages] == [["ops@example.com"]]
        assert running.thread is not None and running.thread.is_alive(), "the recorder stopped"

    # And the poisoned row alone is kept: failed, its error short and named, its event published, a retry due
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT account_id, state, published, failures, last_error, next_attempt_at - now() FROM operational_outbox"
        ).fetchall()
    [(account_id, state, published, failures, error, retry_in)] = rows
    assert (account_id, state, published, failures) == ("acct_poison", "failed", True, 1)
    assert error.split(":")[0] in {"ValueError", "AttributeError"} and len(error) <= 200, error
    assert timedelta(seconds=0) < retry_in <= timedelta(seconds=30), retry_in
    assert _failures() == failures_before + 1


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"], ids=["U+2028", "U+2029", "U+0085"])
def test_a_webhook_name_stored_with_a_line_separator_is_mailed_on_one_line(
    kafka_bootstrap: str,
    topics: Topics,
    database_url: str,
    producer: KafkaProducer,
    mailbox: tuple[_Mailbox, int],
    separator: str,
) -> None:
    box, port = mailbox
    # Given a webhook whose name was stored before the API refused such characters
    webhook_id = _account(database_url, "acct_a", "ops@example.com", f"Billing{separator}sync")
    settings = recorder_settings(kafka_bootstrap, topics, database_url, smtp_url=f"smtp://127.0.0.1:{port}")
    with recorder_running(settings) as running:
        # When it becomes failing
        publish(producer, topics.dead, [_dead(webhook_id, "acct_a")])
        # Then its mail goes out with the separator made a space, and nothing is left in the outbox
        wait_for(lambda: box.subjects() == ["Webhook failing: Billing sync"], what="the mail")
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM operational_outbox") == 0, what="outbox empty")
        assert running.thread is not None and running.thread.is_alive()


def test_a_row_that_keeps_failing_is_given_up_after_the_last_try_and_never_claimed_again(
    kafka_bootstrap: str,
    topics: Topics,
    database_url: str,
    producer: KafkaProducer,
    mailbox: tuple[_Mailbox, int],
) -> None:
    _box, port = mailbox
    poisoned = _account(database_url, "acct_poison", "a@[b.c", "CRM Sync")
    settings = recorder_settings(kafka_bootstrap, topics, database_url, smtp_url=f"smtp://127.0.0.1:{port}")
    with recorder_running(settings) as running:
        publish(producer, topics.dead, [_dead(poisoned, "acct_poison")])
        wait_for(lambda: scalar(database_url, "SELECT failures FROM operational_outbox") == 1, what="first failure")
        # Each try made due at once (as if its backoff had passed); the periodic check picks it up.
        for tries in range(2, 6):
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("UPDATE operational_outbox SET next_attempt_at = now()")
            wait_for(
                lambda tries=tries: scalar(database_url, "SELECT failures FROM operational_outbox") == tries,  # type: ignore[misc]
                timeout_s=30,
                what=f"try {tries}",
            )
        assert running.thread is not None and running.thread.is_alive()
    assert scalar(database_url, "SELECT next_attempt_at IS NULL FROM operational_outbox") is True
    assert scalar(database_url, "SELECT state FROM operational_outbox") == "failed"
