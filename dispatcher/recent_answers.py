"""Which webhooks answered this dispatcher lately: the memory that decides whether a new lane is probed.

A webhook that has not answered this dispatcher for `PROBE_AFTER_S` (or ever) gets one request until its first
answer, then its full concurrency (lanes.py `Lane.probing`). The dispatcher tells this memory a webhook's last
answer when its lane is dropped; a live lane keeps its own. Pure state, time passed in.
"""

from __future__ import annotations

from collections import OrderedDict

PROBE_AFTER_S = 300.0
"""A webhook not heard from for this long (or ever) is probed with one request before its full concurrency."""


class RecentAnswers:
    """Which webhooks answered this dispatcher within `memory_s`: one entry per webhook, in the order they
    were told (an OrderedDict: moving an entry to the end and dropping the front are O(1), where a plain
    dict's iteration would walk over the holes its deletions leave at the front), so expiry costs what it
    drops. Answer times are told when a lane is dropped, so they are only nearly in order: expiry may keep an
    old entry behind a newer one a little longer, and `knows` reads the entry's own time."""

    def __init__(self, memory_s: float = PROBE_AFTER_S) -> None:
        self._memory_s = memory_s
        self._at: OrderedDict[str, float] = OrderedDict()

    def heard(self, webhook_id: str, now: float) -> None:
        """`webhook_id` answered at `now` (told when its lane is dropped, not per answer: a live lane keeps
        its own `last_progress`, so the hot path pays nothing for this)."""
        self._at[webhook_id] = now
        self._at.move_to_end(webhook_id)
        self._expire(now)

    def knows(self, webhook_id: str, now: float) -> bool:
        self._expire(now)
        at = self._at.get(webhook_id)
        return at is not None and now - at < self._memory_s

    def _expire(self, now: float) -> None:
        while self._at:
            at = next(iter(self._at.values()))
            if now - at < self._memory_s:
                break
            self._at.popitem(last=False)

    def __len__(self) -> int:
        return len(self._at)
