"""A 3-broker cluster losing a broker under load: nothing lost, no retry early, no role restarted by hand.

The module starts its own 3-node KRaft cluster (devstack/stack.py `Cluster`, combined roles, fast
failover settings from deploy/local/cluster.properties.template) on ports and in a directory of its own,
so it runs beside the single broker the rest of the suite uses, and stops it after its last test. Topics
are created the way `hookfleet topics ensure` creates them on 3 brokers: replication 3,
min.insync.replicas 2. Every test drives a burst of events to several webhooks through real role
processes and real HTTPS receivers, disturbs the cluster, then checks every (event, webhook) pair
reached its receiver and the delivery log, and prints its figures (FAILOVER lines; bench/RESULTS.md).
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from devstack import stack as devstack
from hookfleet.cli import topic_specs
from hookfleet.kafka import delete_topics, ensure_topics
from hookfleet.settings import TopicSettings
from producer.publisher import EventPublisher, build_event
from schemas.catalog import EventType
from schemas.models import Event
from schemas.topics import Topics
from tests.support.fleet import Fleet, Role, seed_account, seed_webhook
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until

# One cluster for the whole module: under pytest-xdist (--dist loadgroup) its tests stay on one worker.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("kafka-cluster")]

BASE_PORT = 28092  # brokers 28092-28094, controllers 28192-28194: clear of the local stack, `dev up --brokers 3`
# and of the ephemeral port range (32768+), where a client reconnecting to a dead broker can connect to itself
ACCOUNTS = 6  # events are keyed by account: six keys spread over every partition
HOOKS_PER_ACCOUNT = 2
PARTITIONS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Cluster]:
    """Module-scoped, so the three JVMs live only while these tests run."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = BASE_PORT + 5 * int(worker or 0)  # each xdist worker that gets here has its own cluster
    for port in (base, base + 100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(
                    f"port {port} is taken: the failover cluster needs {base}-{base + 2} and {base + 100}-{base + 102}"
                )
    running = devstack.Cluster(
        devstack.Paths(devstack.default_paths()), base_port=base, directory=tmp_path_factory.mktemp("cluster")
    )
    try:
        running.up()
        yield running
    finally:
        running.down()


@pytest.fixture
def kafka_bootstrap(cluster: devstack.Cluster) -> str:
    """Every node up and every partition fully replicated before a test (a failed one may leave a node down)."""
    for node in cluster.nodes:
        cluster.start_node(node)
    cluster.wait_healthy()
    return cluster.bootstrap


@pytest.fixture
def topics(cluster: devstack.Cluster, kafka_bootstrap: str) -> Iterator[Topics]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = TopicSettings(kafka_bootstrap_servers=cluster.bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    specs = topic_specs(settings, brokers=3)
    assert {(s.replication_factor, s.config["min.insync.replicas"]) for s in specs} == {(3, "2")}
    ensure_topics(cluster.bootstrap, specs)
    yield settings.topics
    delete_topics(cluster.bootstrap, settings.topics.all())


# ------------------------------------------------------------------------------------------- helpers


def leaders(bootstrap: str, names: list[str]) -> dict[tuple[str, int], int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=5)
    return {(name, p.id): p.leader for name in names for p in metadata.topics[name].partitions.values()}


def busiest_leader(bootstrap: str, names: list[str]) -> int:
    counts = Counter(leader for leader in leaders(bootstrap, names).values())
    return counts.most_common(1)[0][0]


def wait_leaders_off(bootstrap: str, names: list[str], node: int, timeout_s: float = 30.0) -> float:
    """Seconds until no partition of `names` is led by `node` (or leaderless)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            if all(leader not in (node, -1) for leader in leaders(bootstrap, names).values()):
                return time.monotonic() - start
        except Exception as exc:  # metadata from a node being fenced: ask again
            print(f"metadata: {exc}")
        time.sleep(0.1)
    raise AssertionError(f"partitions still led by node {node} after {timeout_s}s")


def seed(database_url: str, receiver: HttpsReceiver, fail_first: dict[str, int] | None = None) -> list[str]:
    """ACCOUNTS accounts with HOOKS_PER_ACCOUNT webhooks each on `order.created`; returns their paths."""
    paths = []
    for a in range(ACCOUNTS):
        account = seed_account(database_url, f"acct_{a}")
        for h in range(HOOKS_PER_ACCOUNT):
            path = f"/a{a}/h{h}"
            _, secret = seed_webhook(database_url, account, receiver.url(path), [EventType.MESSAGE_SENT.value])
            receiver.expect(path, secret=secret, fail_events=fail_first)
            paths.append(path)
    return paths


def events(count: int) -> list[Event]:
    return [build_event(f"acct_{i % ACCOUNTS}", EventType.MESSAGE_SENT, {"n": i}) for i in range(count)]


class Burst:
    """Publishes `events` at `rate_per_s` from a thread; records publish errors."""

    def __init__(self, bootstrap: str, topics: Topics, batch: list[Event], rate_per_s: float) -> None:
        from hookfleet.settings import CommonSettings

        self.events = batch
        self.errors: list[str] = []
        self.acked = 0
        self._lock = threading.Lock()
        self._publisher = EventPublisher(CommonSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=topics.prefix))
        self._interval = 1.0 / rate_per_s
        self._thread = threading.Thread(target=self._run, name="burst", daemon=True)

    def _settled(self, error: object, _message: object) -> None:
        with self._lock:
            if error is None:
                self.acked += 1
            else:
                self.errors.append(str(error))

    def _run(self) -> None:
        start = time.monotonic()
        for i, event in enumerate(self.events):
            time.sleep(max(0.0, start + i * self._interval - time.monotonic()))  # the publish rate, by design
            self._publisher.publish(event, on_delivery=self._settled)
        self._publisher.flush(120)

    def start(self) -> Burst:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(180)
        self._publisher.close()
        assert not self.errors, self.errors[:5]
        assert self.acked == len(self.events)


def start_roles(fleet: Fleet, delays_s: float = 5.0) -> list[Role]:
    """Every role running with its partitions assigned, so the broker dies under a fleet at work (a role
    still joining its group when its coordinator dies is another scenario, not the one these tests time)."""
    extra = {"HOOKFLEET_RETRY_DELAYS_S": f"[{delays_s}, {delays_s}, {delays_s}]"}
    roles = [fleet.start_dispatcher(**extra), fleet.start("retry-scheduler", **extra), fleet.start("recorder", **extra)]
    for role in roles[1:]:
        assert role.wait_log("event=partitions_assigned", timeout_s=60), role.log_text()[-3000:]
    return roles


def recorded_successes(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT (event_id, webhook_id)) FROM delivery_attempts WHERE outcome = 'success'"
        ).fetchone()
    return int(row[0]) if row else 0


def settle(
    receiver: HttpsReceiver,
    database_url: str,
    paths: list[str],
    batch: list[Event],
    ok_attempt: int = 1,
    timeout_s: float = 90.0,
) -> float:
    """Wait until every (event, webhook) pair got its 2xx (attempt `ok_attempt`: fail-first webhooks
    answer 500 to attempt 1) and is recorded as a success; returns when the last pair's 2xx arrived."""
    wanted = {(e.id, p) for e in batch for p in paths if p.startswith(f"/a{e.account_id.split('_')[1]}/")}

    def delivered() -> set[tuple[str, str]]:
        ok: set[tuple[str, str]] = set()
        for path in paths:
            ok.update((r.event_id, path) for r in receiver.at(path) if r.signature_ok and r.attempt >= ok_attempt)
        return ok

    assert receiver.wait_for(lambda: wanted <= delivered(), timeout_s=timeout_s, interval_s=0.5), (
        f"lost pairs: {len(wanted - delivered())} of {len(wanted)}"
    )
    assert receiver.wait_for(lambda: recorded_successes(database_url) >= len(wanted), timeout_s=60, interval_s=0.5), (
        f"recorded {recorded_successes(database_url)} of {len(wanted)}"
    )
    first_ok: dict[tuple[str, str], float] = {}
    for path in paths:
        for r in receiver.at(path):
            if r.attempt >= ok_attempt:
                first_ok.setdefault((r.event_id, path), r.at)
    return max(first_ok[pair] for pair in wanted)


def duplicates(receiver: HttpsReceiver, paths: list[str]) -> int:
    """Deliveries beyond one per (event, webhook, attempt): what at-least-once costs."""
    seen = Counter((r.event_id, p, r.attempt) for p in paths for r in receiver.at(p))
    return sum(n - 1 for n in seen.values())


def flowing(database_url: str) -> None:
    """Wait until deliveries are recorded: traffic flows through every stage (fan-out, delivery, recorder)."""
    wait_until(lambda: recorded_successes(database_url) >= 10, 60, "ten recorded deliveries of the burst")


def alive(roles: list[Role]) -> None:
    for role in roles:
        assert role.proc.poll() is None, f"{role.name} exited ({role.proc.returncode}):\n{role.log_text()[-3000:]}"


def report(name: str, **figures: float | int) -> None:
    shown = " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"FAILOVER {name} {shown}")


# --------------------------------------------------------------------------------------------- tests


def test_kill_9_of_the_busiest_leader_during_a_burst(
    cluster: devstack.Cluster, fleet: Fleet, receiver: HttpsReceiver, database_url: str, topics: Topics
) -> None:
    paths = seed(database_url, receiver)
    roles = start_roles(fleet)
    batch = events(240)
    burst = Burst(cluster.bootstrap, topics, batch, rate_per_s=30).start()
    flowing(database_url)
    watched = [topics.events, topics.deliveries]
    victim = busiest_leader(cluster.bootstrap, watched)
    killed_at = time.time()
    cluster.stop_node(victim, kill=True)
    moved_s = wait_leaders_off(cluster.bootstrap, watched, victim)
    burst.join()
    last = settle(receiver, database_url, paths, batch)
    alive(roles)
    gap = max_gap_after(receiver, paths, killed_at)
    dupes = duplicates(receiver, paths)
    pairs = len(batch) * HOOKS_PER_ACCOUNT
    report("kill9", pairs=pairs, lost=0, duplicates=dupes, leaders_moved_s=moved_s, stall_s=gap,
           last_pair_after_kill_s=last - killed_at)  # fmt: skip
    assert dupes <= pairs // 4, dupes


def test_rolling_restart_of_all_three_brokers_during_a_burst(
    cluster: devstack.Cluster, fleet: Fleet, receiver: HttpsReceiver, database_url: str, topics: Topics
) -> None:
    paths = seed(database_url, receiver)
    roles = start_roles(fleet)
    batch = events(600)
    burst = Burst(cluster.bootstrap, topics, batch, rate_per_s=15).start()
    flowing(database_url)
    started = time.time()
    per_node = []
    for node in cluster.nodes:
        t0 = time.monotonic()
        cluster.stop_node(node)  # SIGTERM: a controlled shutdown, as an upgrade does it
        cluster.start_node(node)
        cluster.wait_healthy()
        per_node.append(time.monotonic() - t0)
    rolled_s = time.time() - started
    burst.join()
    last = settle(receiver, database_url, paths, batch)
    alive(roles)
    dupes = duplicates(receiver, paths)
    pairs = len(batch) * HOOKS_PER_ACCOUNT
    stall = max_gap_after(receiver, paths, started)
    report("rolling", pairs=pairs, lost=0, duplicates=dupes, restart_s=rolled_s, slowest_node_s=max(per_node),
           stall_s=stall, last_pair_after_first_stop_s=last - started)  # fmt: skip
    assert dupes <= pairs // 4, dupes


def test_kill_a_broker_while_the_retry_scheduler_holds_tasks(
    cluster: devstack.Cluster, fleet: Fleet, receiver: HttpsReceiver, database_url: str, topics: Topics
) -> None:
    delay_s = 5.0
    batch = events(120)
    paths = seed(database_url, receiver, fail_first={e.id: 1 for e in batch})
    roles = start_roles(fleet, delays_s=delay_s)
    burst = Burst(cluster.bootstrap, topics, batch, rate_per_s=60).start()
    burst.join()
    pairs = len(batch) * HOOKS_PER_ACCOUNT
    assert receiver.wait_for(lambda: receiver.count() >= pairs // 2, timeout_s=30)  # half the tasks held
    watched = [topics.retry_10s]
    victim = busiest_leader(cluster.bootstrap, watched)
    killed_at = time.time()
    cluster.stop_node(victim, kill=True)
    moved_s = wait_leaders_off(cluster.bootstrap, watched, victim)
    last = settle(receiver, database_url, paths, batch, ok_attempt=2)
    alive(roles)
    early = []
    for path in paths:
        by_event: dict[str, dict[int, float]] = {}
        for r in receiver.at(path):
            by_event.setdefault(r.event_id, {}).setdefault(r.attempt, r.at)
        for event_id, attempts in by_event.items():
            assert 1 in attempts and 2 in attempts, (path, event_id, attempts)
            if attempts[2] - attempts[1] < delay_s - 0.05:
                early.append((path, event_id, attempts[2] - attempts[1]))
    assert not early, early[:5]
    dupes = duplicates(receiver, paths)
    report("retry_held", pairs=pairs, lost=0, early=0, duplicates=dupes, leaders_moved_s=moved_s,
           last_pair_after_kill_s=last - killed_at)  # fmt: skip
    assert dupes <= pairs // 4, dupes


def max_gap_after(receiver: HttpsReceiver, paths: list[str], since: float) -> float:
    """The longest pause between two deliveries after `since`: how long the pipeline stalled."""
    times = sorted(r.at for p in paths for r in receiver.at(p) if r.at >= since)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
