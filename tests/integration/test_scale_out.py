"""Scale-out: dispatchers are added by starting more processes in one consumer group.

A second dispatcher joining during a burst takes its share of the partitions, and no (event, webhook)
pair is lost across the rebalance. The throughput of one and of two dispatchers is printed (run with
`-s` to see it); it is a figure for the notes, never asserted.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import AdminClient

from hookfleet.kafka import PartitionKey, client_config
from hookfleet.settings import CommonSettings, DispatcherSettings
from producer.publisher import EventPublisher, build_event
from schemas.catalog import PRODUCT_TYPES, sample_data
from schemas.topics import Topics
from tests.conftest import TEST_PARTITIONS
from tests.support.fleet import Fleet, seed_account, seed_webhook
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration

ACCOUNTS = 24  # event keys: enough accounts that every partition of the events topic gets some
HOOKS_PER_ACCOUNT = 2
EVENTS_PER_BURST = 2500  # x 2 webhooks = 5000 deliveries per burst
JOIN_EVENTS_PER_TICK, JOIN_TICK_S = 20, 0.05  # 400 events/s while the group rebalances: well below capacity
TYPES = list(PRODUCT_TYPES)
STAGES = 2  # group members per dispatcher process: one consumer per stage (fan-out, delivery)

Pair = tuple[str, str]  # (event id, receiver path)


def group_assignment(bootstrap: str, group: str) -> dict[str, set[PartitionKey]]:
    """member id -> the partitions the broker's group coordinator has assigned to it."""
    admin = AdminClient(client_config(bootstrap))
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {
        member.member_id: {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions}
        for member in description.members
    }


def is_split(assignment: dict[str, set[PartitionKey]], partitions: set[PartitionKey], members: int) -> bool:
    """`members` consumers share `partitions`, each with some, none twice."""
    owned = [tp for tps in assignment.values() for tp in tps]
    return (
        len(assignment) == members
        and all(assignment.values())
        and len(owned) == len(set(owned))
        and set(owned) == partitions
    )


def wait_for_split(
    bootstrap: str, group: str, partitions: set[PartitionKey], members: int
) -> dict[str, set[PartitionKey]]:
    deadline = time.monotonic() + 45
    assignment: dict[str, set[PartitionKey]] = {}
    while time.monotonic() < deadline:
        assignment = group_assignment(bootstrap, group)
        if is_split(assignment, partitions, members):
            return assignment
        time.sleep(0.5)
    raise AssertionError(f"group {group} never split {len(partitions)} partitions over {members}: {assignment}")


def publish_burst(publisher: EventPublisher, accounts: list[str], hooks: dict[str, list[str]], n: int) -> set[Pair]:
    """Publish `n` events round-robin over the accounts; returns every (event, webhook path) owed."""
    owed: set[Pair] = set()
    for i in range(n):
        account = accounts[i % len(accounts)]
        event_type = TYPES[i % len(TYPES)]
        event = build_event(account, event_type, sample_data(event_type))
        publisher.publish(event)
        owed.update((event.id, path) for path in hooks[account])
    publisher.flush()
    return owed


class Arrivals:
    """Tallies the receiver's requests incrementally: the receiver serves from a thread of this process,
    so polling must cost only the new arrivals, or the test itself would slow the deliveries it measures."""

    def __init__(self, receiver: HttpsReceiver) -> None:
        self._receiver = receiver
        self._seen = 0
        self.first_at: dict[Pair, float] = {}
        self.total = 0

    def update(self) -> None:
        new = self._receiver.received[self._seen :]
        self._seen += len(new)
        self.total += len(new)
        for r in new:
            self.first_at.setdefault((r.event_id, r.path), r.at)

    def wait(self, owed: set[Pair], started: float, timeout_s: float = 60.0) -> float:
        """Wait until every owed pair arrived; returns deliveries per second from `started` to the last one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.update()
            if owed <= self.first_at.keys():
                return len(owed) / max(max(self.first_at[p] for p in owed) - started, 1e-3)
            time.sleep(0.1)
        raise AssertionError(f"lost {len(owed - self.first_at.keys())} of {len(owed)} (event, webhook) pairs")


def test_second_dispatcher_takes_half_the_partitions_and_no_pair_is_lost(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    group = DispatcherSettings(topic_prefix=topics.prefix).group_id  # unique: it carries the test's prefix
    accounts = [seed_account(database_url, f"acct_{i:02d}") for i in range(ACCOUNTS)]
    hooks: dict[str, list[str]] = {}
    for account in accounts:
        hooks[account] = []
        for n in range(HOOKS_PER_ACCOUNT):
            path = f"/{account}/{n}"
            _, secret = seed_webhook(database_url, account, receiver.url(path), [t.value for t in TYPES])
            receiver.expect(path, secret=secret)
            hooks[account].append(path)
    partitions = {(topic, p) for topic in (topics.events, topics.deliveries) for p in range(TEST_PARTITIONS)}
    publisher = EventPublisher(CommonSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topics.prefix))

    arrivals = Arrivals(receiver)
    # Deliveries that wait too long for a busy endpoint are parked in the first delay topic: the retry
    # scheduler hands them back (after 1 s here), as in the real fleet.
    fleet.start("retry-scheduler")
    try:
        first = fleet.start_dispatcher("dispatcher-1", HOOKFLEET_RETRY_DELAYS_S="[1,1,1]")
        wait_for_split(kafka_bootstrap, group, partitions, members=STAGES)

        # Warm-up burst of the same size: it opens the TLS connections to every endpoint (a burst's first
        # hundreds of handshakes cost more than its deliveries), so the measured bursts compare steady states.
        owed_warm = publish_burst(publisher, accounts, hooks, EVENTS_PER_BURST)
        arrivals.wait(owed_warm, time.time())

        started = time.time()
        owed_one = publish_burst(publisher, accounts, hooks, EVENTS_PER_BURST)
        one_rate = arrivals.wait(owed_one, started)

        # The second dispatcher joins under steady traffic, which goes on until the group has rebalanced:
        # partitions change hands while deliveries are in flight, and nothing may be lost.
        second = fleet.start("dispatcher", "dispatcher-2", HOOKFLEET_RETRY_DELAYS_S="[1,1,1]")
        owed_join: set[Pair] = set()
        joined_at = time.monotonic()
        split_at: float | None = None
        deadline = time.monotonic() + 45
        while split_at is None or time.monotonic() < split_at + 1.0:
            assert time.monotonic() < deadline, f"no rebalance: {group_assignment(kafka_bootstrap, group)}"
            tick = time.monotonic()
            owed_join |= publish_burst(publisher, accounts, hooks, JOIN_EVENTS_PER_TICK)
            time.sleep(max(0.0, tick + JOIN_TICK_S - time.monotonic()))  # the traffic rate, by design
            if split_at is None and is_split(group_assignment(kafka_bootstrap, group), partitions, 2 * STAGES):
                split_at = time.monotonic()
        arrivals.wait(owed_join, time.time())
        assignment = group_assignment(kafka_bootstrap, group)
        assert is_split(assignment, partitions, members=2 * STAGES), assignment
        for topic in (topics.events, topics.deliveries):  # each topic's partitions spread over both processes
            assert sum(1 for tps in assignment.values() if any(t == topic for t, _ in tps)) == 2, assignment

        owed_warm_two = publish_burst(publisher, accounts, hooks, EVENTS_PER_BURST)  # the newcomer's connections
        arrivals.wait(owed_warm_two, time.time())

        started = time.time()
        owed_two = publish_burst(publisher, accounts, hooks, EVENTS_PER_BURST)
        two_rate = arrivals.wait(owed_two, started)
    finally:
        publisher.close()

    assert split_at is not None
    owed = owed_warm | owed_one | owed_join | owed_warm_two | owed_two
    arrivals.update()
    assert arrivals.first_at.keys() == owed, "a delivery arrived that no event owed"
    assert all(r.signature_ok for r in receiver.received)
    assert first.proc.poll() is None and second.proc.poll() is None, "a dispatcher died"
    print(
        f"\nscale-out: partitions per consumer {sorted(len(tps) for tps in assignment.values())}; "
        f"1 dispatcher {one_rate:.0f} deliveries/s, 2 dispatchers {two_rate:.0f} deliveries/s "
        f"({len(owed_one)} deliveries per burst); rebalance under traffic took {split_at - joined_at:.1f} s "
        f"({len(owed_join)} deliveries owed meanwhile); duplicates: {arrivals.total - len(owed)}"
    )
