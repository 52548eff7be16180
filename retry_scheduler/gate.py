"""Which delay-topic partitions are held on a not-yet-due head task, and until when.

Pure bookkeeping (plain values and an explicit `now`), so the rules are unit-tested without a broker:

- Each delay topic has one fixed delay, so within a partition tasks are in due order. When the head is not
  yet due, the whole partition waits: hold it (the Kafka side pauses it and seeks back to the head) until
  `due_at`. Other partitions keep flowing.
- The hold, not librdkafka's pause flag, is the truth: a rebalance un-pauses partitions, so every assign
  re-applies the holds of partitions still owned; a revoke forgets them (the next owner re-reads from the
  committed offset, which never passes the held task).
- A message from a held partition is one fetched before the pause took effect (or after an un-pause we did
  not ask for): it is skipped, and will be read again after the seek back.
- A relayed wait's last few seconds (less than the shortest delay left) cannot go to any delay topic
  without being due sooner than the tasks queued ahead of it there: `ShortWaits` holds them in memory,
  bounded, while their offsets stay unstored (a restart reads them again).
- librdkafka does not wake a broker's fetcher thread on `resume`: when no Fetch is in flight (the usual
  state here, with nearly every partition held) the thread sleeps until its next I/O or op, up to a
  second, and the resumed partition waits with it. So every resume is followed by a nudge (any request)
  to the partition's leader; one per broker covers all partitions resumed at the same moment.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from hookfleet.kafka import PartitionKey
from schemas.retry_schedule import ORDER_TOLERANCE_S


def bounded_due_ms(due_at_ms: int, written_ms: int | None, stage_delay_s: float, slack_s: float) -> int:
    """The due time to hold a task until: its `due_at`, but never later than twice its stage's delay plus
    `slack_s` after the task was written to the delay topic. A task due far beyond that (a clock jump, a
    bug upstream) would otherwise hold its partition, and every task queued behind it, indefinitely."""
    if written_ms is None or written_ms <= 0:
        return due_at_ms
    return min(due_at_ms, written_ms + round((2 * stage_delay_s + slack_s) * 1000))


RELAY_TOLERANCE_MS = round(ORDER_TOLERANCE_S * 1000)
"""A task due this little past its topic's own delay is held, not relayed (`ORDER_TOLERANCE_S`)."""


def hold_plan(
    due_at_ms: int, written_ms: int | None, stage_delay_s: float, slack_s: float, relay_horizon_s: float
) -> tuple[int, bool]:
    """(when to act on a task, relay?): relay means "write it again to the same delay topic", not "deliver".

    A delay topic is in due order only while each task is due its topic's delay after it was written. A
    task due later (a receiver's Retry-After beyond the longest delay) would hold every task queued behind
    it, so it is held only for the topic's delay and then relayed, again and again, until it is due. A task
    due beyond `relay_horizon_s` (the Retry-After cap) plus `slack_s` is no legitimate wait: the
    `bounded_due_ms` guard applies and it is handed off early.
    """
    if written_ms is None or written_ms <= 0:
        return due_at_ms, False
    natural_ms = written_ms + round(stage_delay_s * 1000)
    if due_at_ms <= natural_ms + RELAY_TOLERANCE_MS:
        return due_at_ms, False
    if due_at_ms <= written_ms + round((relay_horizon_s + slack_s) * 1000):
        return natural_ms, True
    return bounded_due_ms(due_at_ms, written_ms, stage_delay_s, slack_s), False


class Step(Enum):
    HAND_OFF = "hand_off"
    """Due: produce it to the deliveries topic now."""
    HOLD = "hold"
    """Not yet due: pause the partition and seek back to this offset."""
    SKIP = "skip"
    """The partition is held: this message will be re-read after the seek back."""


@dataclass(frozen=True, slots=True)
class Hold:
    offset: int
    """The not-yet-due head: where the partition resumes."""
    due_at_ms: int


class DueGate:
    def __init__(self) -> None:
        self._holds: dict[PartitionKey, Hold] = {}
        self._assigned: set[PartitionKey] = set()

    def on_message(self, partition: PartitionKey, offset: int, due_at_ms: int, now_ms: int) -> Step:
        if partition in self._holds:
            return Step.SKIP
        if due_at_ms <= now_ms:
            return Step.HAND_OFF
        self._holds[partition] = Hold(offset, due_at_ms)
        return Step.HOLD

    def is_held(self, partition: PartitionKey) -> bool:
        return partition in self._holds

    def hold_of(self, partition: PartitionKey) -> Hold | None:
        return self._holds.get(partition)

    def release_due(self, now_ms: int) -> list[tuple[PartitionKey, Hold]]:
        """Holds whose head is due at `now_ms`: forgotten here, to be resumed by the caller."""
        due = [(p, h) for p, h in self._holds.items() if h.due_at_ms <= now_ms]
        for partition, _ in due:
            del self._holds[partition]
        return sorted(due, key=lambda item: item[1].due_at_ms)

    def next_due_ms(self) -> int | None:
        return min((h.due_at_ms for h in self._holds.values()), default=None)

    def wait_s(self, now_ms: int, idle_s: float) -> float:
        """How long the poll may block: until the next hold is due, at most `idle_s`, never negative."""
        due = self.next_due_ms()
        if due is None:
            return idle_s
        return max(0.0, min(idle_s, (due - now_ms) / 1000))

    def assign(self, partitions: Iterable[PartitionKey]) -> dict[PartitionKey, Hold]:
        """Record newly assigned partitions; returns every hold to re-apply (a rebalance un-pauses)."""
        self._assigned.update(partitions)
        return {p: h for p, h in self._holds.items() if p in self._assigned}

    def revoke(self, partitions: Iterable[PartitionKey]) -> None:
        for partition in partitions:
            self._assigned.discard(partition)
            self._holds.pop(partition, None)

    @property
    def assigned(self) -> frozenset[PartitionKey]:
        return frozenset(self._assigned)

    @property
    def held_count(self) -> int:
        return len(self._holds)


T = TypeVar("T")


@dataclass(order=True, slots=True)
class _Waiting(Generic[T]):
    due_at_ms: int
    seq: int
    partition: PartitionKey = field(compare=False)
    size: int = field(compare=False)
    item: T = field(compare=False)


class ShortWaits(Generic[T]):
    """Items due in less than the shortest delay, held in memory until due: a min-heap bounded by count
    and by bytes, so a burst of relayed waits cannot grow the process without limit (when full, the caller
    relays to the shortest delay topic instead and is late by at most that delay)."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self._heap: list[_Waiting[T]] = []
        self._seq = itertools.count()
        self._bytes = 0
        self.max_items = max_items
        self.max_bytes = max_bytes

    def add(self, partition: PartitionKey, due_at_ms: int, size: int, item: T) -> bool:
        """False (nothing held) when it would pass either bound."""
        if len(self._heap) >= self.max_items or self._bytes + size > self.max_bytes:
            return False
        heapq.heappush(self._heap, _Waiting(due_at_ms, next(self._seq), partition, size, item))
        self._bytes += size
        return True

    def pop_due(self, now_ms: int) -> list[T]:
        """Items due at `now_ms`, earliest first, forgotten here."""
        due: list[T] = []
        while self._heap and self._heap[0].due_at_ms <= now_ms:
            waiting = heapq.heappop(self._heap)
            self._bytes -= waiting.size
            due.append(waiting.item)
        return due

    def next_due_ms(self) -> int | None:
        return self._heap[0].due_at_ms if self._heap else None

    def revoke(self, partitions: Iterable[PartitionKey]) -> None:
        """Forget the items of partitions taken away: their next owner reads them again."""
        gone = set(partitions)
        kept = [w for w in self._heap if w.partition not in gone]
        if len(kept) != len(self._heap):
            heapq.heapify(kept)
            self._heap = kept
            self._bytes = sum(w.size for w in kept)

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def bytes(self) -> int:
        return self._bytes


def to_nudge(released: Iterable[PartitionKey], leaders: Mapping[PartitionKey, int]) -> list[PartitionKey]:
    """One just-resumed partition per leader broker, to send that broker's fetcher a wake-up request.

    A partition whose leader is unknown is always nudged: a wasted request costs a fraction of a
    millisecond, a missed wake-up up to a second of lateness.
    """
    targets: list[PartitionKey] = []
    nudged: set[int] = set()
    for partition in released:
        leader = leaders.get(partition)
        if leader is None:
            targets.append(partition)
        elif leader not in nudged:
            nudged.add(leader)
            targets.append(partition)
    return targets
