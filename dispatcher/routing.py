"""Where a failed or deferred delivery goes next: pure functions (DESIGN.md §1 retry schedule).

attempt 1 fails -> retry.10s (due +10 s); 2 -> retry.60s (+60 s); 3 -> retry.5m (+300 s); 4 -> dead.
The attempt number travels with the task, never derived from consumer state, so any dispatcher can
pick up any retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.models import MAX_ATTEMPTS
from schemas.topics import Topics

Stage = Literal["10s", "60s", "5m", "dead"]
STAGES: tuple[Stage, Stage, Stage] = ("10s", "60s", "5m")
DEFAULT_DELAYS_S: tuple[float, float, float] = (10.0, 60.0, 300.0)


@dataclass(frozen=True, slots=True)
class FailureRoute:
    stage: Stage
    topic: str
    next_attempt: int  # for "dead": the attempt that failed last
    due_at_ms: int  # for "dead": when it was dead-lettered


def route_failure(
    failed_attempt: int, failed_at_ms: int, topics: Topics, delays_s: tuple[float, float, float] = DEFAULT_DELAYS_S
) -> FailureRoute:
    """The delay topic (or the dead-letter topic) for a task whose attempt `failed_attempt` just failed."""
    if not 1 <= failed_attempt <= MAX_ATTEMPTS:
        raise ValueError(f"attempt must be 1..{MAX_ATTEMPTS} (got {failed_attempt})")
    if failed_attempt == MAX_ATTEMPTS:
        return FailureRoute("dead", topics.dead, failed_attempt, failed_at_ms)
    index = failed_attempt - 1
    return FailureRoute(
        STAGES[index], topics.retries[index], failed_attempt + 1, failed_at_ms + round(delays_s[index] * 1000)
    )


def route_park(
    attempt: int, now_ms: int, topics: Topics, delays_s: tuple[float, float, float] = DEFAULT_DELAYS_S
) -> FailureRoute:
    """A deferred delivery (endpoint saturated): first delay topic, same attempt number (nothing was tried)."""
    return FailureRoute(STAGES[0], topics.retry_10s, attempt, now_ms + round(delays_s[0] * 1000))


def stage_of_topic(topic: str, topics: Topics) -> Stage:
    """Which schedule stage a delay topic holds (for metrics labels)."""
    return STAGES[topics.retries.index(topic)]
