"""What a delivery needs of a webhook: its URL, account, secrets and request options (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from schemas.catalog import EventType


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a delivery needs of a webhook (secrets decrypted; never logged)."""

    id: str
    account_id: str
    url: str
    events: frozenset[EventType]
    active: bool
    secret: str
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    rate_limit_per_s: int | None = None  # enforced by the webhook's one owner (dispatcher/lanes.py)
    ordering: Literal["unordered", "fifo"] = "unordered"
    headers: tuple[tuple[str, str], ...] = ()  # custom request headers (decrypted; never logged)
    signing_key: str | None = None  # Ed25519 private key (`whsk_`), when the webhook opted in to `v1a`
    previous_signing_key: str | None = None
    previous_signing_key_expires_at: datetime | None = None
    filter: str | None = None  # CEL over the event, applied at fan-out (schemas/event_filter.py); None: every event
    enabled_at: datetime | None = None  # when it was last switched on by hand (a 410 before it no longer counts)

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return f"Endpoint(id={self.id!r}, account_id={self.account_id!r}, active={self.active})"

    def signing_secrets(self, now: datetime) -> tuple[str, str | None]:
        """Current secret and, while a rotation overlap lasts, the previous one."""
        if self.previous_secret and self.previous_secret_expires_at and now < self.previous_secret_expires_at:
            return self.secret, self.previous_secret
        return self.secret, None

    def signing_keys(self, now: datetime) -> tuple[str, ...]:
        """The Ed25519 keys that sign (`v1a`): none unless opted in; the previous one only while its overlap lasts."""
        if self.signing_key is None:
            return ()
        previous, expires = self.previous_signing_key, self.previous_signing_key_expires_at
        if previous and expires and now < expires:
            return self.signing_key, previous
        return (self.signing_key,)
