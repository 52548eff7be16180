"""Per-webhook flow policy of the delivery stage: pure state and decisions, no I/O, time passed in.

Every delivery task of a webhook lands on one partition of `webhooks.deliveries` (key = webhook id), so
the dispatcher that owns that partition owns the webhook and decides everything about it locally: how many
requests run at once, at what rate, in which order, and when its work is deferred. A `Lane` is that
owner's state for one webhook.

When a task arrives (`admit`):
- *queue* it (the usual case);
- *park* it — write it to the first delay topic without counting an attempt — only when the webhook is
  slow or hanging: it has answered nothing (timeouts are no answer) for `park_after_s` while requests are
  open (`stalled`), or its queue is full and, at the pace the receiver can take (its concurrency over its
  response time, or its rate limit), the queue would take longer than `park_after_s` to drain, and that
  pace is the receiver's: it answers in `slow_after_s` or more, or its rate limit is what paces it (`slow`);
- *queue and hold back*: its queue is full but it keeps answering fast enough. That is backpressure, not
  parking: the caller pauses the partition until the queue is half empty.
An ordered (FIFO) webhook is never parked (a parked task would overtake nothing but be overtaken).

A webhook that has not answered this dispatcher for `PROBE_AFTER_S` (recent_answers.py) or ever is *probed*: one request
until its first answer, then its full concurrency. A burst to an endpoint that is gone (410), hangs or no
longer exists then costs its receiver one request, not a whole wave: before, the demo's retired endpoint
answered 410 to the 46 tasks of its opening burst, all sent before the first 410 came back. A receiver
that answers pays one response time on its first burst after a quiet spell.

Measured before this policy (one account, 3 webhooks answering in milliseconds, 5,000 events): a full
queue alone parked 21,350 deliveries and p50 latency was 13.9 s.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Job = TypeVar("Job")


class Admission(enum.Enum):
    QUEUE = "queue"
    PARK = "park"
    HOLD_BACK = "hold_back"  # queued, and the caller pauses the source partition


@dataclass(frozen=True, slots=True)
class LanePolicy:
    concurrency: int
    queue_limit: int
    park_after_s: float
    rate_limit_per_s: float | None = None
    fifo: bool = False
    slow_after_s: float = 1.0

    @property
    def effective_concurrency(self) -> int:
        return 1 if self.fifo else self.concurrency


class TokenBucket:
    """`rate` tokens a second, at most one second's worth banked (a burst of `rate`)."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = 1.0  # a fresh bucket lets one request through, not a second's burst
        self._at = now

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


LATENCY_WEIGHT = 0.1
"""Weight of the newest answer in a webhook's response-time average (about the last 20 answers)."""


@dataclass
class Lane(Generic[Job]):
    """One webhook's queue and state on its owning dispatcher."""

    policy: LanePolicy
    partition: tuple[str, int]
    created_at: float
    queue: deque[Job] = field(default_factory=deque)
    active: int = 0
    busy_since: float | None = None  # when the first open request of the current busy spell started
    last_progress: float = 0.0  # last request that finished with an answer (a timeout is no answer)
    held_back: bool = False  # this lane currently holds its partition paused
    parking: bool = False  # the last admission parked (logged once per spell)
    bucket: TokenBucket | None = None
    latency_s: float | None = None  # moving average of the time to an answer
    answers: int = 0
    waking: bool = False  # a timer will start the next request when the rate limit allows
    wake_in_s: float = 0.0  # set by `ready`: when the rate limit lets the next request start
    probing: bool = False  # not heard from lately: one request until its first answer (`PROBE_AFTER_S`)

    def __post_init__(self) -> None:
        if self.policy.rate_limit_per_s:
            self.bucket = TokenBucket(self.policy.rate_limit_per_s, self.created_at)

    # ---------------------------------------------------------------------------------- judgements

    def stalled(self, now: float) -> bool:
        """Requests are open and none has been answered for `park_after_s`: a hanging receiver."""
        if self.active == 0 or self.busy_since is None:
            return False
        return now - max(self.busy_since, self.last_progress) >= self.policy.park_after_s

    def capacity_per_s(self) -> float | None:
        """What the receiver can take: its concurrency over its response time, capped by its rate limit.

        Judged from the receiver's own answer time, not from how fast this dispatcher drained the queue:
        a dispatcher short of CPU drains every webhook slowly, and that must not make a fast receiver
        look slow (it would park healthy webhooks exactly when the fleet is busiest)."""
        capacity = None
        if self.latency_s is not None:
            capacity = self.policy.effective_concurrency / max(self.latency_s, 1e-3)
        if self.policy.rate_limit_per_s:
            capacity = min(capacity or math.inf, self.policy.rate_limit_per_s)
        return capacity

    def expected_wait_s(self, now: float) -> float:
        """How long the queue would take to drain at the pace the receiver can take."""
        if not self.queue:
            return 0.0
        capacity = self.capacity_per_s()
        if capacity is None:
            return math.inf if self.stalled(now) else 0.0  # no answer yet: not judged before it stalls
        return len(self.queue) / capacity

    def admit(self, now: float, job: Job) -> Admission:
        """Decide on an arriving job and queue it, unless it is to be parked (then the caller parks it)."""
        full = len(self.queue) >= self.policy.queue_limit
        if self.policy.fifo:
            admission = Admission.HOLD_BACK if full else Admission.QUEUE
        elif self.stalled(now) or (full and self.slow(now)):
            return Admission.PARK
        else:
            admission = Admission.HOLD_BACK if full else Admission.QUEUE
        self.parking = False  # a park spell ends when the lane takes a task again
        self.queue.append(job)
        return admission

    def slow(self, now: float) -> bool:
        """Its queue would take longer than `park_after_s` to drain, because of the receiver: it answers
        in `slow_after_s` or more, or its rate limit paces it.

        The answer time measured here includes this dispatcher's own delays, so a fast receiver behind a
        dispatcher short of CPU reads 100-300 ms; the floor keeps such a receiver held back, not parked
        (measured: without it, one account's burst to 3 receivers answering in milliseconds parked 1,296
        of 15,000 deliveries on a loaded 2-core machine). Nor is a receiver judged on its first two waves of
        answers: after a restart, 150 new TLS connections at once read as 1.1 s answers for a few hundred ms."""
        if self.expected_wait_s(now) <= self.policy.park_after_s:
            return False
        rate_bound = self.policy.rate_limit_per_s is not None and (
            self.latency_s is None or self.policy.rate_limit_per_s < self.policy.effective_concurrency / self.latency_s
        )
        judged = self.answers >= 2 * self.policy.effective_concurrency  # the first wave pays the TLS handshakes
        return rate_bound or (judged and self.latency_s is not None and self.latency_s >= self.policy.slow_after_s)

    def below_release_mark(self) -> bool:
        """A lane holding its partition back lets go once its queue is half empty."""
        return len(self.queue) <= self.policy.queue_limit // 2

    # ---------------------------------------------------------------------------------- transitions

    def ready(self, now: float) -> list[Job]:
        """Take the queued jobs that may start now, as many as the concurrency and the rate limit allow, and
        count them started. When the rate limit is what stops it, `wake_in_s` says when to ask again (and
        `waking` is set until then); otherwise `wake_in_s` is 0."""
        jobs: list[Job] = []
        self.wake_in_s = 0.0
        limit = 1 if self.probing else self.policy.effective_concurrency
        while self.queue and self.active < limit and not self.waking:
            if self.bucket is not None:
                wait = self.bucket.take(now)
                if wait > 0:
                    self.waking = True
                    self.wake_in_s = wait
                    break
            jobs.append(self.queue.popleft())
            self.started(now)
        return jobs

    def started(self, now: float) -> None:
        if self.active == 0:
            self.busy_since = now
        self.active += 1

    def finished(self, now: float, answered: bool, elapsed_s: float = 0.0, take_next: bool = False) -> list[Job]:
        """One open request ended (a timeout is no answer). With `take_next`, returns the queued jobs that
        may start now (`ready`) in the same call."""
        self.active -= 1
        if answered:
            self.probing = False
            self.last_progress = now
            self.answers += 1
            previous = self.latency_s
            self.latency_s = elapsed_s if previous is None else previous + LATENCY_WEIGHT * (elapsed_s - previous)
        if self.active == 0:
            self.busy_since = None
        return self.ready(now) if take_next and self.queue else []

    def idle(self) -> bool:
        return self.active == 0 and not self.queue and not self.waking
