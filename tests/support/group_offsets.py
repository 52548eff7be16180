"""Where a role's consumer group stands on real topics: the positive signal that a role has processed
everything written so far, which a test waits for before asserting that something did NOT happen."""

from __future__ import annotations

from hookfleet.kafka import TopicPartition, new_consumer
from schemas.topics import Topics


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    """Per partition of `topic`, the offset the next message written will get."""
    consumer = new_consumer(bootstrap, "hookfleet-tests-watermarks")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def behind(bootstrap: str, group_id: str, *topics: str) -> list[str]:
    """Each non-empty partition of `topics` on which `group_id` has not committed the high watermark, as
    `topic[partition] committed/high`: what a test that waited in vain shows."""
    consumer = new_consumer(bootstrap, group_id)
    lagging: list[str] = []
    try:
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            tps = [TopicPartition(topic, p) for p in partitions]
            committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
            for tp in tps:
                _low, high = consumer.get_watermark_offsets(tp, timeout=10)
                if high > 0 and committed[tp.partition] != high:
                    lagging.append(f"{topic}[{tp.partition}] {committed[tp.partition]}/{high}")
        return lagging
    finally:
        consumer.close()


def committed_to_end(bootstrap: str, group_id: str, *topics: str) -> bool:
    """`group_id` has committed, on every non-empty partition of each of `topics`, the high watermark: it
    has processed (and, for the roles, finished) every message written to them so far."""
    return not behind(bootstrap, group_id, *topics)


ROLES = ("dispatcher", "retry-scheduler", "recorder")


def _consumed(topics: Topics) -> dict[str, tuple[str, ...]]:
    """What each role consumes, by role name."""
    return {
        "dispatcher": (topics.events, topics.deliveries),
        "retry-scheduler": topics.retries,
        "recorder": (topics.attempts, topics.dead),
    }


def fleet_idle(bootstrap: str, topics: Topics, roles: tuple[str, ...] = ROLES) -> bool:
    """Every one of `roles` running on `topics` (default group ids) has finished everything written to
    its topics so far, and nothing was written while this was checked: an extra delivery or a duplicate,
    had one been made, has already arrived. (A task the retry scheduler still holds is uncommitted, so
    the fleet is not idle then.) Name only the roles the test runs: a role not running never catches up."""
    consumed = _consumed(topics)
    groups = {f"{topics.prefix}hookfleet-{role}": consumed[role] for role in roles}
    before = {topic: high_watermarks(bootstrap, topic) for names in groups.values() for topic in names}
    if not all(committed_to_end(bootstrap, group, *names) for group, names in groups.items()):
        return False
    return before == {topic: high_watermarks(bootstrap, topic) for topic in before}


def fleet_lag(bootstrap: str, topics: Topics, roles: tuple[str, ...] = ROLES) -> str:
    """Where `fleet_idle` fails: each role's partitions not committed to the end (a wait's description)."""
    consumed = _consumed(topics)
    lagging = {role: behind(bootstrap, f"{topics.prefix}hookfleet-{role}", *consumed[role]) for role in roles}
    return "; ".join(f"{role} behind on {', '.join(parts)}" for role, parts in lagging.items() if parts) or "no lag"
