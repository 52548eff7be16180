"""Hostile values for the webhook filter, the booleans, portal sessions and the delivery search are a 4xx
JSON body naming the field, never a 500. Real API, real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from api import filter_preview
from tests.support.api_client import Reply, RunningApi

pytestmark = pytest.mark.integration

NEW = {"name": "Billing", "url": "https://localhost:9/hooks", "events": ["message.read"]}


def _refused(reply: Reply, field: str, status: int = 422) -> str:
    assert reply.status == status, reply.body
    assert reply.error["field"] == field, reply.body
    message: str = reply.error["message"]
    return message


@pytest.mark.parametrize(
    ("text", "named", "column"),
    [
        ('type == "a\x00"', "U+0000 (NULL)", 11),  # was a 500: PostgreSQL refused the NUL
        ('type ==\u2028"a"', "U+2028 (LINE SEPARATOR)", 8),
        ('type == "\u202e"', "U+202E (RIGHT-TO-LEFT OVERRIDE)", 10),
        ('\ufefftype == "a"', "U+FEFF (ZERO WIDTH NO-BREAK SPACE)", 1),
    ],
)
async def test_a_filter_with_a_control_format_or_separator_character_is_a_422_with_its_position(
    api: RunningApi, key: str, text: str, named: str, column: int
) -> None:
    def refused(reply: Reply) -> bool:
        message = _refused(reply, "filter")
        return message.startswith(f"filter: must not contain {named}") and f"(line 1, column {column})" in message

    created = await api.call("POST", "/v1/webhooks", key, {**NEW, "filter": text})
    assert refused(created), created.body
    sound = await api.call("POST", "/v1/webhooks", key, NEW)
    path = f"/v1/webhooks/{sound.body['id']}"
    assert refused(await api.call("PATCH", path, key, {"filter": text}))
    assert refused(await api.call("POST", f"{path}/filter-preview", key, {"filter": text}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('type == "' + "a" * 990 + '"', 201),
        ('type == "' + "a" * 991 + '"', "filter is 1001 characters long, at most 1000 (line 1, column 1001)"),
        ("(" * 100 + "true" + ")" * 100, "recursion limit exceeded"),
        ("data" + ".a" * 300 + " == 1", "recursion depth of 32 when parsing. (line 1, column 1)"),
        ("data.x == 99999999999999999999999999999", "invalid int literal (line 1, column 11)"),
        ("data.a.all(x, x.exists(y, y > 0))", "at most one of all()"),
        ('data.s.matches("(a+)+$")', 201),
        ('1 < "1"', 201),  # fails per event (counted, no match), not at save
        ('data.l.exists(x, data.big.matches("b"))', "cannot read data: it runs once per element"),
        ('data.l.exists(x, x.matches("[a-z]{1,100}"))', "cannot call matches(): it runs once per element"),
        ('data.s.matches("\\\\pL{200}")', "matches(): this pattern takes"),  # compiled for every event: 280 ms
        ("data.s.matches(data.pattern)", "matches() takes one string literal, written"),
        ("data.a.contains(data.b)", "contains() takes one string literal, written text.contains"),
        ('data.s.matches("(")', "matches(): invalid regular expression: missing ): ( (line 1, column 16)"),
    ],
)
async def test_a_filter_is_saved_or_refused_with_a_position_never_a_500(
    api: RunningApi, key: str, text: str, expected: int | str
) -> None:
    created = await api.call("POST", "/v1/webhooks", key, {**NEW, "filter": text})
    if isinstance(expected, int):
        assert created.status == expected, created.body
    else:
        assert expected in _refused(created, "filter")


@pytest.mark.parametrize("field", ["redrive_on_recovery", "asymmetric_signing"])
@pytest.mark.parametrize("value", ["yes", 1, 0, "true", None])
async def test_a_boolean_is_json_true_or_false_only(api: RunningApi, key: str, field: str, value: Any) -> None:
    created = await api.call("POST", "/v1/webhooks", key, {**NEW, field: value})
    assert _refused(created, field) == f"{field}: Input should be a valid boolean"
    sound = await api.call("POST", "/v1/webhooks", key, NEW)
    updated = await api.call("PATCH", f"/v1/webhooks/{sound.body['id']}", key, {field: value})
    if value is None:  # an update's null leaves the field as it is
        assert updated.status == 200 and updated.body[field] is False, updated.body
    else:
        assert _refused(updated, field) == f"{field}: Input should be a valid boolean"


@pytest.mark.parametrize("value", [0, -1, 3601, 1e9, "600", True, None, 600.5, 10**30])
async def test_a_portal_lifetime_outside_60_3600_whole_seconds_is_a_422(api: RunningApi, key: str, value: Any) -> None:
    body = json.dumps({"lifetime_s": value}).encode()
    reply = await api.call("POST", "/v1/portal-sessions", key, data=body, headers={"Content-Type": "application/json"})
    _refused(reply, "lifetime_s")


@pytest.mark.parametrize("field", ["accent", "mode", "font"])
@pytest.mark.parametrize("value", ["a\u2028b", "#fff;", "}", "url(x)", "'\"", "a" * 10_000, "Ünïcödé", "\x00", 5])
async def test_a_portal_theme_value_that_is_not_plain_css_is_a_422(
    api: RunningApi, key: str, field: str, value: Any
) -> None:
    _refused(await api.call("POST", "/v1/portal-sessions", key, {"theme": {field: value}}), f"theme.{field}")


async def test_a_portal_token_that_is_huge_odd_or_only_looks_valid_is_refused(api: RunningApi, key: str) -> None:
    link = await api.call("POST", "/v1/portal-sessions", key, {})
    token = link.body["url"].split("#token=")[1]
    _refused(await api.call("POST", "/v1/portal-sessions/exchange", None, {"token": "x" * 10_240}), "token")
    for odd in ["a\x00b", token[:12], token[:12] + "A" * 43, token + "\x00", token + "\u2028"]:
        reply = await api.call("POST", "/v1/portal-sessions/exchange", None, {"token": odd})
        assert reply.status == 401 and reply.error["code"] == "portal_link_invalid", (odd, reply.body)
    opened = await api.call("POST", "/v1/portal-sessions/exchange", None, {"token": token})
    assert opened.status == 200, "the odd tokens did not use the link up"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("status", "0"),
        ("status", "99"),
        ("status", "600"),
        ("status", "1e99"),
        ("status", "-1"),
        ("status", "2xx"),
        ("status", "1" * 5000),
        ("since", "garbage"),
        ("since", "2026-01-01T00:00:00Z\u2028"),
        ("since", "10000-01-01T00:00:00Z"),
        ("until", "2026-01-01T00:00:00"),
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "9" * 400),
        ("cursor", "AAAA"),
        ("cursor", "!!"),
        ("cursor", "A" * 199),
        ("cursor", "eyJ4IjoxfQ"),
        ("event_id", "evt_\u2028"),
        ("event_id", "evt_a\x00"),
        ("event_id", "evt_'; drop table attempts; --"),
    ],
)
async def test_a_delivery_search_parameter_out_of_shape_is_a_422_naming_it(
    api: RunningApi, key: str, name: str, value: str
) -> None:
    _refused(await api.call("GET", "/v1/deliveries", key, params={name: value}), name)


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-05:00"]
)
async def test_the_first_and_last_representable_times_search_without_error(
    api: RunningApi, key: str, value: str
) -> None:
    for name in ("since", "until"):
        reply = await api.call("GET", "/v1/deliveries", key, params={name: value})
        assert reply.status == 200 and reply.body["data"] == [], reply.body


async def test_since_after_until_is_a_422_naming_until(api: RunningApi, key: str) -> None:
    params = {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    _refused(await api.call("GET", "/v1/deliveries", key, params=params), "until")


@pytest.mark.parametrize(
    "event_id", ["evt_a%E2%80%A8", "evt_a%00", "evt_'%20OR%201=1--", "evt_%22", "%ED%A0%80", "evt_%FF"]
)
async def test_an_event_id_out_of_shape_is_a_422_naming_it(api: RunningApi, key: str, event_id: str) -> None:
    _refused(await api.call("GET", f"/v1/events/{event_id}", key), "event_id")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"filter": "type == \\"\\ud800\\""}', "unexpected end of hex escape at line 1 column 30"),
        (b'{"filter": "type == \\"\\udfff\\""}', "lone leading surrogate in hex escape at line 1 column 28"),
        (
            b'{"filter": "a\x00"}',
            "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 14",
        ),
    ],
)
async def test_a_body_that_is_not_json_is_a_400_saying_why_and_where(
    api: RunningApi, key: str, body: bytes, reason: str
) -> None:
    sound = await api.call("POST", "/v1/webhooks", key, NEW)
    for path in (f"/v1/webhooks/{sound.body['id']}", f"/v1/webhooks/{sound.body['id']}/filter-preview"):
        method = "PATCH" if path.endswith(sound.body["id"]) else "POST"
        reply = await api.call(method, path, key, data=body, headers={"Content-Type": "application/json"})
        assert reply.status == 400 and reply.error["code"] == "invalid_json", reply.body
        assert (
            reply.error["message"].startswith("request body is not valid JSON: ") and reason in reply.error["message"]
        )


async def test_a_preview_whose_filter_is_slow_per_event_stops_at_its_time_bound(
    api: RunningApi, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = datetime.now(UTC).date()
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        conn.execute("SELECT hookfleet_create_log_day(%s)", (today,))
        for n in range(40):
            event = {"id": f"evt_slow{n:04d}", "type": "message.read", "created_at": f"{today}T10:00:00.000Z",
                     "account_id": "acct_a", "data": {"l": list(range(9_999))}}  # fmt: skip
            conn.execute(
                "INSERT INTO event_payloads (event_id, account_id, event, logged_on) VALUES (%s, %s, %s, %s)",
                (event["id"], "acct_a", Jsonb(event), today),
            )
    webhook = await api.call("POST", "/v1/webhooks", key, NEW)
    slow = "data.l.exists(x, " + " || ".join(f"x == -{n}" for n in range(1, 9)) + ")"  # 5-12 ms per event
    monkeypatch.setattr(filter_preview, "PREVIEW_TIME_BOUND_S", 0.05)
    reply = await api.call("POST", f"/v1/webhooks/{webhook.body['id']}/filter-preview", key, {"filter": slow})
    assert reply.status == 200, reply.body
    # all 40 events take 0.2-0.5 s: the page stops within them, not at the end of its chunk of 500
    assert reply.body["cut_short"] is True and reply.body["scanned"] < 40 and reply.body["next_cursor"], reply.body


@pytest.mark.parametrize("path", ["/v1/portal-sessions?=x&limit=1", "/v1/deliveries?=null", "/v1/deliveries?%00=1"])
async def test_a_query_parameter_with_an_empty_or_odd_name_is_a_422(api: RunningApi, key: str, path: str) -> None:
    reply = await api.call("GET", path, key)
    assert reply.status == 422 and reply.error["message"].startswith("unknown field"), reply.body
