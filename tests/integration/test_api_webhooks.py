"""The webhook management API on real PostgreSQL: authentication, create/list/show/update/delete, secrets
(generated, encrypted at rest, shown once, masked later, rotated), validation and the SSRF check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from api.accounts import create_account
from hookfleet.secretbox import SecretBox
from tests.support.api_client import SECRET_KEY, RunningApi, api_settings
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

NEW = {"name": "CRM Sync", "url": "https://localhost:9/hooks", "events": ["message.read", "contact.created"]}


async def create(api: RunningApi, key: str, **fields: object) -> dict[str, Any]:
    reply = await api.call("POST", "/v1/webhooks", key, {**NEW, **fields})
    assert reply.status == 201, reply.body
    created: dict[str, Any] = reply.body
    return created


# ------------------------------------------------------------------------------------------ authentication


async def test_every_v1_operation_needs_a_valid_api_key(api: RunningApi, key: str) -> None:
    for method, path in [
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks/wh_X"),
        ("POST", "/v1/deliveries/att_X/redeliver"),
        ("GET", "/v1/webhooks/wh_X/secret"),
        ("GET", "/v1/webhooks/wh_X/stats"),
        ("GET", "/v1/deliveries/att_X"),
    ]:
        missing = await api.call(method, path)
        assert missing.status == 401
        assert missing.error["code"] == "unauthorized"
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await api.call(method, path, key="hfk_" + "x" * 43)
        assert wrong.status == 401
    basic = await api.call("GET", "/v1/webhooks", headers={"Authorization": f"Basic {key}"})
    assert basic.status == 401
    assert (await api.call("GET", "/v1/webhooks", key)).status == 200


async def test_the_catalog_the_openapi_document_and_health_are_public(api: RunningApi) -> None:
    assert (await api.call("GET", "/v1/event-types")).status == 200
    doc = await api.call("GET", "/v1/openapi.json")
    assert doc.status == 200 and doc.body["openapi"] == "3.1.0"
    health = await api.call("GET", "/healthz")
    assert health.status == 200 and health.body == {"status": "ok", "reason": ""}


async def test_api_keys_are_stored_only_as_hashes(api: RunningApi, key: str) -> None:
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        stored = conn.execute("SELECT key_hash FROM api_keys WHERE account_id = 'acct_a'").fetchone()
    assert stored is not None and key.encode() not in bytes(stored[0]) and len(bytes(stored[0])) == 32


# ------------------------------------------------------------------------------------------ create, read


async def test_create_returns_the_generated_secret_once_and_reads_mask_it(api: RunningApi, key: str) -> None:
    reply = await api.call("POST", "/v1/webhooks", key, NEW)
    assert reply.status == 201
    created = reply.body
    assert created["id"].startswith("wh_") and reply.headers["Location"] == f"/v1/webhooks/{created['id']}"
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["events"] == ["contact.created", "message.read"]
    assert created["active"] is True and created["status"] == "healthy"
    assert created["previous_secret_expires_at"] is None

    shown = await api.call("GET", f"/v1/webhooks/{created['id']}", key)
    assert shown.status == 200
    assert shown.body["secret"] == "whsec_****" + created["secret"][-4:]
    assert {k: v for k, v in shown.body.items() if k != "secret"} == {k: v for k, v in created.items() if k != "secret"}
    listed = await api.call("GET", "/v1/webhooks", key)
    assert [w["id"] for w in listed.body["data"]] == [created["id"]]
    assert created["secret"] not in str(listed.body)


async def test_secrets_are_encrypted_at_rest_bound_to_the_webhook(api: RunningApi, key: str) -> None:
    created = await create(api, key)
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        row = conn.execute("SELECT secret_ciphertext FROM webhooks WHERE id = %s", (created["id"],)).fetchone()
    assert row is not None
    sealed = bytes(row[0])
    assert created["secret"].encode() not in sealed
    assert SecretBox.from_b64(SECRET_KEY).open(sealed, created["id"]) == created["secret"]


async def test_client_chosen_secrets_are_refused(api: RunningApi, key: str) -> None:
    reply = await api.call("POST", "/v1/webhooks", key, {**NEW, "secret": "whsec_mine"})
    assert reply.status == 422
    assert reply.error == {"code": "invalid_field", "message": "unknown field 'secret'", "field": "secret"}


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({**NEW, "url": "http://crm.example.com/hook"}, "url", "must be https"),
        ({**NEW, "url": "https://user:pw@localhost/hook"}, "url", "credentials"),
        ({**NEW, "url": "https://@localhost/hook"}, "url", "credentials"),
        ({**NEW, "url": "https://:@localhost/hook"}, "url", "credentials"),
        ({**NEW, "url": "crm.example.com"}, "url", "url"),
        ({**NEW, "events": []}, "events", "events"),
        ({**NEW, "events": ["message.bounced"]}, "events.0", "message.incoming"),
        ({**NEW, "name": ""}, "name", "name"),
        ({**NEW, "name": "x" * 101}, "name", "100"),
        ({**NEW, "name": "bad\x00name"}, "name", "name"),
        ({**NEW, "active": "yes"}, "active", "boolean"),
        ({k: v for k, v in NEW.items() if k != "url"}, "url", "url is required"),
    ],
)
async def test_create_rejects_invalid_fields_naming_the_field(
    api: RunningApi, key: str, body: dict[str, Any], field: str, says: str
) -> None:
    reply = await api.call("POST", "/v1/webhooks", key, body)
    assert reply.status == 422, reply.body
    assert reply.error["code"] == "invalid_field"
    assert reply.error["field"] == field
    assert says in reply.error["message"]


async def test_malformed_bodies_are_client_errors(api: RunningApi, key: str) -> None:
    not_json = await api.call("POST", "/v1/webhooks", key, data=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status == 400 and not_json.error["code"] == "invalid_json"
    array = await api.call("POST", "/v1/webhooks", key, json_body=[1, 2])
    assert array.status == 422 and "JSON object" in array.error["message"]
    text = await api.call("POST", "/v1/webhooks", key, data=b'{"a":1}', headers={"Content-Type": "text/plain"})
    assert text.status == 415 and text.error["code"] == "unsupported_media_type"
    empty = await api.call("POST", "/v1/webhooks", key)
    assert empty.status == 422
    huge = await api.call(
        "POST",
        "/v1/webhooks",
        key,
        data=b'{"name":"' + b"x" * 100_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert huge.status == 413 and huge.error["code"] == "payload_too_large"


async def test_wrong_methods_and_unknown_paths_answer_in_the_error_shape(api: RunningApi, key: str) -> None:
    put = await api.call("PUT", "/v1/webhooks", key, NEW)
    assert put.status == 405 and put.error["code"] == "method_not_allowed"
    assert "POST" in put.headers["Allow"]
    missing = await api.call("GET", "/v1/nothing-here", key)
    assert missing.status == 404 and missing.error["code"] == "not_found"


@pytest.mark.parametrize(
    "url",
    ["https://10.1.2.3/hook", "https://169.254.169.254/latest/meta-data", "https://[::1]/hook", "https://0.0.0.0/"],
)
async def test_urls_resolving_to_private_addresses_are_refused(api: RunningApi, key: str, url: str) -> None:
    reply = await api.call("POST", "/v1/webhooks", key, {**NEW, "url": url})
    assert reply.status == 422
    assert reply.error["code"] == "url_blocked" and reply.error["field"] == "url"


async def test_loopback_host_names_are_refused_unless_the_operator_allows_them(
    database_url: str, kafka_bootstrap: str, ca_bundle: str
) -> None:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle, allow_networks=[])) as strict:
        _, key = strict.account("Strict")
        reply = await strict.call("POST", "/v1/webhooks", key, {**NEW, "url": "https://localhost/hook"})
        assert reply.status == 422 and reply.error["code"] == "url_blocked"


async def test_hosts_that_do_not_resolve_are_refused(api: RunningApi, key: str) -> None:
    reply = await api.call("POST", "/v1/webhooks", key, {**NEW, "url": "https://no-such-host.invalid/hook"})
    assert reply.status == 422
    assert reply.error["code"] == "url_unresolvable" and reply.error["field"] == "url"


# ------------------------------------------------------------------------------------------ update, delete


async def test_update_changes_only_the_fields_sent(api: RunningApi, key: str) -> None:
    created = await create(api, key)
    path = f"/v1/webhooks/{created['id']}"
    renamed = await api.call("PATCH", path, key, {"name": "CRM Sync v2", "events": ["message.failed"]})
    assert renamed.status == 200
    assert renamed.body["name"] == "CRM Sync v2" and renamed.body["events"] == ["message.failed"]
    assert renamed.body["url"] == created["url"] and renamed.body["active"] is True
    assert renamed.body["updated_at"] > created["updated_at"]

    off = await api.call("PATCH", path, key, {"active": False})
    assert off.body["active"] is False and off.body["name"] == "CRM Sync v2"
    on = await api.call("PATCH", path, key, {"active": True, "name": None})
    assert on.body["active"] is True and on.body["name"] == "CRM Sync v2"
    nothing = await api.call("PATCH", path, key, {})
    assert nothing.status == 200 and nothing.body == on.body

    moved = await api.call("PATCH", path, key, {"url": "https://127.0.0.1:9/new"})
    assert moved.status == 200 and moved.body["url"] == "https://127.0.0.1:9/new"
    assert (await api.call("GET", path, key)).body["secret"] == "whsec_****" + created["secret"][-4:]


async def test_update_validates_like_create(api: RunningApi, key: str) -> None:
    created = await create(api, key)
    path = f"/v1/webhooks/{created['id']}"
    for body, field in [
        ({"url": "http://x.example/"}, "url"),
        ({"url": "https://10.0.0.7/"}, "url"),
        ({"events": []}, "events"),
        ({"status": "healthy"}, "status"),
        ({"active": 1}, "active"),
    ]:
        reply = await api.call("PATCH", path, key, body)
        assert reply.status == 422, body
        assert reply.error["field"] == field
    assert (await api.call("GET", path, key)).body["url"] == created["url"]


async def test_unknown_webhooks_are_404_everywhere(api: RunningApi, key: str) -> None:
    for method, path, body in [
        ("GET", "/v1/webhooks/wh_01NOSUCH", None),
        ("PATCH", "/v1/webhooks/wh_01NOSUCH", {"active": False}),
        ("DELETE", "/v1/webhooks/wh_01NOSUCH", None),
        ("POST", "/v1/webhooks/wh_01NOSUCH/rotate-secret", None),
        ("POST", "/v1/webhooks/wh_01NOSUCH/test", {}),
        ("GET", "/v1/webhooks/wh_01NOSUCH/deliveries", None),
        ("POST", "/v1/webhooks/wh_01NOSUCH/recover", {}),
        ("POST", "/v1/deliveries/att_01NOSUCH/redeliver", None),
        ("GET", "/v1/webhooks/wh_01NOSUCH/secret", None),
        ("GET", "/v1/webhooks/wh_01NOSUCH/stats", None),
        ("GET", "/v1/deliveries/att_01NOSUCH", None),
        ("GET", "/v1/deliveries/att_%00", None),
        ("GET", "/v1/webhooks/'%20OR%201=1--", None),
        ("GET", "/v1/webhooks/wh_%00x", None),
        ("PATCH", "/v1/webhooks/wh_%00x", {"active": False}),
        ("GET", "/v1/webhooks/wh_%00x/deliveries", None),
        ("POST", "/v1/deliveries/att_%00/redeliver", None),
        ("GET", "/v1/webhooks/" + "w" * 5000, None),
    ]:
        reply = await api.call(method, path, key, body)
        assert reply.status == 404, (method, path, reply.body)
        assert reply.error["code"] == "not_found"


async def test_delete_removes_the_webhook(api: RunningApi, key: str) -> None:
    created = await create(api, key)
    path = f"/v1/webhooks/{created['id']}"
    deleted = await api.call("DELETE", path, key)
    assert deleted.status == 204 and deleted.body == b""
    assert (await api.call("GET", path, key)).status == 404
    assert (await api.call("DELETE", path, key)).status == 404
    assert (await api.call("GET", "/v1/webhooks", key)).body == {"data": []}


# ------------------------------------------------------------------------------------------ rotation


async def test_rotate_shows_a_new_secret_once_and_keeps_the_old_one_for_the_overlap(api: RunningApi, key: str) -> None:
    created = await create(api, key)
    before = datetime.now(UTC)
    rotated = await api.call("POST", f"/v1/webhooks/{created['id']}/rotate-secret", key)
    assert rotated.status == 200
    assert rotated.body["secret"].startswith("whsec_") and rotated.body["secret"] != created["secret"]
    ends = datetime.fromisoformat(rotated.body["previous_secret_expires_at"])
    assert before + timedelta(seconds=3599) <= ends <= datetime.now(UTC) + timedelta(seconds=3601)
    shown = await api.call("GET", f"/v1/webhooks/{created['id']}", key)
    assert shown.body["secret"] == "whsec_****" + rotated.body["secret"][-4:]
    assert shown.body["previous_secret_expires_at"] == rotated.body["previous_secret_expires_at"]

    box = SecretBox.from_b64(SECRET_KEY)
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        row = conn.execute(
            "SELECT secret_ciphertext, previous_secret_ciphertext FROM webhooks WHERE id = %s", (created["id"],)
        ).fetchone()
    assert row is not None
    assert box.open(bytes(row[0]), created["id"]) == rotated.body["secret"]
    assert box.open(bytes(row[1]), created["id"]) == created["secret"]


async def test_rotate_without_overlap_drops_the_old_secret_at_once(
    database_url: str, kafka_bootstrap: str, ca_bundle: str
) -> None:
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, secret_rotation_overlap_s=0)
    async with RunningApi(settings) as api:
        _, key = api.account("No overlap")
        created = await create(api, key)
        rotated = await api.call("POST", f"/v1/webhooks/{created['id']}/rotate-secret", key)
        assert rotated.status == 200 and rotated.body["previous_secret_expires_at"] is None
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT previous_secret_ciphertext FROM webhooks WHERE id = %s", (created["id"],)
            ).fetchone()
        assert row == (None,)


# ------------------------------------------------------------------------------------------ outages


async def test_a_database_outage_is_a_503_in_the_error_shape(
    database_url: str, kafka_bootstrap: str, ca_bundle: str
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    proxy = TcpProxy(str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432))))
    proxied = psycopg.conninfo.make_conninfo(database_url, host="127.0.0.1", port=str(proxy.port))
    _, key = create_account(database_url, "Acme", "acct_a")  # directly: sync I/O through the proxy would block it
    async with RunningApi(api_settings(proxied, kafka_bootstrap, ca_bundle)) as api:
        assert (await api.call("GET", "/v1/webhooks", key)).status == 200
        proxy.cut()
        down = await api.call("GET", "/v1/webhooks", key)
        assert down.status == 503 and down.error["code"] == "unavailable"
        health = await api.call("GET", "/healthz")
        assert health.status == 503 and health.body["status"] == "unavailable"
    proxy.close()


# ------------------------------------------------------------------------------------------ flow settings


async def test_rate_limit_and_ordering_are_set_changed_and_removed(api: RunningApi, key: str) -> None:
    created = await create(api, key, rate_limit_per_s=50, ordering="fifo")
    assert (created["rate_limit_per_s"], created["ordering"]) == (50, "fifo")
    plain = await create(api, key)
    assert (plain["rate_limit_per_s"], plain["ordering"]) == (None, "unordered")
    path = f"/v1/webhooks/{created['id']}"
    changed = await api.call("PATCH", path, key, {"rate_limit_per_s": 200, "ordering": "unordered"})
    assert changed.status == 200 and (changed.body["rate_limit_per_s"], changed.body["ordering"]) == (200, "unordered")
    removed = await api.call("PATCH", path, key, {"rate_limit_per_s": 0})
    assert removed.status == 200 and removed.body["rate_limit_per_s"] is None
    assert (await api.call("GET", path, key)).body["rate_limit_per_s"] is None


async def test_redrive_on_recovery_is_off_by_default_set_on_create_changed_and_shown(api: RunningApi, key: str) -> None:
    plain = await create(api, key)
    assert plain["redrive_on_recovery"] is False
    opted = await create(api, key, redrive_on_recovery=True)
    path = f"/v1/webhooks/{opted['id']}"
    assert opted["redrive_on_recovery"] is True and (await api.call("GET", path, key)).body["redrive_on_recovery"]
    changed = await api.call("PATCH", path, key, {"redrive_on_recovery": False})
    assert changed.status == 200 and changed.body["redrive_on_recovery"] is False
    [listed] = [w for w in (await api.call("GET", "/v1/webhooks", key)).body["data"] if w["id"] == opted["id"]]
    assert listed["redrive_on_recovery"] is False


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_limit_per_s", 0),
        ("rate_limit_per_s", 10_001),
        ("rate_limit_per_s", "fast"),
        ("ordering", "lifo"),
        ("redrive_on_recovery", "yes"),
    ],
)
async def test_bad_flow_settings_are_422_naming_the_field(api: RunningApi, key: str, field: str, value: object) -> None:
    reply = await api.call("POST", "/v1/webhooks", key, {**NEW, field: value})
    assert reply.status == 422, reply.body
    assert reply.error["field"] == field
