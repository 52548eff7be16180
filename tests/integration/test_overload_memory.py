"""The overload memory bound: a backlog far larger than `HOOKFLEET_MAX_IN_FLIGHT` waits behind stalled
receivers, and the dispatcher's memory stays within what the setting allows (the worst case the manifests'
limits are sized from, deploy/README.md#memory-and-in-flight, from the idle RSS measured here); once the
receivers answer again, everything is delivered."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from producer.publisher import build_event
from schemas.catalog import EventType
from schemas.topics import Topics
from tests.integration.test_delivery_flow import end_offsets
from tests.integration.test_dispatcher import publisher_for
from tests.support.fleet import Fleet, seed_account, seed_webhook
from tests.support.group_offsets import fleet_idle
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until
from tests.unit.test_k8s_render import IDLE_MIB, MIB, dispatcher_worst_case_bytes

pytestmark = pytest.mark.integration

MAX_IN_FLIGHT = 20
WEBHOOKS = 4
EVENTS = 150
BLOB_BYTES = 200 * 1024
"""Payload per event: 600 tasks of ~200 KiB, so holding the backlog would cost ~10 x what the bound allows."""


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")


def test_a_backlog_behind_stalled_receivers_holds_the_dispatchers_memory_within_max_in_flight(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_warm")
    seed_webhook(database_url, "acct_warm", receiver.expect("/warm"), [EventType.MESSAGE_READ.value])
    seed_account(database_url, "acct_big")
    stalled = [f"/stalled/{n}" for n in range(WEBHOOKS)]
    for path in stalled:
        seed_webhook(database_url, "acct_big", receiver.expect(path, hang=True), [EventType.MESSAGE_SENT.value])
    env = {
        "HOOKFLEET_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        # Only the global bound is under test: no parking of the stalled webhooks, no per-webhook hold, and no
        # attempt times out while they stall (the stall lasts seconds).
        "HOOKFLEET_PARK_AFTER_S": "300",
        "HOOKFLEET_PER_ENDPOINT_QUEUE": "100000",
        "HOOKFLEET_DELIVERY_TIMEOUT_S": "60",
    }
    dispatcher = fleet.start_dispatcher(**env)
    pid = dispatcher.proc.pid
    with publisher_for(kafka_bootstrap, topics) as publisher:
        # One delivery first, so "idle" includes the delivery client's set-up.
        publisher.publish_and_wait(build_event("acct_warm", EventType.MESSAGE_READ, {"n": 0}))
        wait_until(lambda: receiver.at("/warm"), 30, "the warm-up delivery")
        idle = rss_bytes(pid)
        bound = dispatcher_worst_case_bytes(env) - IDLE_MIB * MIB + idle
        peak = idle

        def within_bound(condition: Callable[[], bool]) -> Callable[[], bool]:
            """`condition`, after checking the dispatcher's RSS against the bound at this moment."""

            def checked() -> bool:
                nonlocal peak
                rss = rss_bytes(pid)
                peak = max(peak, rss)
                assert rss <= bound, (
                    f"dispatcher RSS {rss / MIB:.0f} MiB passed {bound / MIB:.0f} MiB, what "
                    f"HOOKFLEET_MAX_IN_FLIGHT={MAX_IN_FLIGHT} allows (idle {idle / MIB:.0f} MiB); "
                    f"received {receiver.count() - 1} of {EVENTS * WEBHOOKS}"
                )
                return condition()

            return checked

        blob = "x" * BLOB_BYTES
        events = [build_event("acct_big", EventType.MESSAGE_SENT, {"n": n, "blob": blob}) for n in range(EVENTS)]
        for event in events:
            publisher.publish(event)
        assert publisher.flush() == 0

    # The whole backlog fanned out and waiting in webhooks.deliveries, the delivery stage paused at its bound.
    wait_until(
        within_bound(
            lambda: (
                end_offsets(kafka_bootstrap, topics.deliveries) == EVENTS * WEBHOOKS + 1  # and the warm-up's
                and "event=paused stage=delivery" in dispatcher.log_text()
            )
        ),
        45,
        lambda: (
            f"the backlog to wait behind the bound: {end_offsets(kafka_bootstrap, topics.deliveries) - 1} of "
            f"{EVENTS * WEBHOOKS} tasks fanned out, {receiver.count() - 1} requests open; see the log"
        ),
    )
    open_requests = receiver.count() - 1
    assert 0 < open_requests < EVENTS * WEBHOOKS // 4, "the backlog is not much larger than what was taken in"
    stalled_hwm = rss_bytes(pid, "VmHWM")  # between the samples too
    assert stalled_hwm <= bound, f"dispatcher peak RSS {stalled_hwm / MIB:.0f} MiB passed {bound / MIB:.0f} MiB"

    receiver.release_hung()
    owed = {(path, event.id) for path in stalled for event in events}
    # Every task finished (its 2xx attempt record acknowledged) and none parked: every request was answered.
    wait_until(
        lambda: fleet_idle(kafka_bootstrap, topics, ("dispatcher",)),
        60,
        lambda: f"every delivery after the receivers recovered ({receiver.count() - 1} of {len(owed)} requests)",
    )
    assert end_offsets(kafka_bootstrap, topics.retry_10s) == 0, "a stalled delivery was parked or retried"
    delivered = {(r.path, r.event_id) for r in receiver.received if r.path in stalled}
    assert delivered == owed  # nothing lost
    # Not bounded here: once the partitions resume, the consumer's prefetch of the remaining backlog passes
    # queued.max.messages.kbytes (bench/RESULTS.md, "Overload memory"); shown, not asserted.
    print(
        f"idle {idle / MIB:.0f} MiB, bound {bound / MIB:.0f} MiB; backlog waiting with {open_requests} requests open: "
        f"peak {stalled_hwm / MIB:.0f} MiB; after the drain {rss_bytes(pid, 'VmHWM') / MIB:.0f} MiB"
    )
