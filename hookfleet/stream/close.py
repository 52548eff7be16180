"""Leaving the consumer group, bounded: every consumer of the fleet closes through `close_bounded`, and a
static member then leaves its group explicitly (hookfleet/stream/leave_group.py)."""

from __future__ import annotations

import logging
import threading

from hookfleet.kafka import Consumer, KafkaException, StaticMember
from hookfleet.settings import KafkaSecuritySettings
from hookfleet.stream.leave_group import leave_after_close

log = logging.getLogger(__name__)

CLOSE_BOUND_S = 10.0
"""How long leaving the group may take. librdkafka can hang for good when `close` serves a last rebalance
callback that asks for the rebalance protocol (confluentinc/librdkafka#4041; seen here when SIGTERM came
during a rebalance): past this bound the close is given up. Callers commit before closing, and the broker
drops the member after its session timeout (10 s), so nothing is lost; the process exits on time for the
orchestrator's grace period."""


def close_bounded(consumer: Consumer, role: str, bound_s: float | None = None) -> bool:
    """Close `consumer` (revoke callbacks run, the member leaves its group), waiting at most `bound_s`
    (`CLOSE_BOUND_S` when not given).

    True when it closed; False when it was still closing at the bound: the closing thread is a daemon and is
    left behind, so the process can still exit.

    A static member (`GroupConsumer.static`) that was not fenced then leaves its group with the member id read
    before the close, bounded too (`leave_group.LEAVE_BOUND_S`): librdkafka never sends that LeaveGroup."""
    static: StaticMember | None = getattr(consumer, "static", None)
    if static is not None and getattr(consumer, "fenced", False):
        static = None  # a replacement holds the instance id: nothing of ours to leave
    member_id = _member_id(consumer) if static is not None else None
    closed = _close(consumer, role, bound_s)
    if static is not None:
        leave_after_close(static, member_id, role, KafkaSecuritySettings())  # as client_config reads them
    return closed


def _member_id(consumer: Consumer) -> str | None:
    try:
        member_id: str | None = consumer.memberid()
    except (KafkaException, RuntimeError):  # already closed
        return None
    return member_id


def _close(consumer: Consumer, role: str, bound_s: float | None) -> bool:
    done = threading.Event()

    def close() -> None:
        try:
            consumer.close()
        except (KafkaException, RuntimeError) as exc:  # already closed, or the broker went away meanwhile
            log.warning("event=consumer_close_failed role=%s error=%s", role, exc)
        finally:
            done.set()

    bound = CLOSE_BOUND_S if bound_s is None else bound_s
    threading.Thread(target=close, name=f"{role}-consumer-close", daemon=True).start()
    if done.wait(bound):
        return True
    log.error("event=consumer_close_stuck role=%s bound_s=%.0f (final commit made)", role, bound)
    return False
