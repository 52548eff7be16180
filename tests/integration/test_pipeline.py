"""The whole pipeline under load and under failure: bursts, a killed dispatcher, a database outage."""

from __future__ import annotations

import time
from collections import defaultdict

import psycopg
import pytest

from producer.publisher import EventPublisher, build_event
from schemas.catalog import PRODUCT_TYPES
from schemas.topics import Topics
from tests.integration.test_dispatcher import publisher_for
from tests.support.fleet import Fleet, seed_account, seed_webhook
from tests.support.receiver import HttpsReceiver
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

TYPES = list(PRODUCT_TYPES)


def _seed_accounts(database_url: str, receiver: HttpsReceiver, accounts: int) -> dict[str, str]:
    """One webhook per account, subscribed to every type; returns receiver path -> webhook id."""
    paths = {}
    for n in range(accounts):
        account = f"acct_{n:03d}"
        seed_account(database_url, account)
        path = f"/a{n:03d}"
        webhook_id, secret = seed_webhook(database_url, account, receiver.url(path), [t.value for t in TYPES])
        receiver.expect(path, secret=secret)
        paths[path] = webhook_id
    return paths


def _publish(publisher: EventPublisher, accounts: int, count: int) -> dict[str, set[str]]:
    """`count` events spread over the accounts; returns receiver path -> event ids."""
    expected: dict[str, set[str]] = defaultdict(set)
    for i in range(count):
        account = i % accounts
        event = build_event(f"acct_{account:03d}", TYPES[i % len(TYPES)], {"n": i})
        publisher.publish(event)
        expected[f"/a{account:03d}"].add(event.id)
    assert publisher.flush() == 0
    return expected


def _received(receiver: HttpsReceiver) -> dict[str, set[str]]:
    got: dict[str, set[str]] = defaultdict(set)
    for r in list(receiver.received):
        got[r.path].add(r.event_id)
    return got


def _success_rows(database_url: str) -> dict[str, set[str]]:
    rows: dict[str, set[str]] = defaultdict(set)
    with psycopg.connect(database_url) as conn:
        for webhook_id, event_id in conn.execute(
            "SELECT webhook_id, event_id FROM delivery_attempts WHERE outcome = 'success'"
        ):
            rows[webhook_id].add(event_id)
    return rows


def _pairs(mapping: dict[str, set[str]]) -> int:
    return sum(len(v) for v in mapping.values())


def test_burst_of_10000_events_every_pair_delivered_and_logged_once(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    paths = _seed_accounts(database_url, receiver, accounts=20)
    fleet.start_dispatcher()
    fleet.start("recorder")
    fleet.start("retry-scheduler")  # anything parked under load comes back through the delay topic
    with publisher_for(kafka_bootstrap, topics) as publisher:
        expected = _publish(publisher, accounts=20, count=10_000)

    assert receiver.wait_for(lambda: _pairs(_received(receiver)) >= 10_000, timeout_s=120), _pairs(_received(receiver))
    assert _received(receiver) == expected
    assert all(r.signature_ok for r in receiver.received)
    by_webhook = {paths[p]: ids for p, ids in expected.items()}
    assert receiver.wait_for(lambda: _pairs(_success_rows(database_url)) >= 10_000, timeout_s=60)
    assert _success_rows(database_url) == by_webhook
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (webhook_id, event_id)) FROM delivery_attempts WHERE outcome = 'success'"
        ).fetchone()
    assert row == (10_000, 10_000)  # exactly one success row per pair


def test_sigkill_mid_burst_loses_no_pair(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    _seed_accounts(database_url, receiver, accounts=12)
    first = fleet.start_dispatcher("dispatcher-1")
    with publisher_for(kafka_bootstrap, topics) as publisher:
        expected = _publish(publisher, accounts=12, count=4_000)
    assert receiver.wait_for(lambda: receiver.count() >= 1_000, timeout_s=60)
    first.kill()  # SIGKILL: no drain, no commit
    killed_at = receiver.count()
    assert killed_at < 4_000, "the burst finished before the kill; nothing was proven"
    fleet.start_dispatcher("dispatcher-2")

    assert receiver.wait_for(lambda: _received(receiver) == expected, timeout_s=90), _pairs(expected) - _pairs(
        _received(receiver)
    )
    copies: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for r in receiver.received:
        copies[(r.path, r.event_id)].append(r.body)
        assert r.headers["X-Webhook-Id"] == r.headers["webhook-id"]
    duplicates = {k: v for k, v in copies.items() if len(v) > 1}
    # Redelivered pairs carry the same event id and the same bytes.
    assert all(len(set(bodies)) == 1 for bodies in duplicates.values())
    print(f"killed after {killed_at} deliveries; {len(duplicates)} pair(s) delivered twice")


def test_database_outage_mid_burst_delays_the_log_and_loses_nothing(
    fleet_env: dict[str, str],
    tmp_path,
    receiver: HttpsReceiver,
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
) -> None:
    paths = _seed_accounts(database_url, receiver, accounts=6)
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    with TcpProxy(str(info.get("host", "127.0.0.1")), int(str(info.get("port") or 5432))) as proxy:
        proxied = psycopg.conninfo.make_conninfo(database_url, host="127.0.0.1", port=proxy.port)
        fleet = Fleet({**fleet_env, "DATABASE_URL": proxied}, tmp_path)
        try:
            fleet.start_dispatcher()
            fleet.start("recorder")
            with publisher_for(kafka_bootstrap, topics) as publisher:
                expected = _publish(publisher, accounts=6, count=600)
                assert receiver.wait_for(lambda: _pairs(_success_rows(database_url)) >= 600, timeout_s=60)
                proxy.cut()  # PostgreSQL unreachable for both roles
                cut_at = time.monotonic()
                more = _publish(publisher, accounts=6, count=1_200)
                for path, ids in more.items():
                    expected[path] |= ids
                # Deliveries continue while the database is away.
                assert receiver.wait_for(lambda: _pairs(_received(receiver)) >= 1_800, timeout_s=30)
                assert time.monotonic() - cut_at < 20
                logged_during_outage = _pairs(_success_rows(database_url))
                time.sleep(max(0.0, 20 - (time.monotonic() - cut_at)))  # timed scenario: a 20 s outage
                proxy.restore()
            by_webhook = {paths[p]: ids for p, ids in expected.items()}
            assert logged_during_outage < 1_800
            assert receiver.wait_for(lambda: _success_rows(database_url) == by_webhook, timeout_s=60)
        finally:
            fleet.stop_all()
        print(fleet.logs()[-2000:])
