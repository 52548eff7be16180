"""A member stuck joining its consumer group is replaced: the stuck-join watchdog of every consumer.

A consumer whose group coordinator died during its join was seen to stay without an assignment for over
90 s while the broker answered (librdkafka 2.16, classic protocol): alive, so liveness passed, and unready,
which pages nobody while its peers carry the partitions. librdkafka's statistics name the group's join
state every `statistics.interval.ms`; when it has not been `steady` for `JOIN_STUCK_S` while a broker is
up, the role stops the normal way (commits what is finished, closes bounded) and exits with
`EXIT_JOIN_STUCK`, and its supervisor (Kubernetes, `hookfleet dispatcher --processes`) starts it afresh.
A broker outage is not a stuck join: the clock restarts when the broker comes back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from hookfleet.kafka import BrokerState
from hookfleet.shutdown import Shutdown

log = logging.getLogger(__name__)

JOIN_STUCK_S = 60.0
"""Longer than any join seen on a healthy cluster here (seconds, a few with a member restarting), shorter
than an on-call engineer would wait; well inside the 10 min a pod may stay unready before it pages."""
EXIT_JOIN_STUCK = 75
"""The exit code of a role that gave up a stuck join (EX_TEMPFAIL: try again)."""
STEADY = "steady"


@dataclass(slots=True)
class JoinWatchdog:
    """Pure: fed (broker up, join state) per consumer and the time, says when one is stuck."""

    bound_s: float = field(default_factory=lambda: JOIN_STUCK_S)
    _since: dict[int, float] = field(default_factory=dict)

    def stuck(self, consumers: Sequence[tuple[bool, str | None]], now: float) -> bool:
        """True when a consumer's group join has not been steady for `bound_s` while its broker was up.
        A consumer with no statistics yet (`None`) counts as joining."""
        for index, (broker_up, join_state) in enumerate(consumers):
            if not broker_up or join_state == STEADY:
                self._since.pop(index, None)
                continue
            if now - self._since.setdefault(index, now) >= self.bound_s:
                return True
        return False


def replace_if_stuck(watchdog: JoinWatchdog, role: str, brokers: Sequence[BrokerState], shutdown: Shutdown) -> bool:
    """Ask the role to stop and exit with `EXIT_JOIN_STUCK` when one of its consumers is stuck joining.
    Called from each role's loop; cheap (reads two plain values per consumer)."""
    if shutdown.requested.is_set() or not watchdog.stuck([(b.up, b.join_state) for b in brokers], time.monotonic()):
        return False
    log.error(
        "event=consumer_join_stuck role=%s bound_s=%.0f join_states=%s action=exit_for_restart exit_code=%d",
        role,
        watchdog.bound_s,
        ",".join(str(b.join_state) for b in brokers),
        EXIT_JOIN_STUCK,
    )
    shutdown.request("consumer_join_stuck", EXIT_JOIN_STUCK)
    return True
