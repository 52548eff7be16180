"""Static group membership with real dispatchers on the real broker (HOOKFLEET_INSTANCE_ID).

- kill -9 during a burst and a restart under the same name: the process gets its own partitions back, the
  other dispatcher is not rebalanced, its first delivery comes long before the session timeout, and nothing
  is lost (a dynamic member would wait for the dead one's session, 10 s, first);
- SIGTERM of one of two static dispatchers: the other owns every partition well before the session timeout
  (librdkafka sends no LeaveGroup for a static member: hookfleet/stream/leave_group.py does);
- the same name twice: the older process exits with a line naming the setting.
Run with `-s` to see the figures.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import AdminClient

from hookfleet.kafka import PartitionKey, client_config
from hookfleet.settings import CommonSettings, DispatcherSettings, RecorderSettings, RetrySchedulerSettings
from hookfleet.stream.membership import EXIT_FENCED
from producer.publisher import EventPublisher, build_event
from schemas.catalog import PRODUCT_TYPES, sample_data
from schemas.topics import Topics
from tests.conftest import TEST_PARTITIONS
from tests.support.fleet import Fleet, Role, seed_account, seed_webhook
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_S = 10.0  # hookfleet/kafka.py consumer_config
ACCOUNTS = 12
TYPES = list(PRODUCT_TYPES)


def assignment_by_instance(bootstrap: str, group: str) -> dict[str, set[PartitionKey]]:
    """group.instance.id (member id for a dynamic member) -> the partitions the coordinator assigned it."""
    admin = AdminClient(client_config(bootstrap))
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {
        member.group_instance_id or member.member_id: {
            (tp.topic, tp.partition) for tp in member.assignment.topic_partitions
        }
        for member in description.members
    }


def wait_until(what: str, condition: object, timeout_s: float) -> float:
    """Poll `condition` (a callable) until true; returns when (time.monotonic()); fails loudly at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s:g}s")


def all_partitions(topics: Topics) -> set[PartitionKey]:
    return {(topic, p) for topic in (topics.events, topics.deliveries) for p in range(TEST_PARTITIONS)}


def owned_by(assignment: dict[str, set[PartitionKey]], prefix: str) -> set[PartitionKey]:
    return {tp for member, tps in assignment.items() if member.startswith(prefix) for tp in tps}


def split_between(assignment: dict[str, set[PartitionKey]], partitions: set[PartitionKey], *names: str) -> bool:
    """Every partition owned, once, and only by members of `names`, each of which owns some."""
    owned = [tp for tps in assignment.values() for tp in tps]
    return (
        len(owned) == len(set(owned))
        and set(owned) == partitions
        and all(any(m.startswith(f"{n}.") for n in names) for m in assignment)
        and all(owned_by(assignment, f"{n}.") for n in names)
    )


def start(fleet: Fleet, name: str, instance: str | None, **extra: str) -> Role:
    env = {"HOOKFLEET_RETRY_DELAYS_S": "[1,1,1]", **extra}
    if instance is not None:
        env["HOOKFLEET_INSTANCE_ID"] = instance
    return fleet.start("dispatcher", name, **env)


def seed(database_url: str, receiver: HttpsReceiver) -> list[str]:
    accounts = [seed_account(database_url, f"acct_{i:02d}") for i in range(ACCOUNTS)]
    for account in accounts:
        _, secret = seed_webhook(database_url, account, receiver.url(f"/{account}"), [t.value for t in TYPES])
        receiver.expect(f"/{account}", secret=secret)
    return accounts


def test_kill_9_and_restart_under_the_same_name_takes_its_partitions_back_at_once(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    group = DispatcherSettings(topic_prefix=topics.prefix).group_id
    partitions = all_partitions(topics)
    accounts = seed(database_url, receiver)
    marker = seed_account(database_url, "acct_marker")
    _, secret = seed_webhook(database_url, marker, receiver.url("/marker"), [t.value for t in TYPES])
    receiver.expect("/marker", secret=secret)
    fleet.start("retry-scheduler")
    # `two` runs the fan-out stage only, so every delivery after the kill is the restarted process's own.
    one = start(fleet, "one", "one")
    two = start(fleet, "two", "two", HOOKFLEET_STAGES="fanout")
    wait_until(
        "two dispatchers split the partitions",
        lambda: split_between(assignment_by_instance(kafka_bootstrap, group), partitions, "one", "two"),
        60,
    )
    before = assignment_by_instance(kafka_bootstrap, group)
    publisher = EventPublisher(CommonSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topics.prefix))
    owed: set[tuple[str, str]] = set()
    try:
        for i in range(3000):
            account = accounts[i % len(accounts)]
            event_type = TYPES[i % len(TYPES)]
            event = build_event(account, event_type, sample_data(event_type))
            publisher.publish(event)
            owed.add((event.id, f"/{account}"))
        publisher.flush()
        receiver.wait_for(lambda: len(receiver.received) >= 300, timeout_s=60)
        assert len(receiver.received) >= 300, "the burst never started"
        assigned_lines = two.log_text().count("event=partitions_assigned")
        one.proc.kill()
        one.proc.wait(10)
        killed_at = time.time()

        restarted_at = time.time()  # measured from the restart's process start
        again = start(fleet, "one-again", "one")
        # An event published as the restart starts, to a webhook with no backlog: its arrival bounds the restarted
        # process's first delivery (the receiver may still be reading requests the killed process sent).
        event = build_event(marker, TYPES[0], sample_data(TYPES[0]))
        publisher.publish(event)
        publisher.flush()
        owed.add((event.id, "/marker"))
        wait_until("the restarted dispatcher delivered", lambda: receiver.at("/marker"), 60)
        first_delivery = receiver.at("/marker")[0].at - restarted_at
        assert again.wait_log("event=partitions_assigned", 30)
        after = assignment_by_instance(kafka_bootstrap, group)
        assert wait_until(
            "every owed delivery arrived",
            lambda: owed <= {(r.event_id, r.path) for r in receiver.received},
            120,
        )
    finally:
        publisher.close()
    print(
        f"\nstatic restart after kill -9: first delivery {first_delivery:.2f} s after the restart's start"
        f" ({restarted_at - killed_at:.2f} s after the kill); deliveries {len(receiver.received)} for {len(owed)} owed"
    )
    assert owned_by(after, "one.") == owned_by(before, "one."), (before, after)
    assert owned_by(after, "two.") == owned_by(before, "two."), (before, after)
    assert two.log_text().count("event=partitions_assigned") == assigned_lines, "the other dispatcher was rebalanced"
    assert first_delivery < SESSION_TIMEOUT_S - 2, f"first delivery {first_delivery:.2f} s after the restart"
    assert all(r.signature_ok for r in receiver.received)


def test_sigterm_of_a_static_dispatcher_hands_its_partitions_over_before_the_session_timeout(
    fleet: Fleet, kafka_bootstrap: str, topics: Topics
) -> None:
    group = DispatcherSettings(topic_prefix=topics.prefix).group_id
    partitions = all_partitions(topics)
    stays = start(fleet, "stays", "stays")
    goes = start(fleet, "goes", "goes")
    wait_until(
        "two dispatchers split the partitions",
        lambda: split_between(assignment_by_instance(kafka_bootstrap, group), partitions, "stays", "goes"),
        60,
    )
    stop_sent = time.monotonic()
    assert goes.terminate() == 0, goes.log_text()[-3000:]
    stopped = time.monotonic()
    leave_line = "event=group_left" in goes.log_text()
    handed = wait_until(
        "the remaining dispatcher owns every partition",
        lambda: split_between(assignment_by_instance(kafka_bootstrap, group), partitions, "stays"),
        30,
    )
    print(
        f"\nstatic member SIGTERM: stopped in {stopped - stop_sent:.2f} s; the other owned every partition"
        f" {handed - stopped:.2f} s after its exit"
    )
    assert handed - stopped < SESSION_TIMEOUT_S / 2, f"{handed - stopped:.2f} s"
    assert leave_line, goes.log_text()[-3000:]
    assert stays.proc.poll() is None


def test_the_same_name_twice_stops_the_older_with_a_line_naming_the_setting(fleet: Fleet) -> None:
    older = fleet.start_dispatcher("older", HOOKFLEET_INSTANCE_ID="twin")
    newer = fleet.start_dispatcher("newer", HOOKFLEET_INSTANCE_ID="twin")
    code = older.proc.wait(45)
    log = older.log_text()
    assert code == EXIT_FENCED, log[-3000:]
    assert "event=consumer_fenced" in log and "HOOKFLEET_INSTANCE_ID" in log and "consumer=twin.dispatcher." in log
    assert "Traceback" not in log, log[-3000:]
    assert "event=group_left" not in log  # the newer holds the name: never removed
    assert newer.proc.poll() is None, newer.log_text()[-3000:]


def test_every_consuming_role_joins_under_its_name_and_leaves_on_sigterm(
    fleet: Fleet, kafka_bootstrap: str, topics: Topics
) -> None:
    """The recorder, the retry scheduler and `dispatcher --processes 2` under one instance name: each consumer
    its own id, and each gone from its group at once after SIGTERM."""
    groups = {
        RecorderSettings(topic_prefix=topics.prefix).group_id: {"node-1.recorder"},
        RetrySchedulerSettings(topic_prefix=topics.prefix).group_id: {"node-1.retry-scheduler"},
        DispatcherSettings(topic_prefix=topics.prefix).group_id: {
            f"node-1.p{k}.dispatcher.{stage}" for k in (0, 1) for stage in ("fanout", "delivery")
        },
    }
    roles = [
        fleet.start("recorder", HOOKFLEET_INSTANCE_ID="node-1"),
        fleet.start("retry-scheduler", HOOKFLEET_INSTANCE_ID="node-1"),
        fleet.start("dispatcher", args=("--processes", "2"), HOOKFLEET_INSTANCE_ID="node-1"),
    ]

    def settled(group: str, names: set[str]) -> bool:
        """Every member named and owning partitions: the join is complete on the members' side too (a member
        still waiting for its JoinGroup answer is listed by the coordinator but knows no member id yet)."""
        assignment = assignment_by_instance(kafka_bootstrap, group)
        return set(assignment) == names and all(assignment.values())

    for group, names in groups.items():
        wait_until(f"{group} has {sorted(names)}", lambda g=group, n=names: settled(g, n), 60)
    for role in roles:
        assert role.terminate() == 0, role.log_text()[-3000:]
    stopped = time.monotonic()
    for group in groups:
        wait_until(f"{group} is empty", lambda g=group: not assignment_by_instance(kafka_bootstrap, g), 30)
    emptied = time.monotonic() - stopped
    logs = "\n".join(role.log_text() for role in roles)
    # Six consumers, each left explicitly; except that a close which served a last rebalance (the first process's
    # leave rebalances the second's consumers, as a dynamic member's leave does) may be given up at its bound
    # (hookfleet/stream/close.py), and then the coordinator has dropped that member already.
    assert logs.count("event=group_left") + logs.count("event=consumer_close_stuck") == 6, logs[-4000:]
    assert "event=group_left role=recorder" in logs and "event=group_left role=retry-scheduler" in logs
    assert emptied < SESSION_TIMEOUT_S / 2, f"the groups emptied {emptied:.2f} s after the last exit"
