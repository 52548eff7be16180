"""Static group membership: the stable name (`group.instance.id`) each consumer joins its group with.

Why: a consumer that joins with a new dynamic member id after a crash waits for the dead member's session
(10 s) to time out before the group rebalances. With a stable `group.instance.id` the coordinator knows
the restarted process as the same member and hands it its own partitions back at once, without moving
anyone else's. The stable name comes from `HOOKFLEET_INSTANCE_ID` (in Kubernetes the pod name, which a
container restarted in place keeps); unset, members are dynamic as before: two processes on one host must
never fence each other, so the host name is not a default.

One process runs several consumers (the dispatcher's stages), and `hookfleet dispatcher --processes N` runs
N processes under one instance id, so each consumer's id is `<instance>[.p<k>].<role>[.<stage>]`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hookfleet.kafka import BrokerState
from hookfleet.shutdown import Shutdown

log = logging.getLogger(__name__)

SETTING = "HOOKFLEET_INSTANCE_ID"
"""Where the instance id comes from (validated in hookfleet/settings.py `MembershipSettings`)."""

EXIT_FENCED = 78
"""The exit code of a role fenced by another process with its instance id (EX_CONFIG: fix the setting)."""


def process_instance_id(instance_id: str | None, index: int) -> str | None:
    """The instance id of process `index` of `hookfleet dispatcher --processes N` (each child its own)."""
    return None if instance_id is None else f"{instance_id}.p{index}"


def consumer_instance_id(instance_id: str | None, role: str, stage: str | None = None) -> str | None:
    """The `group.instance.id` of one consumer of `role` (and `stage`), None for dynamic membership."""
    if instance_id is None:
        return None
    return ".".join(part for part in (instance_id, role, stage) if part)


def exit_if_fenced(role: str, brokers: Sequence[BrokerState], shutdown: Shutdown) -> bool:
    """Stop the role with `EXIT_FENCED` when the group fenced one of its consumers: another process
    joined with the same `group.instance.id`, and librdkafka has closed this one for good (a fatal error).
    Called from each role's loop, beside the stuck-join watchdog; cheap (reads a plain value per consumer)."""
    fenced = [b.instance_id for b in brokers if b.fenced]
    if shutdown.requested.is_set() or not fenced:
        return False
    log.error(
        "event=consumer_fenced role=%s consumer=%s setting=%s action=exit exit_code=%d"
        " hint='another process joined the group with the same id: give each process its own %s (the pod name)'",
        role,
        fenced[0],
        SETTING,
        EXIT_FENCED,
        SETTING,
    )
    shutdown.request("consumer_fenced", EXIT_FENCED)
    return True
