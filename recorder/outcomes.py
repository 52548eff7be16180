"""Per-webhook outcomes of the last minutes, kept by the recorder so the alerts can ask fleet questions
without a webhook label on any hot metric. No I/O.

- "What share of the webhooks we tried recently had at least one success?" pages only when many webhooks
  fail at once (the fleet is broken), not when one customer's endpoint is down.
- "Which webhooks fail most?" is answered by a bounded top-N gauge for the dashboard.

Attempts are keyed by webhook id on `webhooks.attempts`, so each webhook is counted by exactly one
recorder replica: the fleet's totals are the sum over replicas.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 600.0
SLOT_S = 60.0


@dataclass(frozen=True, slots=True)
class OutcomeSummary:
    attempted: int
    """Distinct webhooks with an attempt in the window."""
    succeeding: int
    """Distinct webhooks with a success in the window."""
    worst: list[tuple[str, int]]
    """Up to `top` (webhook id, failed attempts), most failures first; only webhooks that failed."""


@dataclass(slots=True)
class _Slot:
    start: float
    failures: dict[str, int] = field(default_factory=dict)
    succeeded: set[str] = field(default_factory=set)


class WebhookOutcomes:
    """Attempts of the last `window_s` seconds, in `slot_s` slots (memory: one entry per webhook per slot)."""

    def __init__(self, window_s: float = WINDOW_S, slot_s: float = SLOT_S) -> None:
        self._window_s = window_s
        self._slot_s = slot_s
        self._slots: deque[_Slot] = deque()

    def add(self, webhook_id: str, ok: bool, now: float) -> None:
        slot = self._current(now)
        if ok:
            slot.succeeded.add(webhook_id)
            slot.failures.setdefault(webhook_id, 0)
        else:
            slot.failures[webhook_id] = slot.failures.get(webhook_id, 0) + 1

    def summary(self, now: float, top: int) -> OutcomeSummary:
        self._expire(now)
        failures: dict[str, int] = {}
        succeeded: set[str] = set()
        for slot in self._slots:
            for webhook_id, failed in slot.failures.items():
                failures[webhook_id] = failures.get(webhook_id, 0) + failed
            succeeded |= slot.succeeded
        worst = heapq.nlargest(top, ((w, n) for w, n in failures.items() if n > 0), key=lambda item: (item[1], item[0]))
        return OutcomeSummary(attempted=len(failures), succeeding=len(succeeded), worst=worst)

    def _current(self, now: float) -> _Slot:
        self._expire(now)
        if not self._slots or now >= self._slots[-1].start + self._slot_s:
            self._slots.append(_Slot(start=now - (now % self._slot_s)))
        return self._slots[-1]

    def _expire(self, now: float) -> None:
        while self._slots and self._slots[0].start + self._slot_s <= now - self._window_s:
            self._slots.popleft()
