"""The API's defences on real PostgreSQL: the SSRF matrix at registration and at delivery (Test),
response headers, URL normalisation, out-of-range query values, and undecryptable secrets as a 503."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from tests.support.api_client import RunningApi, api_settings
from tests.support.fleet import seed_webhook
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration

NEW = {"name": "CRM Sync", "url": "https://localhost:9/hooks", "events": ["message.read"]}


@pytest.fixture
async def strict_api(database_url: str, kafka_bootstrap: str, ca_bundle: str) -> AsyncIterator[RunningApi]:
    """No allow-listed networks: the guard as in production."""
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, allow_networks=[])
    async with RunningApi(settings) as running:
        yield running


# ------------------------------------------------------------------------------------------ SSRF


BLOCKED_URLS = [
    "https://127.1/",
    "https://127.0.1/",
    "https://2130706433/",
    "https://0177.1/",
    "https://0x7f.1/",
    "https://0x7f000001/",
    "https://127.0.0.1./",
    "https://10.0.0.1./x",
    "https://[::7f00:1]/",  # IPv4-compatible
    "https://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "https://[::ffff:0:7f00:1]/",  # SIIT
    "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    "https://[64:ff9b:1::a9fe:a9fe]/",  # local-use NAT64
    "https://[2002:7f00:1::]/",  # 6to4
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    "https://192.88.99.1/",  # 6to4 relay anycast
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/",
    "https://0.0.0.0/",
    "https://localhost/",  # resolves to loopback only
]


@pytest.mark.parametrize("url", BLOCKED_URLS)
async def test_registration_refuses_every_non_public_destination(strict_api: RunningApi, url: str) -> None:
    key = strict_api.account("Acme", "acct_s")[1]
    reply = await strict_api.call("POST", "/v1/webhooks", key, {**NEW, "url": url})
    assert reply.status == 422, reply.body
    assert reply.error["code"] == "url_blocked" and reply.error["field"] == "url"


async def test_nonstandard_literals_are_refused_even_inside_the_allow_list(api: RunningApi, key: str) -> None:
    for url in ("https://127.1:9/", "https://2130706433:9/", "https://127.0.0.1.:9/"):
        reply = await api.call("POST", "/v1/webhooks", key, {**NEW, "url": url})
        assert reply.status == 422 and "non-standard form" in reply.error["message"], (url, reply.body)
    assert (await api.call("POST", "/v1/webhooks", key, {**NEW, "url": "https://127.0.0.1:9/"})).status == 201


async def test_a_stored_nonstandard_literal_is_blocked_at_delivery(
    api: RunningApi, key: str, receiver: HttpsReceiver
) -> None:
    # Given a row that predates the registration check, pointing at the receiver through 127.1
    database_url = api.settings.database_url.get_secret_value()
    secret_key = api.settings.secret_key.get_secret_value() if api.settings.secret_key else ""
    webhook_id, _ = seed_webhook(
        database_url, "acct_a", f"https://127.1:{receiver.port}/hook", ["message.read"], secret_key=secret_key
    )
    # When it is tested, the delivery check refuses it before connecting
    reply = await api.call("POST", f"/v1/webhooks/{webhook_id}/test", key)
    assert reply.status == 200, reply.body
    assert reply.body["outcome"] == "blocked" and not reply.body["ok"], reply.body
    assert receiver.received == []


# ------------------------------------------------------------------------------------------ headers, input


async def test_every_v1_response_is_no_store_nosniff_without_a_version_banner(api: RunningApi, key: str) -> None:
    created = await api.call("POST", "/v1/webhooks", key, NEW)
    assert created.status == 201
    replies = [
        created,
        await api.call("GET", f"/v1/webhooks/{created.body['id']}", key),
        await api.call("POST", f"/v1/webhooks/{created.body['id']}/rotate-secret", key),
        await api.call("GET", "/v1/webhooks"),  # 401
        await api.call("GET", "/v1/webhooks/wh_nosuch", key),  # 404
        await api.call("GET", "/v1/openapi.json"),
        await api.call("GET", "/v1/event-types"),
    ]
    for reply in replies:
        assert reply.headers.get("Cache-Control") == "no-store", reply.headers
        assert reply.headers.get("X-Content-Type-Options") == "nosniff"
        assert reply.headers.get("Server") == "hookfleet"
    for path in ("/healthz", "/", "/nowhere"):
        other = await api.call("GET", path)
        assert other.headers.get("X-Content-Type-Options") == "nosniff"
        assert "aiohttp" not in other.headers.get("Server", "") and "Python" not in other.headers.get("Server", "")


@pytest.mark.parametrize("url", ["HTTPS://localhost:9/Hooks", "Https://localhost:9/Hooks"])
async def test_an_upper_case_scheme_is_normalised(api: RunningApi, key: str, url: str) -> None:
    created = await api.call("POST", "/v1/webhooks", key, {**NEW, "url": url})
    assert created.status == 201, created.body
    assert created.body["url"] == "https://localhost:9/Hooks"
    updated = await api.call("PATCH", f"/v1/webhooks/{created.body['id']}", key, {"url": "HTTPS://localhost:9/x"})
    assert updated.status == 200 and updated.body["url"] == "https://localhost:9/x", updated.body


async def test_out_of_range_query_values_are_422(api: RunningApi, key: str) -> None:
    created = await api.call("POST", "/v1/webhooks", key, NEW)
    path = f"/v1/webhooks/{created.body['id']}/deliveries"
    for value in ("-1", "0", "101", "99999999999999999999999", "1.5", "", "1e3"):
        reply = await api.call("GET", path, key, params={"limit": value})
        assert reply.status == 422 and reply.error["field"] == "limit", (value, reply.body)
    assert (await api.call("GET", path, key, params={"limit": "100"})).status == 200


# ------------------------------------------------------------------------------------------ secrets


async def test_a_secret_sealed_with_another_key_is_a_readable_503(api: RunningApi, key: str) -> None:
    database_url = api.settings.database_url.get_secret_value()
    other_key = base64.b64encode(b"o" * 32).decode()
    webhook_id, _ = seed_webhook(
        database_url, "acct_a", "https://localhost:9/x", ["message.read"], secret_key=other_key
    )
    for method, path in [
        ("GET", f"/v1/webhooks/{webhook_id}"),
        ("GET", "/v1/webhooks"),
        ("PATCH", f"/v1/webhooks/{webhook_id}"),
        ("POST", f"/v1/webhooks/{webhook_id}/test"),
    ]:
        body: dict[str, Any] | None = {"name": "renamed"} if method == "PATCH" else None
        reply = await api.call(method, path, key, body)
        assert reply.status == 503, (path, reply.body)
        assert reply.error["code"] == "secret_undecryptable"
        assert "HOOKFLEET_SECRET_KEY" in reply.error["message"]
    with psycopg.connect(database_url) as conn:  # the webhook itself is untouched
        row = conn.execute("SELECT name FROM webhooks WHERE id = %s", (webhook_id,)).fetchone()
    assert row is not None
