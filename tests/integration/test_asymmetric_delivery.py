"""Ed25519 (`v1a`) signatures end to end: webhooks created through the API, an event published to the real
broker, a real dispatcher delivering to a real HTTPS receiver, and what the receiver got checked by Node's
Ed25519 with the public keys the API showed, and by the documented HMAC check and the Standard Webhooks
verifier library, which must not mind the `v1a` entries."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from hookfleet.settings import CommonSettings
from producer.publisher import EventPublisher, build_event
from schemas.catalog import EventType, sample_data
from schemas.topics import Topics
from tests.support.api_client import RunningApi, api_settings
from tests.support.fleet import TEST_SECRET_KEY, Fleet
from tests.support.node_verifier import node_verify
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics) -> AsyncIterator[RunningApi]:
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, topics, secret_key=TEST_SECRET_KEY)
    async with RunningApi(settings) as running:
        yield running


async def create(api: RunningApi, key: str, url: str, asymmetric: bool) -> dict[str, Any]:
    body = {"name": "Ledger", "url": url, "events": ["message.read"], "asymmetric_signing": asymmetric}
    reply = await api.call("POST", "/v1/webhooks", key, body)
    assert reply.status == 201, reply.body
    created: dict[str, Any] = reply.body
    return created


async def test_dispatched_deliveries_carry_v1a_signatures_that_node_verifies_with_the_shown_public_keys(
    api: RunningApi, key: str, fleet: Fleet, receiver: HttpsReceiver, kafka_bootstrap: str, topics: Topics
) -> None:
    # Given: a webhook without asymmetric signing, one with it, and one whose key was rotated (overlap 1 h)
    plain = await create(api, key, receiver.url("/plain"), asymmetric=False)
    signed = await create(api, key, receiver.url("/signed"), asymmetric=True)
    rotated = await create(api, key, receiver.url("/rotated"), asymmetric=True)
    rotation = await api.call("POST", f"/v1/webhooks/{rotated['id']}/rotate-signing-key", key)
    assert rotation.status == 200, rotation.body
    for path, webhook in (("/plain", plain), ("/signed", signed), ("/rotated", rotated)):
        receiver.expect(path, secret=webhook["secret"])
    fleet.start_dispatcher()

    # When: one event is published
    event = build_event("acct_a", EventType.MESSAGE_READ, sample_data(EventType.MESSAGE_READ))
    settings = CommonSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topics.prefix)
    with EventPublisher(settings) as publisher:
        publisher.publish_and_wait(event)
    assert receiver.wait_for(lambda: all(receiver.at(p) for p in ("/plain", "/signed", "/rotated")), 30), (
        fleet.logs()
    )

    # Then: each receiver verifies what it got
    keys = {
        "/plain": [signed["public_key"]],
        "/signed": [signed["public_key"], rotated["public_key"]],
        "/rotated": [rotation.body["public_key"], rotated["public_key"]],  # new key, then the previous one
    }
    expected = {
        "/plain": (0, [False], [[]]),
        "/signed": (1, [True, False], [[0], []]),
        "/rotated": (2, [True, True], [[0], [1]]),
    }
    webhooks = {"/plain": plain, "/signed": signed, "/rotated": rotated}
    for path, public_keys in keys.items():
        [got] = receiver.at(path)
        assert got.body == event.body() and got.event_id == event.id
        assert got.signature_ok is True, "X-Webhook-Signature (the documented HMAC check) is unchanged"
        assert StandardWebhook(webhooks[path]["secret"]).verify(got.body, dict(got.headers))["id"] == event.id
        verdict = node_verify(public_keys, got.headers, got.body, time.time())
        assert (verdict.entries, verdict.verified, verdict.matches) == expected[path], (path, got.headers)
