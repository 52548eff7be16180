"""Which consumed offsets are finished, and what to commit: pure, no I/O.

Work finishes out of order (deliveries of different webhooks, hand-offs acknowledged by different
partitions). Kafka stores one offset per partition meaning "everything below this is
done", so per partition we may store only the low-water mark: the smallest offset still unfinished (or
one past the highest seen when nothing is pending). Storing more would lose the unfinished work on a
crash; storing less only causes redelivery, which receivers dedupe.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from hookfleet.kafka import PartitionKey
from hookfleet.stream.offset_codec import decode_finished, encode_finished


class LowWaterMark:
    """Offsets of one partition, in the order consumed (always increasing)."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()  # begun, down to the oldest unfinished one
        self._open: set[int] = set()  # begun and not finished
        self._done: set[int] = set()  # finished, above the oldest unfinished one
        self._next: int | None = None  # one past the highest offset known finished-in-order

    def begin(self, offset: int) -> None:
        if not self.try_begin(offset):
            raise ValueError(f"offsets must increase within a partition (got {offset} after {self.last_begun})")

    def try_begin(self, offset: int) -> bool:
        """Begin `offset` unless it is not above the last one begun (a message read again): then False."""
        pending = self._pending
        if pending:
            if offset <= pending[-1]:
                return False
        elif self._next is not None and offset < self._next:
            return False
        pending.append(offset)
        self._open.add(offset)
        return True

    def finish(self, offset: int) -> int | None:
        """Mark `offset` finished; returns the new committable offset when it advanced, else None."""
        if offset not in self._open:
            return None  # finished twice, or never begun: nothing of ours moves
        self._open.discard(offset)
        self._done.add(offset)
        advanced = False
        while self._pending and self._pending[0] in self._done:
            head = self._pending.popleft()
            self._done.discard(head)
            self._next = head + 1
            advanced = True
        return self._next if advanced else None

    def is_open(self, offset: int) -> bool:
        return offset in self._open

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

    @property
    def last_begun(self) -> int | None:
        if self._pending:
            return self._pending[-1]
        return self._next - 1 if self._next is not None else None


class Claim(NamedTuple):
    """One consumed offset being worked on, in one ownership of its partition: finishing it counts only
    while that ownership lasts (a late finish after a revoke, or after the partition came back, does not)."""

    partition: PartitionKey
    offset: int
    epoch: int


@dataclass(slots=True)
class _Owned:
    marks: LowWaterMark
    epoch: int
    skip: frozenset[int] = frozenset()
    """Finished by the previous owner (its commit metadata): consumed again, but not worked on again."""
    dirty: bool = False
    """Something finished since the last commit was taken."""


@dataclass(slots=True)
class OffsetLedger:
    """Every owned partition's low-water mark, and the commits that carry them.

    `begin` an offset when its work starts (in consume order), `finish` its claim when the work is durable;
    `commits` returns what to commit: per changed partition the oldest unfinished offset, with the finished
    offsets above it as metadata. A crash then redoes only the work that was unfinished at the last commit.
    """

    _owned: dict[PartitionKey, _Owned] = field(default_factory=dict)
    _epoch: int = 0

    def assign(self, partition: PartitionKey, committed: int | None = None, metadata: str | None = None) -> int:
        """Own `partition`; `committed`/`metadata` are its last commit, whose finished offsets are skipped.
        Returns how many offsets will be skipped."""
        self._epoch += 1
        skip = decode_finished(committed, metadata) if committed is not None and committed >= 0 else frozenset()
        self._owned[partition] = _Owned(LowWaterMark(), self._epoch, skip)
        return len(skip)

    def revoke(self, partitions: Iterable[PartitionKey]) -> None:
        for partition in partitions:
            self._owned.pop(partition, None)

    def owns(self, partition: PartitionKey) -> bool:
        return partition in self._owned

    def already_begun(self, partition: PartitionKey, offset: int) -> bool:
        """True for a message read again in this ownership (an un-asked-for rewind): doing it twice would
        duplicate its effect."""
        owned = self._owned.get(partition)
        last = owned.marks.last_begun if owned is not None else None
        return last is not None and offset <= last

    def finished_before(self, partition: PartitionKey, offset: int) -> bool:
        """True when the previous owner finished this offset (it recorded so with its last commit)."""
        owned = self._owned.get(partition)
        return owned is not None and offset in owned.skip

    def claim(self, partition: PartitionKey, offset: int) -> Claim | None:
        """Begin work on a consumed offset, or say there is none to do (None): the partition is not owned
        (revoked in the same batch), the offset was already begun in this ownership (read again), or the
        previous owner finished it (its last commit's metadata; finished here at once, not worked again).
        The dispatcher's stages and the recorder make this one call per message; the retry scheduler, which
        begins a task only when it hands it off, asks `already_begun` and `finished_before` first."""
        owned = self._owned.get(partition)
        if owned is None:
            return None
        marks = owned.marks
        if not marks.try_begin(offset):
            return None
        if offset in owned.skip:
            owned.dirty = True
            marks.finish(offset)
            return None
        return Claim(partition, offset, owned.epoch)

    def begin(self, partition: PartitionKey, offset: int) -> Claim:
        """Start work on `offset` (offsets of a partition begin in increasing order)."""
        owned = self._owned.get(partition)
        if owned is None:
            raise KeyError(f"{partition} is not owned: begin work only on assigned partitions")
        owned.marks.begin(offset)
        return Claim(partition, offset, owned.epoch)

    def finish(self, claim: Claim) -> int | None:
        """The claim's work is durable. Returns the partition's new committable offset when it advanced;
        None when it did not, or when the claim belongs to an ownership that has ended."""
        owned = self._owned.get(claim.partition)
        if owned is None or owned.epoch != claim.epoch:
            return None
        owned.dirty = True
        return owned.marks.finish(claim.offset)

    def commit_failed(self, partitions: Iterable[PartitionKey]) -> None:
        """A commit of `partitions` did not take: the next `commits` takes the still-owned ones again (their
        current commit point, which is never behind the one that failed)."""
        for partition in partitions:
            owned = self._owned.get(partition)
            if owned is not None:
                owned.dirty = True

    def is_pending(self, claim: Claim) -> bool:
        owned = self._owned.get(claim.partition)
        return owned is not None and owned.epoch == claim.epoch and owned.marks.is_open(claim.offset)

    def commits(
        self, partitions: Iterable[PartitionKey] | None = None, force: bool = False
    ) -> list[tuple[PartitionKey, int, str]]:
        """(partition, offset, metadata) to commit for every partition that changed since the last call
        (every one with `force`), limited to `partitions` when given."""
        # A copy: the dispatcher's stage threads assign partitions while its loop takes commits.
        chosen = list(self._owned) if partitions is None else [p for p in partitions if p in self._owned]
        out: list[tuple[PartitionKey, int, str]] = []
        for partition in chosen:
            owned = self._owned.get(partition)
            if owned is None:  # revoked meanwhile
                continue
            if not (owned.dirty or force):
                continue
            base = owned.marks.commit_point()
            if base is None:
                continue
            owned.dirty = False
            out.append((partition, base, encode_finished(base, owned.marks.finished_above())))
        return out

    @property
    def pending_count(self) -> int:
        return sum(owned.marks.pending for owned in self._owned.values())

    @property
    def owned(self) -> frozenset[PartitionKey]:
        return frozenset(self._owned)
