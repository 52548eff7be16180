"""Which consumed offsets are safe to store: a low-water mark per partition over unacknowledged hand-offs.

Hand-offs of one partition start in offset order, but their acknowledgements can arrive in any order
(they go to different partitions of the deliveries topic). The stored offset is the next offset to read
after a restart, so it must never pass a task the broker has not acknowledged: it advances only over a
contiguous run of acknowledged offsets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from hookfleet.kafka import PartitionKey


@dataclass(slots=True)
class _Track:
    started: deque[int] = field(default_factory=deque)
    """Offsets in start order, down to the oldest one not yet acknowledged."""
    unacked: set[int] = field(default_factory=set)
    last_started: int = -1


class HandOffLedger:
    def __init__(self) -> None:
        self._tracks: dict[PartitionKey, _Track] = {}

    def start(self, partition: PartitionKey, offset: int) -> None:
        track = self._tracks.setdefault(partition, _Track())
        if offset <= track.last_started:
            raise ValueError(
                f"hand-offs of {partition} must start in offset order ({offset} after {track.last_started})"
            )
        track.started.append(offset)
        track.unacked.add(offset)
        track.last_started = offset

    def already_started(self, partition: PartitionKey, offset: int) -> bool:
        """True for a message read again (an un-asked-for rewind): handing it off twice would duplicate it."""
        track = self._tracks.get(partition)
        return track is not None and offset <= track.last_started

    def ack(self, partition: PartitionKey, offset: int) -> int | None:
        """Mark `offset` acknowledged; returns the offset to store if the low-water mark advanced."""
        track = self._tracks.get(partition)
        if track is None or offset not in track.unacked:
            return None  # revoked meanwhile, or acknowledged twice: nothing of ours to move
        track.unacked.remove(offset)
        advanced: int | None = None
        while track.started and track.started[0] not in track.unacked:
            advanced = track.started.popleft() + 1
        return advanced

    def revoke(self, partitions: Iterable[PartitionKey]) -> None:
        for partition in partitions:
            self._tracks.pop(partition, None)

    def is_pending(self, partition: PartitionKey, offset: int) -> bool:
        track = self._tracks.get(partition)
        return track is not None and offset in track.unacked

    @property
    def pending_count(self) -> int:
        return sum(len(t.unacked) for t in self._tracks.values())
