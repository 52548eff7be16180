"""Any language can publish: events published from Node.js with kafkajs (tests/node/publish.mjs), following
only the wire contract (docs/architecture.md#publishing-events), reach a real HTTPS receiver signed with the
webhook's secret, on the partition a Python publisher would use, and an idempotency key set from Node.js
is honoured. `make test` installs kafkajs with `npm ci` in tests/node (the "node packages" step)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest

from schemas.topics import Topics
from tests.conftest import TEST_PARTITIONS
from tests.support.fleet import Fleet, seed_account, seed_webhook
from tests.support.group_offsets import fleet_idle
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
ACCOUNTS = ("acct_node_0", "acct_node_1", "acct_node_2")


def run_node(kafka_bootstrap: str, topics: Topics, events: list[dict[str, object]]) -> list[dict[str, object]]:
    node = shutil.which("node")
    assert node is not None, "node is not installed: deploy/local/system-packages.sh test installs it"
    assert (NODE_DIR / "node_modules" / "kafkajs").is_dir(), "kafkajs is not installed: run `npm ci` in tests/node"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HOOKFLEET_TOPIC_PREFIX": topics.prefix,
        "EVENTS": json.dumps(events),
    }
    done = subprocess.run([node, "publish.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_events_published_from_node_are_delivered_signed_and_a_repeated_key_once(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    paths = {}
    for account in ACCOUNTS:
        seed_account(database_url, account)
        path = f"/{account}"
        _, secret = seed_webhook(database_url, account, receiver.url(path), ["message.sent", "contact.created"])
        receiver.expect(path, secret=secret)
        paths[account] = path
    fleet.start_dispatcher()

    events: list[dict[str, object]] = []
    for account in ACCOUNTS:
        events.append({"account_id": account, "type": "contact.created", "data": {"contact_id": "c1"}})
        for attempt in (1, 2):  # the publisher retried: same key, a new event id
            events.append(
                {"account_id": account, "type": "message.sent", "data": {"try": attempt}, "idempotency_key": "m-1"}
            )
    published = run_node(kafka_bootstrap, topics, events)

    assert len(published) == len(events)
    for sent in published:  # the contract's partitioner: where Python's producer puts the account
        assert sent["partition"] == zlib.crc32(str(sent["account_id"]).encode()) % TEST_PARTITIONS, sent
    owed = {(paths[str(s["account_id"])], str(s["id"])) for s in published if s["idempotency_key"] is None}
    firsts: dict[str, str] = {}
    for sent in published:
        if sent["idempotency_key"] is not None:
            firsts.setdefault(str(sent["account_id"]), str(sent["id"]))
    owed |= {(paths[account], event_id) for account, event_id in firsts.items()}

    assert receiver.wait_for(lambda: receiver.count() >= len(owed), timeout_s=60), receiver.count()
    wait_until(lambda: fleet_idle(kafka_bootstrap, topics, ("dispatcher",)), 60, "the dispatcher to finish")
    copies = Counter((r.path, r.event_id) for r in receiver.received)
    assert copies == Counter(dict.fromkeys(owed, 1)), copies
    assert all(r.signature_ok for r in receiver.received), "a delivery's X-Webhook-Signature did not verify"
    bodies = [json.loads(r.body) for r in receiver.received]
    assert {b["type"] for b in bodies} == {"contact.created", "message.sent"}
    assert all(b["created_at"].endswith("Z") for b in bodies)
