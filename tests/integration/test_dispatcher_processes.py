"""`hookfleet dispatcher --processes N`: N dispatchers in one consumer group under one parent."""

from __future__ import annotations

import os
import re
import signal

import pytest

from producer.publisher import build_event
from schemas.catalog import EventType
from schemas.topics import Topics
from tests.integration.test_dispatcher import publisher_for
from tests.support.fleet import Fleet, Role, seed_account, seed_webhook
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def child_pids(parent: Role) -> list[int]:
    found = re.search(r"event=dispatcher_processes_started count=\d+ pids=([\d,]+)", parent.log_text())
    assert found, parent.log_text()[-3000:]
    return [int(p) for p in found.group(1).split(",")]


def assigned_pids(parent: Role) -> set[int]:
    """Children that logged an assignment of at least one partition."""
    found = re.findall(r"pid=(\d+) \S+ event=partitions_assigned(?: stage=\S+)? count=[1-9]", parent.log_text())
    return {int(pid) for pid in found}


def started(parent: Role) -> str:
    return f"the children to start; the log ends:\n{parent.log_text()[-3000:]}"


def assigned(parent: Role) -> str:
    return f"every child to get partitions; the log ends:\n{parent.log_text()[-4000:]}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_processes_share_the_partitions_deliver_and_stop_together_on_sigterm(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_a")
    _, secret = seed_webhook(database_url, "acct_a", receiver.url("/hook"), [EventType.MESSAGE_SENT])
    receiver.expect("/hook", secret=secret)
    parent = fleet.start("dispatcher", args=("--processes", "2"))
    wait_until(lambda: "dispatcher_processes_started" in parent.log_text(), 30, lambda: started(parent))
    pids = child_pids(parent)
    assert len(pids) == 2 and parent.proc.pid not in pids
    wait_until(lambda: assigned_pids(parent) == set(pids), 60, lambda: assigned(parent))

    with publisher_for(kafka_bootstrap, topics) as publisher:
        for n in range(20):
            publisher.publish(build_event(f"acct_{n}", EventType.MESSAGE_SENT, {}))
        publisher.publish_and_wait(build_event("acct_a", EventType.MESSAGE_SENT, {}))
    assert receiver.wait_for(lambda: len(receiver.at("/hook")) == 1)

    assert parent.terminate() == 0, parent.log_text()[-4000:]
    assert not any(alive(pid) for pid in pids)
    log = parent.log_text()
    assert log.count("event=dispatcher_stopped") == 2 and "Traceback" not in log
    assert "event=dispatcher_processes_exit code=0" in log


def test_a_child_that_dies_stops_the_unit_with_its_exit_code(fleet: Fleet, topics: Topics) -> None:
    parent = fleet.start("dispatcher", args=("--processes", "2"))
    wait_until(lambda: "dispatcher_processes_started" in parent.log_text(), 30, lambda: started(parent))
    pids = child_pids(parent)
    wait_until(lambda: assigned_pids(parent) == set(pids), 60, lambda: assigned(parent))
    os.kill(pids[0], signal.SIGKILL)
    assert parent.proc.wait(40) == 128 + signal.SIGKILL
    assert not alive(pids[1])
    assert "event=dispatcher_stopped" in parent.log_text()  # the survivor drained before the parent exited
