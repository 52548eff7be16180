"""Sortable identifiers (ULID layout: 48-bit unix ms + 80 random bits, Crockford base32).

Event ids sort by creation time so logs and the database index read in order; the random part makes
them unique across publishers without coordination.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(now_ms: int | None = None, randomness: int | None = None) -> str:
    """26-character ULID; both parts injectable for known-answer tests."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rnd = secrets.randbits(80) if randomness is None else randomness
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"ulid timestamp out of range (got {ms})")
    value = (ms << 80) | rnd
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_event_id() -> str:
    return "evt_" + ulid()


def new_attempt_id() -> str:
    return "att_" + ulid()


def new_webhook_id() -> str:
    return "wh_" + ulid()


def new_replay_id() -> str:
    return "rpl_" + ulid()


def ulid_time_ms(identifier: str) -> int | None:
    """The creation time (unix ms) inside a prefixed ULID such as `att_...`; None when it is not one."""
    _, _, body = identifier.rpartition("_")
    if len(body) != 26:
        return None
    value = 0
    for char in body.upper():
        digit = _ALPHABET.find(char)
        if digit < 0:
            return None
        value = value * 32 + digit
    return value >> 80
