"""Per-account quotas: how many webhooks and API keys an account may hold, and how many creates, Test
calls, redeliveries and recovers it may make per minute (replays: api/replay.py). A quota exceeded
is a 429 with `Retry-After` and the quota's setting in `error.limit`, never a slow request.

The per-minute limits are counted in each API process (a sliding window in memory): with N replicas
behind a load balancer an account gets at most N times the limit. That bounds what one account can make
this fleet do (Test calls are outbound HTTP requests to a host of the account's choosing) without a
database write per request. The counts (webhooks, keys) are read from the database, so they hold across
replicas.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from api.errors import ApiError

WINDOW_S = 60.0


class SlidingWindow:
    """At most `limit` events per key in any `window_s` seconds (pure apart from the clock)."""

    def __init__(self, limit: int, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._next_sweep = clock() + window_s

    def try_acquire(self, key: str) -> float | None:
        """Count one event for `key` and return None, or return the seconds until one is allowed again."""
        now = self._clock()
        if now >= self._next_sweep:  # forget idle keys, so memory follows active accounts only
            self._events = {k: q for k, q in self._events.items() if q and q[-1] > now - self.window_s}
            self._next_sweep = now + self.window_s
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if len(events) >= self.limit:
            return events[0] + self.window_s - now
        events.append(now)
        return None


def too_many(message: str, retry_after_s: float, limit: str | None = None) -> ApiError:
    """A 429 with `Retry-After`; `limit` names the quota's setting (e.g. HOOKFLEET_CREATES_PER_MINUTE)."""
    seconds = max(1, math.ceil(retry_after_s))
    return ApiError(429, "quota_exceeded", message, headers={"Retry-After": str(seconds)}, limit=limit)


def check_rate(window: SlidingWindow, account_id: str, what: str, limit: str) -> None:
    wait = window.try_acquire(account_id)
    if wait is not None:
        raise too_many(
            f"at most {window.limit} {what} per minute per account; retry in {max(1, math.ceil(wait))} s", wait, limit
        )


def check_count(current: int, limit: int, what: str, fix: str, setting: str) -> None:
    """A count quota: waiting alone does not clear it, so Retry-After is only a polite minimum."""
    if current >= limit:
        raise too_many(f"this account has {current} {what}, the limit is {limit}; {fix}", WINDOW_S, setting)
