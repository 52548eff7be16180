"""Portal sessions through the real API and PostgreSQL: a product's backend asks for a one-time link with its
API key, the link's token opens one session of that account, once; sessions expire, are revoked, are
listed with who asked for them, can be read-only, and never manage keys or sessions. The token and the
session credential appear in no log line and no error body, and only their hashes are stored."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from api.accounts import create_api_key
from hookfleet.retention import prune
from tests.support.api_client import RunningApi, api_settings

pytestmark = pytest.mark.integration

NEW = {"name": "CRM Sync", "url": "https://localhost:9/hooks", "events": ["message.read"]}


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str) -> AsyncIterator[RunningApi]:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle)) as running:
        yield running


def _token(url: str) -> str:
    match = re.fullmatch(r"http://127\.0\.0\.1:\d+/settings/webhooks(\?[^#]*)?#token=(hfp_[A-Za-z0-9_-]{43})", url)
    assert match, url
    return match.group(2)


async def _link(api: RunningApi, key: str, **body: Any) -> tuple[dict[str, Any], str]:
    reply = await api.call("POST", "/v1/portal-sessions", key, json_body=body or None)
    assert reply.status == 201, reply.body
    return reply.body, _token(reply.body["url"])


async def _open(api: RunningApi, token: str) -> str:
    reply = await api.call("POST", "/v1/portal-sessions/exchange", json_body={"token": token})
    assert reply.status == 200, reply.body
    session: str = reply.body["session"]
    assert session.startswith("hfs_")
    return session


def _sql(api: RunningApi, statement: str, *params: object) -> None:
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        conn.execute(statement, params)


async def test_a_link_opens_one_session_of_its_account_once(api: RunningApi) -> None:
    _, key = api.account("Acme", "acct_a")
    made = await api.call("POST", "/v1/webhooks", key, json_body=NEW)
    link, token = await _link(api, key)
    assert link["read_only"] is False and link["used_at"] is None
    assert link["url"].startswith(api.base_url + "/settings/webhooks#token=")  # built from the request's Host

    session = await _open(api, token)
    listed = await api.call("GET", "/v1/webhooks", session)
    assert listed.status == 200
    assert [w["id"] for w in listed.body["data"]] == [made.body["id"]]
    changed = await api.call("PATCH", f"/v1/webhooks/{made.body['id']}", session, json_body={"active": False})
    assert changed.status == 200 and changed.body["active"] is False

    # The same link again: refused, and the session it opened ends (the link was seen twice).
    again = await api.call("POST", "/v1/portal-sessions/exchange", json_body={"token": token})
    assert again.status == 401 and again.error["code"] == "portal_link_used"
    ended = await api.call("GET", "/v1/webhooks", session)
    assert ended.status == 401 and ended.error["code"] == "session_ended"

    unknown = await api.call("POST", "/v1/portal-sessions/exchange", json_body={"token": "hfp_" + "x" * 43})
    assert unknown.status == 401 and unknown.error["code"] == "portal_link_invalid"


async def test_a_session_reads_its_own_account_only(api: RunningApi) -> None:
    _, key_a = api.account("Acme", "acct_a")
    _, key_b = api.account("Globex", "acct_b")
    mine = await api.call("POST", "/v1/webhooks", key_a, json_body=NEW)
    theirs = await api.call("POST", "/v1/webhooks", key_b, json_body={**NEW, "name": "Globex hook"})
    _, token = await _link(api, key_a)
    session = await _open(api, token)

    listed = await api.call("GET", "/v1/webhooks", session)
    assert [w["id"] for w in listed.body["data"]] == [mine.body["id"]]
    for method, path in (
        ("GET", f"/v1/webhooks/{theirs.body['id']}"),
        ("GET", f"/v1/webhooks/{theirs.body['id']}/secret"),
        ("GET", f"/v1/webhooks/{theirs.body['id']}/deliveries"),
        ("PATCH", f"/v1/webhooks/{theirs.body['id']}"),
        ("DELETE", f"/v1/webhooks/{theirs.body['id']}"),
    ):
        reply = await api.call(method, path, session, json_body={"active": False} if method == "PATCH" else None)
        assert reply.status == 404, (method, path, reply.body)
    account = await api.call("GET", "/v1/account", session)
    assert account.body["name"] == "Acme"
    still = await api.call("GET", f"/v1/webhooks/{theirs.body['id']}", key_b)
    assert still.status == 200 and still.body["active"] is True


async def test_links_and_sessions_expire(api: RunningApi) -> None:
    _, key = api.account("Acme", "acct_a")
    late, late_token = await _link(api, key, lifetime_s=3600)
    # A link opens within 5 minutes, whatever the session's lifetime; the session lasts lifetime_s.
    window = _seconds(late["link_expires_at"]) - _seconds(late["created_at"])
    assert abs(window - 300) < 2 and abs(_seconds(late["expires_at"]) - _seconds(late["created_at"]) - 3600) < 2
    short, _ = await _link(api, key, lifetime_s=60)
    assert abs(_seconds(short["link_expires_at"]) - _seconds(short["expires_at"])) < 1
    whole, _ = await _link(api, key, lifetime_s=900.0)  # JSON Schema's integer
    assert abs(_seconds(whole["expires_at"]) - _seconds(whole["created_at"]) - 900) < 2
    default, _ = await _link(api, key)
    assert abs(_seconds(default["expires_at"]) - _seconds(default["created_at"]) - 600) < 2

    # Time passes (the database's clock decides): the link's five minutes are over.
    _sql(api, "UPDATE portal_sessions SET link_expires_at = now() - interval '1 second' WHERE id = %s", late["id"])
    expired = await api.call("POST", "/v1/portal-sessions/exchange", json_body={"token": late_token})
    assert expired.status == 401 and expired.error["code"] == "portal_link_expired"
    assert "within 5 minutes" in expired.error["message"]

    opened, token = await _link(api, key)
    session = await _open(api, token)
    assert (await api.call("GET", "/v1/webhooks", session)).status == 200
    _sql(
        api,
        "UPDATE portal_sessions SET link_expires_at = now() - interval '2 seconds',"
        " expires_at = now() - interval '1 second' WHERE id = %s",
        opened["id"],
    )
    gone = await api.call("GET", "/v1/webhooks", session)
    assert gone.status == 401 and gone.error["code"] == "session_ended"


async def test_revoked_sessions_and_links_are_refused_and_other_accounts_cannot_revoke(api: RunningApi) -> None:
    _, key_a = api.account("Acme", "acct_a")
    _, key_b = api.account("Globex", "acct_b")
    opened, token = await _link(api, key_a)
    session = await _open(api, token)
    unopened, unopened_token = await _link(api, key_a)

    other = await api.call("DELETE", f"/v1/portal-sessions/{opened['id']}", key_b)
    assert other.status == 404
    assert (await api.call("GET", "/v1/webhooks", session)).status == 200

    assert (await api.call("DELETE", f"/v1/portal-sessions/{opened['id']}", key_a)).status == 204
    assert (await api.call("DELETE", f"/v1/portal-sessions/{opened['id']}", key_a)).status == 204  # idempotent
    refused = await api.call("GET", "/v1/webhooks", session)
    assert refused.status == 401 and refused.error["code"] == "session_ended"

    assert (await api.call("DELETE", f"/v1/portal-sessions/{unopened['id']}", key_a)).status == 204
    link = await api.call("POST", "/v1/portal-sessions/exchange", json_body={"token": unopened_token})
    assert link.status == 401 and link.error["code"] == "portal_link_revoked"
    assert (await api.call("DELETE", "/v1/portal-sessions/ps_nope", key_a)).status == 404


async def test_revoking_the_key_that_asked_ends_its_sessions(api: RunningApi) -> None:
    _, key = api.account("Acme", "acct_a")
    backend_id, backend_key = create_api_key(api.settings.database_url.get_secret_value(), "acct_a", "backend")
    _, token = await _link(api, backend_key)
    session = await _open(api, token)
    _, unopened_token = await _link(api, backend_key)
    assert (await api.call("GET", "/v1/webhooks", session)).status == 200

    assert (await api.call("DELETE", f"/v1/api-keys/{backend_id}", key)).status == 204
    ended = await api.call("GET", "/v1/webhooks", session)
    assert ended.status == 401 and ended.error["code"] == "session_ended"
    link = await api.call("POST", "/v1/portal-sessions/exchange", json_body={"token": unopened_token})
    assert link.status == 401 and link.error["code"] == "portal_link_revoked"


async def test_a_read_only_session_reads_and_every_write_is_403_naming_why(api: RunningApi) -> None:
    _, key = api.account("Acme", "acct_a")
    made = await api.call("POST", "/v1/webhooks", key, json_body=NEW)
    webhook = f"/v1/webhooks/{made.body['id']}"
    link, token = await _link(api, key, read_only=True)
    assert link["read_only"] is True
    session = await _open(api, token)
    before = await api.call("GET", webhook, key)

    for path in ("/v1/webhooks", webhook, f"{webhook}/deliveries", f"{webhook}/stats", "/v1/account"):
        assert (await api.call("GET", path, session)).status == 200, path
    writes: list[tuple[str, str, Any]] = [
        ("POST", "/v1/webhooks", NEW),
        ("PATCH", webhook, {"active": False}),
        ("DELETE", webhook, None),
        ("POST", f"{webhook}/rotate-secret", None),
        ("POST", f"{webhook}/test", None),
        ("POST", f"{webhook}/recover", None),
        ("PATCH", "/v1/account", {"notification_email": "ops@example.com"}),
    ]
    for method, path, body in writes:
        reply = await api.call(method, path, session, json_body=body)
        assert reply.status == 403, (method, path, reply.body)
        assert reply.error["code"] == "read_only_session"
        assert reply.error["message"].startswith("this portal session is read-only")
    after = await api.call("GET", webhook, key)
    assert after.body == before.body


async def test_a_portal_session_cannot_make_api_keys_or_portal_sessions(api: RunningApi) -> None:
    _, key = api.account("Acme", "acct_a")
    _, token = await _link(api, key)
    session = await _open(api, token)
    for method, path in (
        ("POST", "/v1/api-keys"),
        ("GET", "/v1/api-keys"),
        ("POST", "/v1/portal-sessions"),
        ("GET", "/v1/portal-sessions"),
        ("DELETE", "/v1/portal-sessions/ps_x"),
    ):
        reply = await api.call(method, path, session)
        assert reply.status == 403, (method, path, reply.body)
        assert reply.error["code"] == "portal_session_not_allowed"
    keys = await api.call("GET", "/v1/api-keys", key)
    assert len(keys.body["data"]) == 1


async def test_the_audit_list_names_who_asked_and_every_time(api: RunningApi) -> None:
    _, key = api.account("Acme", "acct_a")
    url = api.settings.database_url.get_secret_value()
    backend_id, backend_key = create_api_key(url, "acct_a", "backend")
    _, _ = api.account("Globex", "acct_b")
    first, first_token = await _link(api, backend_key, read_only=True)
    await _open(api, first_token)
    second, _ = await _link(api, key, lifetime_s=120)
    assert (await api.call("DELETE", f"/v1/portal-sessions/{second['id']}", key)).status == 204

    listed = await api.call("GET", "/v1/portal-sessions", key)
    assert listed.status == 200
    rows = listed.body["data"]
    assert [r["id"] for r in rows] == [second["id"], first["id"]]  # newest first
    newest, oldest = rows
    assert oldest["created_by_key_id"] == backend_id and oldest["created_by_key_label"] == "backend"
    assert oldest["read_only"] is True and oldest["used_at"] is not None and oldest["revoked_at"] is None
    assert newest["created_by_key_label"] == "default" and newest["used_at"] is None
    assert newest["revoked_at"] is not None
    assert set(newest) == {
        "id",
        "created_by_key_id",
        "created_by_key_label",
        "read_only",
        "created_at",
        "link_expires_at",
        "expires_at",
        "used_at",
        "revoked_at",
    }
    _, key_b = api.account("Initech", "acct_c")
    assert (await api.call("GET", "/v1/portal-sessions", key_b)).body["data"] == []
    assert (await api.call("GET", "/v1/portal-sessions", key, params={"limit": "1"})).body["data"][0]["id"] == second[
        "id"
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lifetime_s": 59}, "lifetime_s"),
        ({"lifetime_s": 3601}, "lifetime_s"),
        ({"lifetime_s": 0}, "lifetime_s"),
        ({"lifetime_s": "600"}, "lifetime_s"),
        ({"lifetime_s": 600.5}, "lifetime_s"),
        ({"lifetime_s": True}, "lifetime_s"),
        ({"read_only": "yes"}, "read_only"),
        ({"theme": {"accent": "red"}}, "theme.accent"),
        ({"theme": {"accent": "#12345g"}}, "theme.accent"),
        ({"theme": {"mode": "dim"}}, "theme.mode"),
        ({"theme": {"font": "Inter; color: red"}}, "theme.font"),
        ({"theme": {"font": 'x"}body{'}}, "theme.font"),
        ({"scope": "all"}, "scope"),
    ],
)
async def test_a_bad_request_is_422_naming_the_field(api: RunningApi, body: dict[str, Any], field: str) -> None:
    _, key = api.account("Acme", "acct_a")
    reply = await api.call("POST", "/v1/portal-sessions", key, json_body=body)
    assert reply.status == 422, reply.body
    assert reply.error["field"] == field


async def test_the_theme_rides_in_the_query_and_the_public_url_setting_wins(
    database_url: str, kafka_bootstrap: str, ca_bundle: str
) -> None:
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, public_url="https://hooks.example.com")
    async with RunningApi(settings) as api:
        _, key = api.account("Acme", "acct_a")
        body = {"theme": {"accent": "#7c3aed", "mode": "dark", "font": "Inter, system-ui , sans-serif"}}
        reply = await api.call("POST", "/v1/portal-sessions", key, json_body=body)
    assert reply.status == 201, reply.body
    assert re.fullmatch(
        r"https://hooks\.example\.com/settings/webhooks\?accent=%237c3aed&mode=dark&font=Inter%2C\+system-ui%2C\+sans-serif"
        r"#token=hfp_[A-Za-z0-9_-]{43}",
        reply.body["url"],
    ), reply.body["url"]


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


async def test_tokens_are_in_no_log_line_no_error_body_and_only_hashed_in_the_database(
    api: RunningApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, aiohttp's access log included
    _, key = api.account("Acme", "acct_a")
    link, token = await _link(api, key, read_only=True)
    session = await _open(api, token)
    replies = [
        await api.call("GET", "/v1/webhooks", session),
        await api.call("POST", "/v1/webhooks", session, json_body=NEW),  # read-only: 403
        await api.call("GET", "/v1/api-keys", session),  # 403
        await api.call("POST", "/v1/portal-sessions/exchange", json_body={"token": token}),  # reused: 401
        await api.call("GET", "/v1/webhooks", session),  # ended: 401
        await api.call("POST", "/v1/portal-sessions/exchange", json_body={"token": token, "extra": 1}),  # 422
        await api.call(
            "POST", "/v1/portal-sessions/exchange", data=token.encode(), headers={"Content-Type": "text/plain"}
        ),
        await api.call(
            "POST",
            "/v1/portal-sessions/exchange",
            data=b'{"token": "' + token.encode() + b'"',
            headers={"Content-Type": "application/json"},
        ),  # 400
        await api.call("POST", "/v1/portal-sessions/exchange", json_body={"token": 5}),
    ]
    statuses = [r.status for r in replies]
    assert statuses == [200, 403, 403, 401, 401, 422, 415, 400, 422], statuses
    secrets = (token, token.removeprefix("hfp_"), session, session.removeprefix("hfs_"))
    for reply in replies[1:]:
        assert not any(s in str(reply.body) for s in secrets), reply.body
    logged = [record.getMessage() for record in caplog.records]
    assert any("event=portal_session_created" in line for line in logged), logged
    assert any("event=portal_link_refused reason=used" in line for line in logged), logged
    leaked = [line for line in logged if any(s in line for s in secrets)]
    assert not leaked

    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        row = conn.execute(
            "SELECT token_hash, session_hash, row_to_json(p)::text FROM portal_sessions p WHERE id = %s", (link["id"],)
        ).fetchone()
    assert row is not None
    assert bytes(row[0]) == hashlib.sha256(token.encode()).digest()
    assert bytes(row[1]) == hashlib.sha256(session.encode()).digest()
    assert not any(s in row[2] for s in secrets)


async def test_of_concurrent_exchanges_of_one_link_exactly_one_opens_and_the_link_counts_as_seen_twice(
    api: RunningApi,
) -> None:
    _, key = api.account("Acme", "acct_a")
    _, token = await _link(api, key)
    replies = await asyncio.gather(
        *(api.call("POST", "/v1/portal-sessions/exchange", json_body={"token": token}) for _ in range(6))
    )
    opened = [r for r in replies if r.status == 200]
    assert len(opened) == 1, [r.status for r in replies]
    assert sorted(r.error["code"] for r in replies if r.status != 200) == ["portal_link_used"] * 5
    ended = await api.call("GET", "/v1/webhooks", opened[0].body["session"])
    assert ended.status == 401 and ended.error["code"] == "session_ended"


async def test_the_page_is_framed_only_by_the_origins_set_and_refuses_a_bad_theme(
    database_url: str, kafka_bootstrap: str, ca_bundle: str
) -> None:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle)) as closed:
        page = await closed.call("GET", "/settings/webhooks")
    assert page.status == 200 and "frame-ancestors 'none';" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"

    allowed = "https://crm.example.com http://localhost:8000"
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, portal_frame_ancestors=allowed)
    async with RunningApi(settings) as api:
        themed = await api.call("GET", "/settings/webhooks", params={"accent": "#7c3aed", "mode": "dark"})
        css = await api.call("GET", "/settings/theme.css", params={"accent": "#7c3aed", "mode": "dark"})
        bad = await api.call("GET", "/settings/webhooks", params={"accent": "red;}body{display:none"})
        bad_css = await api.call("GET", "/settings/theme.css", params={"font": "x;}"})
    assert f"frame-ancestors {allowed};" in themed.headers["Content-Security-Policy"]
    assert b'<link rel="stylesheet" href="/settings/theme.css?accent=%237c3aed&amp;mode=dark">' in themed.body
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    assert b"--accent: #7c3aed;" in css.body and b"color-scheme: dark;" in css.body
    assert bad.status == 400 and bad.body.startswith(b"theme parameter accent='red;}body{display:none' is refused")
    assert bad_css.status == 400 and b"theme parameter font=" in bad_css.body


async def test_the_audit_list_is_kept_as_long_as_the_log(api: RunningApi) -> None:
    _, key = api.account("Acme", "acct_a")
    old, _ = await _link(api, key)
    recent, _ = await _link(api, key)
    url = api.settings.database_url.get_secret_value()
    _sql(
        api,
        "UPDATE portal_sessions SET created_at = now() - interval '31 days', link_expires_at = now() - interval"
        " '31 days', expires_at = now() - interval '31 days' + interval '10 minutes' WHERE id = %s",
        old["id"],
    )
    prune(url, retention_days=30)
    listed = await api.call("GET", "/v1/portal-sessions", key)
    assert [r["id"] for r in listed.body["data"]] == [recent["id"]]
