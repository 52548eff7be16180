"""Idempotent publishing on the wire (docs/architecture.md#idempotent-publishing): the `idempotency-key`
header a publisher sets on a `webhooks.events` message, and the record the fan-out keeps of a key's first
publish on `webhooks.idempotency`. The fan-out's store of keys is dispatcher/idempotency.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.free_text import refused_character

IDEMPOTENCY_HEADER = "idempotency-key"
"""The Kafka header a publisher puts the key in (UTF-8). Its name is matched without regard to case: Kafka
header names are case-sensitive, but a publisher used to HTTP writes `Idempotency-Key`, and a key missed
for its spelling would fan the event out twice without a word."""
MAX_KEY_BYTES = 200
"""Longest key accepted, in UTF-8 bytes: room for a UUID, an order number with a prefix, or a hash."""


class InvalidIdempotencyKey(ValueError):
    """The idempotency-key header is not a usable key; the message names the header, the size and the fix."""


def key_from_headers(headers: Sequence[tuple[str, str | bytes | None]] | None) -> str | None:
    """The message's idempotency key, None when it has none; raises InvalidIdempotencyKey for an unusable one."""
    if not headers:
        return None
    given = [value for name, value in headers if name.lower() == IDEMPOTENCY_HEADER]
    if len(given) > 1:  # which one the publisher meant is unknowable: neither is taken
        raise InvalidIdempotencyKey(f"header {IDEMPOTENCY_HEADER}: given {len(given)} times; set it once")
    if not given:
        return None
    return validate_key(given[0] or b"")


def validate_key(raw: bytes | str) -> str:
    """A key is 1-200 bytes of UTF-8 free text (schemas/free_text.py: no line break, control or invisible
    character): it is shown in logs and read by tools. A text key holding a lone surrogate (a command-line
    argument of bytes that are not UTF-8 arrives so) is refused as not UTF-8, naming the header."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not 1 <= len(raw) <= MAX_KEY_BYTES:
        raise InvalidIdempotencyKey(f"header {IDEMPOTENCY_HEADER}: must be 1-{MAX_KEY_BYTES} bytes (got {len(raw)})")
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidIdempotencyKey(f"header {IDEMPOTENCY_HEADER}: must be UTF-8") from None
    refused = refused_character(key)
    if refused is not None:
        raise InvalidIdempotencyKey(
            f"header {IDEMPOTENCY_HEADER}: must not contain {refused} (no line break, control or invisible character)"
        )
    return key


def changelog_key(account_id: str, key: str) -> bytes:
    """The changelog record's Kafka key: unambiguous, since account ids never contain '/'."""
    return f"{account_id}/{key}".encode()


@dataclass(frozen=True, slots=True)
class FirstSight:
    """The changelog record's value: which event a key became, and where and when the fan-out saw it."""

    account_id: str
    idempotency_key: str
    event_id: str
    events_offset: int
    first_seen_ms: int

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "account_id": self.account_id,
                "idempotency_key": self.idempotency_key,
                "event_id": self.event_id,
                "events_offset": self.events_offset,
                "first_seen_ms": self.first_seen_ms,
            },
            separators=(",", ":"),
        ).encode()

    @staticmethod
    def from_json(raw: bytes) -> FirstSight:
        value = json.loads(raw)
        return FirstSight(
            str(value["account_id"]),
            str(value["idempotency_key"]),
            str(value["event_id"]),
            int(value["events_offset"]),
            int(value["first_seen_ms"]),
        )
