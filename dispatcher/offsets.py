"""Low-water-mark offset tracking: pure, no I/O.

Deliveries finish out of order. Kafka stores one offset per partition meaning "everything below this is
done", so per partition we may store only the low-water mark: the smallest offset still unfinished (or
one past the highest seen when nothing is pending). Storing more would lose the unfinished work on a
crash; storing less only causes redelivery, which receivers dedupe.
"""

from __future__ import annotations

from collections import deque


class LowWaterMark:
    """Offsets of one partition, in the order consumed (always increasing)."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._next: int | None = None  # one past the highest offset known finished-in-order

    def begin(self, offset: int) -> None:
        if self._pending and offset <= self._pending[-1]:
            raise ValueError(f"offsets must increase within a partition (got {offset} after {self._pending[-1]})")
        self._pending.append(offset)

    def finish(self, offset: int) -> int | None:
        """Mark `offset` finished; returns the new committable offset when it advanced, else None."""
        self._done.add(offset)
        advanced = False
        while self._pending and self._pending[0] in self._done:
            head = self._pending.popleft()
            self._done.discard(head)
            self._next = head + 1
            advanced = True
        return self._next if advanced else None

    @property
    def committable(self) -> int | None:
        return self._next

    def commit_point(self) -> int | None:
        """The offset to commit now: the oldest unfinished one, else one past the last finished.

        Committing the oldest unfinished offset (rather than only `committable`) is what lets the finished
        offsets above it be recorded even before the first one finishes (offset_codec.py)."""
        return self._pending[0] if self._pending else self._next

    def finished_above(self) -> set[int]:
        """Offsets finished out of order, above the oldest unfinished one (a copy: safe to keep)."""
        return set(self._done)

    @property
    def pending(self) -> int:
        return len(self._pending)
