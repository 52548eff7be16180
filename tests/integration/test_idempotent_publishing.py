"""Idempotent publishing with real processes: the same idempotency key published again and again — right
behind the first publish, after a `kill -9` of the dispatcher (its fan-out stage), and after a second
dispatcher joined and took over events partitions — reaches each webhook exactly once, as the first event."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter

import pytest

from hookfleet.settings import CommonSettings
from producer.publisher import EventPublisher, build_event, first_publish
from schemas.catalog import EventType
from schemas.topics import Topics
from tests.conftest import TEST_PARTITIONS
from tests.integration.test_dispatcher import publisher_for
from tests.integration.test_scale_out import wait_for_split
from tests.support.fleet import HOOKFLEET, Fleet, seed_account, seed_webhook
from tests.support.group_offsets import fleet_idle
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ACCOUNTS = [f"acct_idem_{n}" for n in range(6)]  # their keys land on every one of the 3 events partitions


def publish_round(publisher: EventPublisher, keys: dict[str, str], n: int) -> dict[str, str]:
    """One publish per account with that account's key; returns account -> event id, and checks the
    accounts covered every events partition (so whichever partitions a rebalance moves, keys move too)."""
    ids: dict[str, str] = {}
    partitions = set()
    for account, key in keys.items():
        event = build_event(account, EventType.MESSAGE_SENT, {"round": n})
        sent = publisher.publish_and_wait(event, idempotency_key=key)
        partitions.add(sent.partition())
        ids[account] = event.id
    assert partitions == set(range(TEST_PARTITIONS)), partitions
    return ids


def restored_keys(log: str) -> int:
    return sum(int(n) for n in re.findall(r"event=idempotency_keys_restored partition=\d+ records=\d+ keys=(\d+)", log))


def test_a_key_published_again_around_a_kill_9_and_a_rebalance_is_delivered_once(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    paths: dict[str, str] = {}
    for account in ACCOUNTS:
        seed_account(database_url, account)
        path = f"/{account}"
        _, secret = seed_webhook(database_url, account, receiver.url(path), ["message.sent"])
        receiver.expect(path, secret=secret)
        paths[account] = path
    keys = {account: f"order-{account}-1" for account in ACCOUNTS}
    idle = lambda: fleet_idle(kafka_bootstrap, topics, ("dispatcher",))  # noqa: E731
    group = f"{topics.prefix}hookfleet-dispatcher"
    partitions = {(topic, p) for topic in (topics.events, topics.deliveries) for p in range(TEST_PARTITIONS)}

    with publisher_for(kafka_bootstrap, topics) as publisher:
        # 1. The first publish, and a retry right behind it (a new event id, the same key): one fan-out.
        first = fleet.start_dispatcher("dispatcher-1")
        firsts = publish_round(publisher, keys, 1)
        publish_round(publisher, keys, 2)
        assert receiver.wait_for(lambda: receiver.count() >= len(ACCOUNTS), timeout_s=60), receiver.count()
        wait_until(idle, 60, "dispatcher-1 to finish and commit both rounds")

        # 2. kill -9: no drain, no final commit; the key is published again while no fan-out runs. The next
        # dispatcher restores the keys from the changelog before it reads that publish.
        first.kill()
        publish_round(publisher, keys, 3)
        second = fleet.start_dispatcher("dispatcher-2")
        wait_until(idle, 90, "dispatcher-2 to take over the partitions and finish the third round")

        # 3. A second dispatcher joins: the events partitions it takes over come with their keys.
        third = fleet.start_dispatcher("dispatcher-3")
        wait_for_split(kafka_bootstrap, group, partitions, members=4)  # two dispatchers, two stages each
        publish_round(publisher, keys, 4)
        wait_until(idle, 60, "both dispatchers to finish the fourth round")

    copies = Counter((r.path, r.event_id) for r in receiver.received)
    assert copies == Counter({(paths[a], firsts[a]): 1 for a in ACCOUNTS}), copies
    assert all(r.signature_ok for r in receiver.received)
    assert restored_keys(second.log_text()) == len(ACCOUNTS), second.log_text()[-3000:]
    moved = restored_keys(third.log_text())
    assert moved >= 1, "no events partition with a key moved to dispatcher-3: the rebalance proved nothing"
    dropped = sum(role.log_text().count("event=idempotent_duplicate") for role in (first, second, third))
    assert dropped == 3 * len(ACCOUNTS), dropped
    # The publisher can learn which event each key became (`hookfleet idempotency-key` prints the same).
    settings = CommonSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topics.prefix)
    for account in ACCOUNTS:
        sight = first_publish(account, keys[account], settings)
        assert sight is not None and sight.event_id == firsts[account], (account, sight)
    assert first_publish(ACCOUNTS[0], "never-published", settings) is None
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "HOOKFLEET_TOPIC_PREFIX": topics.prefix}
    shown = subprocess.run(
        [HOOKFLEET, "idempotency-key", "--account", ACCOUNTS[0], keys[ACCOUNTS[0]]], env=env, capture_output=True
    )
    assert shown.returncode == 0 and json.loads(shown.stdout)["event_id"] == firsts[ACCOUNTS[0]], shown
    missing = subprocess.run(
        [HOOKFLEET, "idempotency-key", "--account", ACCOUNTS[0], "never-published"], env=env, capture_output=True
    )
    assert missing.returncode == 1 and b"no publish with idempotency-key 'never-published'" in missing.stderr


def test_a_key_published_again_after_a_kill_9_mid_fan_out_reaches_each_webhook_only_as_its_first_event(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    """The kill lands while the first publishes are being fanned out: their changelog records and tasks may
    be written and their offsets not committed. The next dispatcher reads them again (READ_AGAIN: fanned out
    again, the same event id, which receivers drop) and drops the second publish of every key."""
    paths: dict[str, str] = {}
    for account in ACCOUNTS:
        seed_account(database_url, account)
        path = f"/{account}"
        _, secret = seed_webhook(database_url, account, receiver.url(path), ["message.sent"])
        receiver.expect(path, secret=secret)
        paths[account] = path
    keys = {account: f"order-{account}" for account in ACCOUNTS}
    with publisher_for(kafka_bootstrap, topics) as publisher:
        first = fleet.start_dispatcher("dispatcher-1")
        firsts = publish_round(publisher, keys, 1)
        assert receiver.wait_for(lambda: receiver.count() >= 1, timeout_s=60), "nothing was fanned out"
        first.kill()  # mid-work: the commit interval (0.5 s) has most likely not passed for every partition
        publish_round(publisher, keys, 2)
        second = fleet.start_dispatcher("dispatcher-2")
        wait_until(lambda: fleet_idle(kafka_bootstrap, topics, ("dispatcher",)), 90, "dispatcher-2 to finish")

    delivered: dict[str, set[str]] = {}
    for r in receiver.received:
        delivered.setdefault(r.path, set()).add(r.event_id)
    assert delivered == {paths[a]: {firsts[a]} for a in ACCOUNTS}, delivered
    assert all(r.signature_ok for r in receiver.received)
    assert second.log_text().count("event=idempotent_duplicate") == len(ACCOUNTS), second.log_text()[-3000:]
