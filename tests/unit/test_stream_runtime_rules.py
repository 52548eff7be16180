"""Rules of the stream runtime that every role gets: a consumer whose close hangs (librdkafka#4041) does not
hold a role's stop past the bound, and a member stuck joining its group while the broker answers makes its
role stop and exit for a restart. Each role's real loop on the in-memory broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from hookfleet.kafka import BrokerState
from hookfleet.settings import RecorderSettings, RetrySchedulerSettings
from hookfleet.shutdown import Shutdown
from hookfleet.stream import close as close_module
from hookfleet.stream import watchdog as watchdog_module
from hookfleet.stream.watchdog import EXIT_JOIN_STUCK, JoinWatchdog
from recorder.loop import Recorder
from retry_scheduler.scheduler import RetryScheduler
from schemas.topics import Topics
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer, RebalancedCommitConsumer
from tests.unit.test_recorder_loop import MemoryStore, attempt_bytes
from tests.unit.test_retry_scheduler_loop import now_ms, task_bytes

TOPICS = Topics.with_prefix("unit.")


@dataclass
class HangingCloseConsumer(MemoryConsumer):
    """`close` blocks until released, as librdkafka's did serving a last rebalance."""

    release: threading.Event = field(default_factory=threading.Event)
    close_started: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.close_started.set()
        self.release.wait(30)


Start = Callable[[MemoryConsumer, MemoryBroker, Shutdown, BrokerState], Callable[[], object]]


def scheduler_with(
    consumer: MemoryConsumer, broker: MemoryBroker, shutdown: Shutdown, state: BrokerState
) -> Callable[[], object]:
    settings = RetrySchedulerSettings(topic_prefix=TOPICS.prefix, group_id="unit.rs", drain_timeout_s=0.5)
    scheduler = RetryScheduler(settings, shutdown, consumer, MemoryProducer(broker), state)  # type: ignore[arg-type]

    def run() -> object:
        scheduler.run()
        return shutdown.exit_code

    return run


def recorder_with(
    consumer: MemoryConsumer, broker: MemoryBroker, shutdown: Shutdown, state: BrokerState
) -> Callable[[], object]:
    settings = RecorderSettings(topic_prefix=TOPICS.prefix, group_id="unit.rec", batch_wait_ms=10, drain_timeout_s=0.5)
    store = MemoryStore(broker, consumer)
    recorder = Recorder(settings, shutdown, consumer, MemoryProducer(broker), store, broker=state)  # type: ignore[arg-type]
    return recorder.run


ROLES: dict[str, Start] = {"retry-scheduler": scheduler_with, "recorder": recorder_with}


def run_on_thread(run: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(run()), daemon=True)
    thread.start()
    return thread, result


@pytest.mark.parametrize("role", sorted(ROLES))
def test_a_consumer_close_that_hangs_does_not_hold_the_stop_past_the_bound(
    role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a role whose consumer's close never returns, and a close bound of 0.3 s
    monkeypatch.setattr(close_module, "CLOSE_BOUND_S", 0.3)
    broker, shutdown = MemoryBroker(), Shutdown()
    consumer = HangingCloseConsumer(broker, f"unit.{role}")
    thread, result = run_on_thread(ROLES[role](consumer, broker, shutdown, BrokerState()))
    try:
        assert broker.wait(lambda: bool(consumer.assigned), timeout_s=5)
        # When it is asked to stop
        asked = time.monotonic()
        shutdown.requested.set()
        broker.wake()
        # Then it returns within the bound (plus its drain), with its close still hanging
        thread.join(5)
        assert not thread.is_alive(), f"{role} waited for the hanging close"
        assert consumer.close_started.is_set()
        assert time.monotonic() - asked < 3.0
        assert result == [0]
    finally:
        consumer.release.set()


@pytest.mark.parametrize("role", sorted(ROLES))
def test_a_member_stuck_joining_while_the_broker_answers_stops_its_role_for_a_restart(
    role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a role whose consumer's statistics say the broker is up and the group join never settles
    monkeypatch.setattr(watchdog_module, "JOIN_STUCK_S", 0.3)
    broker, shutdown = MemoryBroker(), Shutdown()
    state = BrokerState()
    state.up, state.join_state = True, "wait-join"
    thread, result = run_on_thread(ROLES[role](MemoryConsumer(broker, f"unit.{role}"), broker, shutdown, state))
    # Then it stops by itself and says why in its exit code
    thread.join(5)
    assert not thread.is_alive(), f"{role} kept running with a stuck join"
    assert result == [EXIT_JOIN_STUCK]
    assert shutdown.exit_code == EXIT_JOIN_STUCK


FINISHED: dict[str, tuple[str, bytes]] = {
    "retry-scheduler": (TOPICS.retry_10s, task_bytes(1, now_ms() - 10)),
    "recorder": (TOPICS.attempts, attempt_bytes(1)),
}
"""Per role, one message it finishes at once (a due retry task, an attempt record)."""


@pytest.mark.parametrize("role", sorted(ROLES))
def test_a_commit_that_did_not_take_is_taken_again_though_nothing_more_arrives(role: str) -> None:
    # Given a role whose first commit fails as under a rebalance, and one message it finishes
    broker, shutdown = MemoryBroker(), Shutdown()
    consumer = RebalancedCommitConsumer(broker, f"unit.{role}")
    topic, value = FINISHED[role]
    broker.append(topic, value, key=b"wh_1", partition=1)
    thread, _ = run_on_thread(ROLES[role](consumer, broker, shutdown, BrokerState()))
    try:
        # When that message is finished and its commit fails, with nothing more published
        assert broker.wait(lambda: consumer.failed == 1, timeout_s=5)
        # Then the partition's offset is committed all the same, while the role runs (not only at its stop)
        assert broker.wait(lambda: broker.committed.get(f"unit.{role}", {}).get((topic, 1)) == 1, timeout_s=5)
        assert thread.is_alive()
    finally:
        shutdown.requested.set()
        broker.wake()
        thread.join(5)


def test_the_watchdog_counts_only_time_not_joined_while_the_broker_is_up() -> None:
    watchdog = JoinWatchdog(bound_s=60.0)
    assert not watchdog.stuck([(True, None)], now=0.0)  # no statistics yet: joining, the clock starts
    assert not watchdog.stuck([(True, "wait-sync")], now=59.0)
    assert watchdog.stuck([(True, "wait-join")], now=60.0)
    # A broker outage restarts the clock: it is not a stuck join
    assert not watchdog.stuck([(False, "wait-join")], now=61.0)
    assert not watchdog.stuck([(True, "wait-join")], now=62.0)
    assert not watchdog.stuck([(True, "wait-join")], now=121.0)
    assert watchdog.stuck([(True, "wait-join")], now=122.0)
    # Joined: never stuck; each consumer of a role is watched on its own
    assert not watchdog.stuck([(True, "steady"), (True, "steady")], now=500.0)
    assert not watchdog.stuck([(True, "steady"), (True, "wait-join")], now=501.0)
    assert watchdog.stuck([(True, "steady"), (True, "wait-join")], now=561.0)
