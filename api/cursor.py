"""Opaque keyset cursors for the delivery log: the (attempted_at, attempt_id) of the last row served.

Keyset, not offset: a page stays correct while the recorder inserts newer rows above it, and each page
is an index range scan however deep the client pages.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime


def encode(attempted_at: datetime, attempt_id: str) -> str:
    raw = json.dumps([attempted_at.isoformat(), attempt_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for anything `encode` did not produce."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, attempt_id = json.loads(raw)
        parsed = datetime.fromisoformat(at)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValueError("cursor is not one this API returned; pass next_cursor unchanged") from None
    if parsed.tzinfo is None or not isinstance(attempt_id, str) or "\x00" in attempt_id:
        raise ValueError("cursor is not one this API returned; pass next_cursor unchanged")
    return parsed, attempt_id
