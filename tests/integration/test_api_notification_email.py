"""A notification address gets mail only once confirmed: setting it mails a one-time code (hashed at
rest, expiring, 5 tries, one mail a minute), the code confirms it, and the recorder mails only confirmed
addresses. Real API, real PostgreSQL, a real SMTP server (aiosmtpd), a real recorder."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import psycopg
import pytest

from hookfleet.kafka import KafkaProducer
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
from tests.support.api_client import RunningApi, api_settings
from tests.support.mailbox import Mailbox, smtp_server

pytestmark = pytest.mark.integration

CONFIRM = "/v1/account/notification-email/confirm"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, mailbox: Mailbox) -> AsyncIterator[RunningApi]:
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, smtp_url=mailbox.smtp_url)
    async with RunningApi(settings) as running:
        yield running


def _code(mailbox: Mailbox, index: int = -1) -> str:
    _to, message = mailbox.messages[index]
    text = bytes(message.get_payload(decode=True)).decode()
    found = re.search(r"^Confirmation code: (\S+)\r?$", text, re.M)
    assert found, text
    return found.group(1)


def _allow_new_code(database_url: str) -> None:
    """As if the minute between two codes had passed."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE accounts SET confirmation_sent_at = now() - interval '61 seconds'")


async def test_a_new_address_is_unconfirmed_until_the_mailed_code_is_entered(
    api: RunningApi, key: str, mailbox: Mailbox, database_url: str
) -> None:
    # When the account sets its address
    set_ = await api.call("PATCH", "/v1/account", key, {"notification_email": "ops@example.com"})
    # Then it is stored unconfirmed and mailed one code, kept only as its SHA-256
    assert set_.status == 200 and set_.body["notification_email_confirmed"] is False
    wait_for(lambda: len(mailbox.messages) == 1, what="the confirmation mail")
    assert mailbox.messages[0][0] == ["ops@example.com"]
    assert mailbox.subjects() == ["Confirm your hookfleet notification address"]
    code = _code(mailbox)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT confirmation_code_hash, accounts::text FROM accounts WHERE id = 'acct_a'").fetchone()
    assert row is not None and bytes(row[0]) == hashlib.sha256(code.encode()).digest() and code not in row[1]

    # A wrong code is a 422 naming the field; the right one confirms; the code works once
    wrong = await api.call("POST", CONFIRM, key, {"code": "not-the-code"})
    assert wrong.status == 422 and wrong.error["field"] == "code" and "not the one mailed" in wrong.error["message"]
    right = await api.call("POST", CONFIRM, key, {"code": code})
    assert right.status == 200 and right.body["notification_email_confirmed"] is True
    assert (await api.call("POST", CONFIRM, key, {"code": code})).status == 409

    # Setting the same confirmed address again changes nothing and mails nothing
    again = await api.call("PATCH", "/v1/account", key, {"notification_email": "ops@example.com"})
    assert again.status == 200 and again.body["notification_email_confirmed"] is True
    assert len(mailbox.messages) == 1


async def test_codes_are_mailed_at_most_once_a_minute_expire_and_allow_five_tries(
    api: RunningApi, key: str, mailbox: Mailbox, database_url: str
) -> None:
    assert (await api.call("PATCH", "/v1/account", key, {"notification_email": "a@example.com"})).status == 200
    # Another address within the minute: 429 with Retry-After, nothing mailed
    busy = await api.call("PATCH", "/v1/account", key, {"notification_email": "victim@example.net"})
    assert busy.status == 429 and 1 <= int(busy.headers["Retry-After"]) <= 60
    wait_for(lambda: len(mailbox.messages) == 1, what="one mail")
    assert [to for to, _ in mailbox.messages] == [["a@example.com"]]

    # An expired code is refused
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE accounts SET confirmation_expires_at = now() - interval '1 second'")
    expired = await api.call("POST", CONFIRM, key, {"code": _code(mailbox)})
    assert expired.status == 422 and "expired" in expired.error["message"]

    # Five wrong tries and even the right code no longer works
    _allow_new_code(database_url)
    assert (await api.call("PATCH", "/v1/account", key, {"notification_email": "a@example.com"})).status == 200
    wait_for(lambda: len(mailbox.messages) == 2, what="a second code")
    for _ in range(5):
        assert (await api.call("POST", CONFIRM, key, {"code": "guess"})).status == 422
    locked = await api.call("POST", CONFIRM, key, {"code": _code(mailbox)})
    assert locked.status == 422 and "5 wrong codes" in locked.error["message"]
    assert (await api.call("GET", "/v1/account", key)).body["notification_email_confirmed"] is False

    # Removing the address clears everything
    removed = await api.call("PATCH", "/v1/account", key, {"notification_email": ""})
    assert removed.body == {
        "id": "acct_a",
        "name": "Acme",
        "notification_email": None,
        "notification_email_confirmed": False,
    }


def test_the_recorder_mails_only_a_confirmed_address(
    kafka_bootstrap: str, topics: Topics, database_url: str, producer: KafkaProducer, mailbox: Mailbox
) -> None:
    hour_ago = now_ms_precision() - timedelta(hours=1)
    unconfirmed = insert_webhook(database_url, account_id="acct_u", changed_at=hour_ago)
    confirmed = insert_webhook(database_url, account_id="acct_c", changed_at=hour_ago)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE accounts SET notification_email = 'someone@example.net' WHERE id = 'acct_u'")
        conn.execute(
            "UPDATE accounts SET notification_email = 'ops@example.com', notification_email_confirmed_at = now()"
            " WHERE id = 'acct_c'"
        )
    settings = recorder_settings(kafka_bootstrap, topics, database_url, smtp_url=mailbox.smtp_url)
    with recorder_running(settings):
        now = now_ms_precision()
        publish(producer, topics.dead, [make_dead_task(unconfirmed, dead_at=now, event=make_event("acct_u"))])
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM webhooks WHERE status = 'failing'") == 1)
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM operational_outbox") == 0, what="first sent")
        publish(producer, topics.dead, [make_dead_task(confirmed, dead_at=now, event=make_event("acct_c"))])
        wait_for(lambda: len(mailbox.messages) == 1, what="the confirmed account's mail")
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM operational_outbox") == 0, what="both sent")
    assert [to for to, _ in mailbox.messages] == [["ops@example.com"]]
