"""A dispatcher beyond the partition count is ready: readiness never depends on owning a partition.

At KEDA's maxReplicaCount (= partitions) a rollout's surge pod (maxSurge 1, maxUnavailable 0) is consumer
N+1 for N partitions and gets none. Were readiness "owns partitions", it would never turn ready, the rollout
would never proceed and the disruption budget would block node drains. Ownership is the
hookfleet_partitions_assigned gauge instead.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka.admin import AdminClient

from hookfleet.kafka import client_config
from hookfleet.settings import DispatcherSettings
from schemas.topics import Topics
from tests.conftest import TEST_PARTITIONS
from tests.support.fleet import Fleet, Role
from tests.support.ports import free_port, scrape

pytestmark = pytest.mark.integration


def readyz(port: int) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return int(resp.status), json.loads(resp.read())["reason"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["reason"]
    except (urllib.error.URLError, OSError) as exc:
        return None, repr(exc)


def group_members(bootstrap: str, group: str) -> dict[str, int]:
    """member id -> how many partitions the group coordinator assigned to it."""
    admin = AdminClient(client_config(bootstrap))
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {m.member_id: len(m.assignment.topic_partitions) for m in description.members}


def test_a_dispatcher_beyond_the_partition_count_turns_ready_and_reports_no_partitions(
    fleet: Fleet, kafka_bootstrap: str, topics: Topics
) -> None:
    # Given N partitions and N + 1 delivery-stage dispatchers in one group (one consumer each).
    group = DispatcherSettings(topic_prefix=topics.prefix).group_id
    ports = [free_port() for _ in range(TEST_PARTITIONS + 1)]
    dispatchers: list[Role] = [
        fleet.start("dispatcher", f"dispatcher-{i}", HOOKFLEET_STAGES="delivery", HOOKFLEET_METRICS_PORT=str(port))
        for i, port in enumerate(ports)
    ]

    # When the group has settled (cooperative rebalancing moves partitions in steps): one partition per
    # member, and one member with none.
    settled = [0] + [1] * TEST_PARTITIONS
    deadline = time.monotonic() + 60
    members: dict[str, int] = {}
    while time.monotonic() < deadline:
        members = group_members(kafka_bootstrap, group)
        if sorted(members.values()) == settled:
            break
        assert all(d.proc.poll() is None for d in dispatchers), fleet.logs()
        time.sleep(0.5)
    else:
        raise AssertionError(f"group {group} never settled as {settled} over {len(ports)} members: {members}")

    # Then every dispatcher answers /readyz with 200, the one without a partition included.
    answers: dict[int, tuple[int | None, str]] = {}
    while time.monotonic() < deadline + 30:
        answers = {port: readyz(port) for port in ports}
        if all(status == 200 for status, _ in answers.values()):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"not every dispatcher turned ready: {answers}\n{fleet.logs()}")

    # And ownership stays visible: exactly one reports no partition.
    owned = sorted(scrape(port)["hookfleet_partitions_assigned"] for port in ports)
    assert owned == [0.0] + [1.0] * TEST_PARTITIONS, owned
