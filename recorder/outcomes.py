"""Per-webhook outcomes of the last minutes, kept by the recorder so the alerts can ask fleet questions
without a webhook label on any hot metric. No I/O.

- "What share of the webhooks we tried recently had at least one success?" pages only when many webhooks
  fail at once (the fleet is broken), not when one customer's endpoint is down.
- "What share of the accounts we tried had at least one success?" is what the fleet page asks: one account
  with forty dead webhooks is one account, not forty.
- "Did the endpoints that were healthy keep succeeding?" is the success SLI: each minute, every webhook
  that had a success in the `HEALTHY_HORIZON_S` (one hour) before that minute and was tried in it counts one
  good minute (a success in it) or one bad minute (only failures). Volume does not weigh (a customer's
  replay or burst is one webhook-minute), an endpoint dead for an hour no longer counts, and an egress
  outage turns every healthy webhook's minute bad for an hour: long enough to page on, while the
  account-share page (DeliveriesFailingFleetWide) holds for as long as it lasts.
- "Which webhooks fail most?" is answered by a bounded top-N gauge for the dashboard.

Attempts are keyed by webhook id on `webhooks.attempts`, so each webhook is counted by exactly one
recorder replica: the fleet's webhook totals are the sum over replicas. An account's webhooks may spread
over replicas, so summed account counts count such an account once per replica in both the attempted and
the succeeding count: the share stays a fair fleet-wide judgement.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 600.0
SLOT_S = 60.0
HEALTHY_HORIZON_S = 3600.0


@dataclass(frozen=True, slots=True)
class OutcomeSummary:
    attempted: int
    """Distinct webhooks with an attempt in the window."""
    succeeding: int
    """Distinct webhooks with a success in the window."""
    worst: list[tuple[str, int]]
    """Up to `top` (webhook id, failed attempts), most failures first; only webhooks that failed."""
    accounts_attempted: int = 0
    """Distinct accounts with an attempt in the window."""
    accounts_succeeding: int = 0
    """Distinct accounts with a success in the window."""


@dataclass(frozen=True, slots=True)
class HealthyMinutes:
    """Webhook-minutes of webhooks that were healthy before the minute (the success SLI's events)."""

    good: int = 0
    bad: int = 0


@dataclass(slots=True)
class _Slot:
    start: float
    failures: dict[str, int] = field(default_factory=dict)
    succeeded: set[str] = field(default_factory=set)
    accounts: set[str] = field(default_factory=set)
    accounts_succeeded: set[str] = field(default_factory=set)
    judged: bool = False


class WebhookOutcomes:
    """Attempts of the last `window_s` seconds, in `slot_s` slots (memory: one entry per webhook per slot)."""

    def __init__(
        self, window_s: float = WINDOW_S, slot_s: float = SLOT_S, healthy_horizon_s: float = HEALTHY_HORIZON_S
    ) -> None:
        self._window_s = window_s
        self._slot_s = slot_s
        self._healthy_horizon_s = healthy_horizon_s
        self._slots: deque[_Slot] = deque()
        # webhook -> start of the last judged slot with a success (one float per webhook, pruned past the horizon)
        self._last_success: dict[str, float] = {}

    def add(self, webhook_id: str, ok: bool, now: float, account_id: str | None = None) -> None:
        slot = self._current(now)
        if account_id is not None:
            slot.accounts.add(account_id)
            if ok:
                slot.accounts_succeeded.add(account_id)
        if ok:
            slot.succeeded.add(webhook_id)
            slot.failures.setdefault(webhook_id, 0)
        else:
            slot.failures[webhook_id] = slot.failures.get(webhook_id, 0) + 1

    def judge_closed_minutes(self, now: float) -> HealthyMinutes:
        """The success SLI's webhook-minutes of every slot that ended since the last call (each slot once, in
        order: called every few seconds, long before a slot expires a window after it ended).

        A webhook tried in the slot counts when its last success before the slot is within the horizon;
        the slot's own successes count for the slots after it."""
        good = bad = 0
        for slot in self._slots:
            if slot.judged or slot.start + self._slot_s > now:
                continue
            slot.judged = True
            since = slot.start - self._healthy_horizon_s
            for webhook_id in slot.failures:
                last = self._last_success.get(webhook_id)
                if last is None or last < since:
                    continue
                if webhook_id in slot.succeeded:
                    good += 1
                else:
                    bad += 1
            for webhook_id in slot.succeeded:
                self._last_success[webhook_id] = slot.start
        horizon = now - self._healthy_horizon_s - self._slot_s
        for webhook_id in [w for w, last in self._last_success.items() if last < horizon]:
            del self._last_success[webhook_id]
        self._expire(now)
        return HealthyMinutes(good=good, bad=bad)

    def summary(self, now: float, top: int) -> OutcomeSummary:
        self._expire(now)
        failures: dict[str, int] = {}
        succeeded: set[str] = set()
        accounts: set[str] = set()
        accounts_succeeded: set[str] = set()
        for slot in self._slots:
            for webhook_id, failed in slot.failures.items():
                failures[webhook_id] = failures.get(webhook_id, 0) + failed
            succeeded |= slot.succeeded
            accounts |= slot.accounts
            accounts_succeeded |= slot.accounts_succeeded
        worst = heapq.nlargest(top, ((w, n) for w, n in failures.items() if n > 0), key=lambda item: (item[1], item[0]))
        return OutcomeSummary(
            attempted=len(failures),
            succeeding=len(succeeded),
            worst=worst,
            accounts_attempted=len(accounts),
            accounts_succeeding=len(accounts_succeeded),
        )

    def _current(self, now: float) -> _Slot:
        self._expire(now)
        if not self._slots or now >= self._slots[-1].start + self._slot_s:
            self._slots.append(_Slot(start=now - (now % self._slot_s)))
        return self._slots[-1]

    def _expire(self, now: float) -> None:
        while self._slots and self._slots[0].start + self._slot_s <= now - self._window_s:
            self._slots.popleft()
