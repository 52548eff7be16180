"""Idempotent publishing: which keyed events the fan-out has already fanned out, per events partition. Pure
(the header and the changelog record are schemas/idempotency.py).

A product that publishes an event with the Kafka header `idempotency-key` asks for it to be fanned out
once per key and account within `HOOKFLEET_IDEMPOTENCY_WINDOW_S`, however often it publishes it. Events are
keyed by account, so an account's events are all on one partition of `webhooks.events`, and the one fan-out
consumer that owns that partition judges every publish of the key: no coordination, no database.

Each owned partition has a `KeyStore` (key -> where and when it was first seen), restored when the partition
is assigned from the compacted changelog `webhooks.idempotency` (same partition number as the events
partition; worker.py writes a key's record together with the event's delivery tasks, and the event's offset
is finished only once the broker acknowledged both). Why the first sight's *offset* is kept: after a crash
the first publish itself may be read again (its offset was not committed), and it must be fanned out again
rather than judged a duplicate of itself, since its tasks may never have been written; any *other* offset
with the key within the window is a second publish and is dropped.

Memory is bounded: keys are 16-byte BLAKE2b digests of `<account>/<key>`, the first sight is one int, and a
store holds at most `max_keys`; past it the oldest sixty-fourth is evicted at once (amortising the eviction
scan), which shortens the window for those keys (`hookfleet_idempotency_evicted_total{reason="bound"}`).
Measured cost in bench/RESULTS.md ("Idempotent publishing").
"""

from __future__ import annotations

import hashlib
from enum import Enum
from itertools import islice

EXPIRE_EVERY_MS = 1000
"""How often expired keys are evicted (a lookup also checks the window itself, so this only frees memory)."""
_OFFSET_BITS = 64


def digest(record_key: bytes) -> bytes:
    """What the store keeps of a key: 16 bytes (a collision, which would drop an event, needs ~2^64 keys)."""
    return hashlib.blake2b(record_key, digest_size=16).digest()


class Verdict(Enum):
    NEW = "new"  # first publish of the key in the window: fan out and record it
    READ_AGAIN = "read_again"  # the first publish itself, read again after a crash or a rebalance: fan out again
    DUPLICATE = "duplicate"  # another publish of a key already fanned out within the window: drop


class KeyStore:
    """One events partition's keys: digest -> (first-seen ms << 64 | events offset), oldest first.

    A plain dict keeps insertion order, which is time order (keys are recorded as they are seen, and
    restored in changelog order), so eviction by time and by bound both take from the front."""

    def __init__(self, window_ms: int, max_keys: int) -> None:
        if window_ms <= 0 or max_keys <= 0:
            raise ValueError(f"window_ms and max_keys must be positive (got {window_ms}, {max_keys})")
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._keys: dict[bytes, int] = {}
        self._next_expiry_ms = 0
        self.evicted_expired = 0
        self.evicted_bound = 0

    def __len__(self) -> int:
        return len(self._keys)

    def judge(self, key: bytes, offset: int, now_ms: int) -> Verdict:
        """What to do with a publish of `key` (a digest) at `offset`, seen at `now_ms`."""
        if now_ms >= self._next_expiry_ms:
            self.expire(now_ms)
        packed = self._keys.get(key)
        if packed is None or (packed >> _OFFSET_BITS) <= now_ms - self.window_ms:
            return Verdict.NEW
        if packed & ((1 << _OFFSET_BITS) - 1) == offset:
            return Verdict.READ_AGAIN
        return Verdict.DUPLICATE

    def record(self, key: bytes, offset: int, seen_ms: int) -> None:
        """`key` was first seen at `offset`, `seen_ms` (a key seen again after its window starts afresh)."""
        if key in self._keys:
            del self._keys[key]  # re-inserted at the end: the order stays time order
        elif len(self._keys) >= self.max_keys:
            self._evict_oldest(max(1, self.max_keys // 64))
        self._keys[key] = (seen_ms << _OFFSET_BITS) | offset

    def restore(self, key: bytes, offset: int, seen_ms: int, now_ms: int) -> None:
        """A changelog record, in changelog order: kept unless its window is over."""
        if seen_ms > now_ms - self.window_ms:
            self.record(key, offset, seen_ms)

    def expire(self, now_ms: int) -> int:
        """Evict the keys whose window is over; returns how many."""
        self._next_expiry_ms = now_ms + EXPIRE_EVERY_MS
        cutoff = now_ms - self.window_ms
        stale = []
        for key, packed in self._keys.items():
            if (packed >> _OFFSET_BITS) > cutoff:
                break
            stale.append(key)
        for key in stale:
            del self._keys[key]
        self.evicted_expired += len(stale)
        return len(stale)

    def _evict_oldest(self, count: int) -> None:
        for key in list(islice(self._keys, count)):
            del self._keys[key]
        self.evicted_bound += count
