"""Asymmetric signing (Standard Webhooks `v1a`, Ed25519) through the API on real PostgreSQL: opt in on create
or update, the public key shown and the private key never (not in an answer, a log line or the database in
clear), key rotation with overlap, and the signatures of a real delivery checked by Node's Ed25519."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from delivery.signing import public_key
from hookfleet.secretbox import SecretBox, open_signing_key
from schemas.topics import Topics
from tests.support.api_client import SECRET_KEY, RunningApi, api_settings
from tests.support.node_verifier import node_verify
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration

NEW = {"name": "Ledger", "url": "https://localhost:9/hooks", "events": ["message.read", "contact.created"]}


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics) -> AsyncIterator[RunningApi]:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle, topics)) as running:
        yield running


async def create(api: RunningApi, key: str, **fields: object) -> dict[str, Any]:
    reply = await api.call("POST", "/v1/webhooks", key, {**NEW, **fields})
    assert reply.status == 201, reply.body
    created: dict[str, Any] = reply.body
    return created


def stored_keys(api: RunningApi, webhook_id: str) -> tuple[str | None, str | None, datetime | None]:
    """The webhook's signing keys as the database holds them, opened with the API's key."""
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        row = conn.execute(
            "SELECT signing_key_ciphertext, previous_signing_key_ciphertext, previous_signing_key_expires_at"
            " FROM webhooks WHERE id = %s",
            (webhook_id,),
        ).fetchone()
    assert row is not None
    box = SecretBox.from_b64(SECRET_KEY)
    for ciphertext in row[:2]:  # sealed: neither the key nor its seed is in the stored bytes
        if ciphertext is not None:
            plain = open_signing_key(box, ciphertext, webhook_id)
            assert plain is not None
            assert plain.encode() not in bytes(ciphertext)
            assert base64.b64decode(plain[5:]) not in bytes(ciphertext)
    return open_signing_key(box, row[0], webhook_id), open_signing_key(box, row[1], webhook_id), row[2]


def assert_no_private_key(private_keys: list[str], *texts: str) -> None:
    for private in private_keys:
        for text in texts:
            assert private not in text and private[5:] not in text, "a private signing key leaked"


async def test_create_with_asymmetric_signing_shows_the_public_key_never_the_private_one(
    api: RunningApi, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reply = await api.call("POST", "/v1/webhooks", key, {**NEW, "asymmetric_signing": True})
    assert reply.status == 201, reply.body
    created = reply.body
    assert created["asymmetric_signing"] is True
    assert created["public_key"].startswith("whpk_") and len(base64.b64decode(created["public_key"][5:])) == 32
    assert created["previous_public_key"] is None and created["previous_public_key_expires_at"] is None
    private, previous, _ = stored_keys(api, created["id"])
    assert private is not None and private.startswith("whsk_") and previous is None
    assert public_key(private) == created["public_key"]

    shown = (await api.call("GET", f"/v1/webhooks/{created['id']}", key)).body
    listed = (await api.call("GET", "/v1/webhooks", key)).body["data"]
    assert shown["public_key"] == created["public_key"] == listed[0]["public_key"]
    revealed = await api.call("GET", f"/v1/webhooks/{created['id']}/secret", key)
    document = await api.call("GET", "/v1/openapi.json")
    assert_no_private_key(
        [private], str(reply.body), str(shown), str(listed), str(revealed.body), str(document.body), caplog.text
    )

    plain = await create(api, key)
    assert plain["asymmetric_signing"] is False and plain["public_key"] is None
    assert stored_keys(api, plain["id"]) == (None, None, None)


async def test_update_switches_asymmetric_signing_on_and_off(
    api: RunningApi, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    webhook = await create(api, key)
    path = f"/v1/webhooks/{webhook['id']}"

    on = await api.call("PATCH", path, key, {"asymmetric_signing": True})
    assert on.status == 200, on.body
    assert on.body["asymmetric_signing"] is True and on.body["public_key"].startswith("whpk_")
    first = stored_keys(api, webhook["id"])[0]
    assert first is not None and public_key(first) == on.body["public_key"]

    again = await api.call("PATCH", path, key, {"asymmetric_signing": True, "name": "Ledger 2"})
    assert again.body["public_key"] == on.body["public_key"], "switching on again keeps the key"
    untouched = await api.call("PATCH", path, key, {"asymmetric_signing": None, "name": "Ledger 3"})
    assert untouched.body["public_key"] == on.body["public_key"] and untouched.body["name"] == "Ledger 3"

    off = await api.call("PATCH", path, key, {"asymmetric_signing": False})
    assert off.status == 200
    assert off.body["asymmetric_signing"] is False and off.body["public_key"] is None
    assert stored_keys(api, webhook["id"]) == (None, None, None)

    back = await api.call("PATCH", path, key, {"asymmetric_signing": True})
    second = stored_keys(api, webhook["id"])[0]
    assert second is not None and back.body["public_key"] == public_key(second) != on.body["public_key"]
    assert_no_private_key([first, second], str(on.body), str(back.body), caplog.text)


@pytest.mark.parametrize(
    ("method", "value"),
    [("POST", "yes"), ("POST", 1), ("POST", "true"), ("PATCH", "on"), ("PATCH", 0), ("PATCH", [])],
)
async def test_a_bad_asymmetric_signing_value_is_422_naming_the_field(
    api: RunningApi, key: str, method: str, value: object
) -> None:
    if method == "POST":
        reply = await api.call("POST", "/v1/webhooks", key, {**NEW, "asymmetric_signing": value})
    else:
        webhook = await create(api, key)
        reply = await api.call("PATCH", f"/v1/webhooks/{webhook['id']}", key, {"asymmetric_signing": value})
    assert reply.status == 422, reply.body
    assert reply.error["field"] == "asymmetric_signing", reply.body


async def test_rotating_the_signing_key_keeps_the_old_one_signing_for_the_overlap(
    api: RunningApi, key: str, receiver: HttpsReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    webhook = await create(api, key, url=receiver.url("/ledger"), asymmetric_signing=True)
    receiver.expect("/ledger", secret=webhook["secret"])
    old_private = stored_keys(api, webhook["id"])[0]
    assert old_private is not None

    before = datetime.now(UTC)
    rotated = await api.call("POST", f"/v1/webhooks/{webhook['id']}/rotate-signing-key", key)
    assert rotated.status == 200, rotated.body
    new_public = rotated.body["public_key"]
    assert new_public.startswith("whpk_") and new_public != webhook["public_key"]
    assert rotated.body["previous_public_key"] == webhook["public_key"]
    ends = datetime.fromisoformat(rotated.body["previous_public_key_expires_at"])
    assert before + timedelta(seconds=3599) <= ends <= datetime.now(UTC) + timedelta(seconds=3601)
    assert rotated.body["secret"] == "whsec_****" + webhook["secret"][-4:], "the secret is not rotated with it"
    new_private, previous_private, _ = stored_keys(api, webhook["id"])
    assert previous_private == old_private and new_private is not None and public_key(new_private) == new_public

    # A real delivery (the Test action runs the dispatcher's delivery code) during the overlap: both keys
    # sign, each v1a entry verified by Node's Ed25519 with its public key; X-Webhook-Signature is unchanged.
    test = await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key, {"event_type": "message.read"})
    assert test.status == 200 and test.body["ok"] is True, test.body
    [got] = receiver.at("/ledger")
    assert got.signature_ok is True
    entries = got.headers["webhook-signature"].split(" ")
    assert [e.split(",")[0] for e in entries] == ["v1", "v1a", "v1a"]
    verdict = node_verify([new_public, webhook["public_key"]], got.headers, got.body, time.time())
    assert verdict.entries == 2 and verdict.verified == [True, True] and verdict.matches == [[0], [1]]

    # The delivery detail rebuilds the same signatures (Ed25519 is deterministic).
    detail = await api.call("GET", f"/v1/deliveries/{test.body['attempt_id']}", key)
    assert detail.status == 200, detail.body
    assert detail.body["request"]["headers"]["webhook-signature"] == got.headers["webhook-signature"]
    assert_no_private_key(
        [old_private, new_private], str(rotated.body), str(test.body), str(detail.body), caplog.text
    )


async def test_without_overlap_the_old_key_stops_signing_at_once(
    database_url: str, kafka_bootstrap: str, ca_bundle: str, receiver: HttpsReceiver
) -> None:
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, secret_rotation_overlap_s=0)
    async with RunningApi(settings) as api:
        _, key = api.account("No overlap")
        webhook = await create(api, key, url=receiver.url("/now"), asymmetric_signing=True)
        rotated = await api.call("POST", f"/v1/webhooks/{webhook['id']}/rotate-signing-key", key)
        assert rotated.status == 200 and rotated.body["previous_public_key"] is None
        assert stored_keys(api, webhook["id"])[1:] == (None, None)
        assert (await api.call("POST", f"/v1/webhooks/{webhook['id']}/test", key)).body["ok"] is True
    [got] = receiver.at("/now")
    verdict = node_verify([rotated.body["public_key"], webhook["public_key"]], got.headers, got.body, time.time())
    assert verdict.entries == 1 and verdict.verified == [True, False]


async def test_rotating_without_asymmetric_signing_is_409_and_another_accounts_webhook_404(
    api: RunningApi, key: str
) -> None:
    plain = await create(api, key)
    reply = await api.call("POST", f"/v1/webhooks/{plain['id']}/rotate-signing-key", key)
    assert reply.status == 409, reply.body
    assert reply.error["code"] == "asymmetric_signing_off" and reply.error["field"] == "asymmetric_signing"
    assert stored_keys(api, plain["id"]) == (None, None, None)

    _, other_key = api.account("Other")
    mine = await create(api, key, asymmetric_signing=True)
    foreign = await api.call("POST", f"/v1/webhooks/{mine['id']}/rotate-signing-key", other_key)
    assert foreign.status == 404
    assert (await api.call("GET", f"/v1/webhooks/{mine['id']}", key)).body["public_key"] == mine["public_key"]
