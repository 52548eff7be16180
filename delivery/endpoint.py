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
    enabled_at: datetime | None = None  # when it was last switched on by hand (a 410 before it no longer counts)

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return f"Endpoint(id={self.id!r}, account_id={self.account_id!r}, active={self.active})"

    def signing_secrets(self, now: datetime) -> tuple[str, str | None]:
        """Current secret and, while a rotation overlap lasts, the previous one."""
        if self.previous_secret and self.previous_secret_expires_at and now < self.previous_secret_expires_at:
            return self.secret, self.previous_secret
        return self.secret, None


