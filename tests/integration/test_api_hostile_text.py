"""Hostile free text and odd e-mail forms are refused at the API with a 422 naming the field and the
character, so nothing the recorder mails or a log line writes can carry a line break or an invisible
character (schemas/free_text.py, schemas/api.py `_notification_email`). Real API, real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.api_client import RunningApi

pytestmark = pytest.mark.integration

NEW = {"url": "https://localhost:9/hooks", "events": ["message.read"]}

HOSTILE = [
    ("\u2028", "U+2028 (LINE SEPARATOR)"),
    ("\u2029", "U+2029 (PARAGRAPH SEPARATOR)"),
    ("\x85", "U+0085 (NEXT LINE)"),
    ("\u200e", "U+200E (LEFT-TO-RIGHT MARK)"),
    ("\u202e", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("\ufeff", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
    ("\x00", "U+0000 (NULL)"),
    ("\t", "U+0009 (CHARACTER TABULATION)"),
    ("\r\n", "U+000D (CARRIAGE RETURN)"),
]
IDS = [code.split(" ")[0] for _, code in HOSTILE]


@pytest.mark.parametrize(("char", "named"), HOSTILE, ids=IDS)
async def test_a_webhook_name_with_a_line_break_or_invisible_character_is_a_422_naming_it(
    api: RunningApi, key: str, char: str, named: str
) -> None:
    created = await api.call("POST", "/v1/webhooks", key, {**NEW, "name": f"Billing{char}sync"})
    assert created.status == 422, created.body
    assert created.error["field"] == "name" and created.error["message"].startswith(f"name: must not contain {named}")

    sound = await api.call("POST", "/v1/webhooks", key, {**NEW, "name": "Billing sync ✓"})
    assert sound.status == 201, sound.body
    renamed = await api.call("PATCH", f"/v1/webhooks/{sound.body['id']}", key, {"name": f"Billing{char}sync"})
    assert renamed.status == 422 and renamed.error["field"] == "name" and named in renamed.error["message"]


@pytest.mark.parametrize(("char", "named"), HOSTILE, ids=IDS)
async def test_an_api_key_label_with_a_line_break_or_invisible_character_is_a_422_naming_it(
    api: RunningApi, key: str, char: str, named: str
) -> None:
    reply = await api.call("POST", "/v1/api-keys", key, {"label": f"ci{char}"})
    assert reply.status == 422 and reply.error["field"] == "label" and named in reply.error["message"]


@pytest.mark.parametrize(
    "address",
    [
        "a@[b.c",
        ":;a@b.c",
        "Ops <ops@example.com>",
        '"Ops" <ops@example.com>',
        "ops@example.com\r\nBcc: x@example.com",
        "ops@example.com\n",
        "ops@example.com\u2028",
        "ops@example.com, evil@example.net",
        "ops@example.com (comment)",
        "ops@[127.0.0.1]",
        '"a b"@example.com',
        "a..b@example.com",
        "ops@localhost",
        "ops@exa mple.com",
        "ops@example.com.",
        "\u200eops@example.com",
        "ops@\u4f8b\u3048.jp",
        "\x00@example.com",
    ],
)
async def test_a_notification_address_that_is_not_one_plain_address_is_a_422(
    api: RunningApi, key: str, address: str
) -> None:
    reply = await api.call("PATCH", "/v1/account", key, {"notification_email": address})
    assert reply.status == 422, (address, reply.body)
    assert reply.error["field"] == "notification_email" and "ops@example.com" in reply.error["message"]


async def test_plain_addresses_are_accepted(api: RunningApi, key: str, database_url: str) -> None:
    for address in ("ops@example.com", "ops+hooks@mail.example.co.uk", "o.p-s@xn--bcher-kva.example"):
        reply = await api.call("PATCH", "/v1/account", key, {"notification_email": address})
        assert reply.status == 200 and reply.body["notification_email"] == address, reply.body
        with psycopg.connect(database_url, autocommit=True) as conn:  # as if the minute between codes had passed
            conn.execute("UPDATE accounts SET confirmation_sent_at = NULL")
