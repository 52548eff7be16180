"""The poison-item rule of every loop that works through stored items (an outbox, a queue of rows):
one item's failure never stops the loop.

`run_item` runs the work of one item. An exception listed as `transient` (the database or the broker
unreachable: nothing is wrong with the item) propagates, so the caller defers the whole batch as before.
Any other `Exception` is the item's own: it is counted in `hookfleet_item_failures_total{loop}`, logged
once (one line, no traceback, never a secret) and returned as an `ItemFailure`, and the loop goes on.
The caller stores the failure on the item and tries it again at `RetrySchedule.next_attempt`, a bounded
backoff: an item that fails every time is given up after `RetrySchedule.attempts` tries, kept with its
error for the operator, and never blocks the items behind it. Why: an outbox row that made the recorder
raise was rolled back and claimed again on every start, so every replica crash-looped on it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from hookfleet import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ERROR_CHARS = 200
_UNPRINTABLE = re.compile(r"\s+|[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """Why one item failed: short, one line of printable ASCII, secrets masked; fit for a row and a log."""

    error: str


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Bounded exponential backoff for a failed item: `first`, then `factor` times longer each time, at
    most `cap`; after `attempts` failures the item is given up (`next_attempt` is None)."""

    first: timedelta = timedelta(seconds=30)
    factor: int = 4
    cap: timedelta = timedelta(hours=1)
    attempts: int = 5

    def next_attempt(self, failures: int, now: datetime) -> datetime | None:
        """When to try again after the item's `failures`-th failure (1 = the first); None: give up."""
        if failures >= self.attempts:
            return None
        wait: timedelta = self.first * self.factor ** max(failures - 1, 0)
        return now + min(wait, self.cap)


def describe_failure(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """`Type: message`, every given secret masked, collapsed to one printable line of at most 200 chars."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")
    text = _UNPRINTABLE.sub(" ", text).strip()
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def run_item(
    loop: str,
    item_id: str,
    work: Callable[[], T],
    *,
    transient: tuple[type[BaseException], ...] = (),
    secrets: Sequence[str] = (),
) -> T | ItemFailure:
    """Run one item's `work`; its own failure is counted, logged once and returned, never raised.

    `loop` names the loop in the metric and the log (a fixed word, never a customer value); `item_id` is
    the item's id for the log line; `secrets` are masked in the error."""
    try:
        return work()
    except transient:
        raise
    except Exception as exc:  # the rule: whatever one item raises, the loop goes on
        return item_failed(loop, item_id, exc, secrets)


def item_failed(loop: str, item_id: str, exc: BaseException, secrets: Sequence[str] = ()) -> ItemFailure:
    """One item's own failure, found without raising (e.g. the broker refused its message): counted, logged
    once, and described for the item's row, as `run_item` does."""
    failure = ItemFailure(describe_failure(exc, secrets))
    metrics.ITEM_FAILURES.labels(loop).inc()
    log.warning("event=item_failed loop=%s item=%s error=%r", loop, item_id, failure.error)
    return failure
