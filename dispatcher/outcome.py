"""Classify one HTTP attempt as a delivery outcome: pure (docs/architecture.md#wire-contract).

Success is any 2xx. Everything else fails: another status (a 3xx too: redirects are not followed, as
they could point inside the network), timeout, TLS error, connection error, or a blocked address.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from typing import Any

from pyreqwest.exceptions import DetailedPyreqwestError

from dispatcher.address_guard import BlockedAddressError
from schemas.models import Outcome


def classify_status(status: int) -> tuple[Outcome, str | None]:
    if 200 <= status < 300:
        return Outcome.SUCCESS, None
    if 300 <= status < 400:
        return Outcome.HTTP_ERROR, f"http {status} (redirects are not followed)"
    return Outcome.HTTP_ERROR, f"http {status}"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (an HTTP client may hide resolver and TLS errors levels down)."""
    seen: list[BaseException] = []
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        stack.extend([getattr(current, "os_error", None), current.__cause__, current.__context__])
    return seen


# pyreqwest reports what went wrong as the messages of the Rust error chain (reqwest -> hyper -> rustls / io).
_CAUSE_KINDS: tuple[tuple[str, Outcome, str], ...] = (
    ("invalid peer certificate", Outcome.TLS_ERROR, "tls error"),
    ("tls handshake", Outcome.TLS_ERROR, "tls error"),
    ("received fatal alert", Outcome.TLS_ERROR, "tls error"),
    ("connection refused", Outcome.CONNECTION_ERROR, "connection refused"),
    ("close_notify", Outcome.CONNECTION_ERROR, "server disconnected"),
    ("connection closed before message completed", Outcome.CONNECTION_ERROR, "server disconnected"),
    ("connection reset", Outcome.CONNECTION_ERROR, "server disconnected"),
    ("unexpected eof", Outcome.CONNECTION_ERROR, "server disconnected"),
    ("timed out", Outcome.TIMEOUT, "timeout"),
)


def _rust_cause_kind(exc: DetailedPyreqwestError) -> tuple[Outcome, str] | None:
    causes = exc.details.get("causes") if isinstance(exc.details, dict) else None
    messages = " | ".join(str(c.get("message", "")) for c in causes or ()).lower()
    for needle, outcome, kind in _CAUSE_KINDS:
        if needle in messages:
            return outcome, kind
    return None


def _aiohttp_kind(chain: list[BaseException]) -> tuple[Outcome, str] | None:
    """Errors of an aiohttp client. Deliveries no longer use one and the dispatcher does not load aiohttp
    (its import weighs as much as pyreqwest's): an aiohttp error exists only if someone loaded aiohttp."""
    aiohttp: Any = sys.modules.get("aiohttp")
    if aiohttp is None:
        return None
    if any(isinstance(e, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)) for e in chain):
        return Outcome.TLS_ERROR, "tls error"
    if any(isinstance(e, aiohttp.ServerDisconnectedError) for e in chain):
        return Outcome.CONNECTION_ERROR, "server disconnected"
    if any(isinstance(e, aiohttp.ClientConnectorDNSError) for e in chain):
        return Outcome.CONNECTION_ERROR, "dns lookup failed"
    return None


def classify_error(exc: BaseException) -> tuple[Outcome, str]:
    """Outcome and a short error kind (never the URL's query string or any secret)."""
    chain = _causes(exc)
    if any(isinstance(e, BlockedAddressError) for e in chain):
        return Outcome.BLOCKED, "blocked address"
    if any(isinstance(e, (asyncio.TimeoutError, TimeoutError)) for e in chain):
        return Outcome.TIMEOUT, "timeout"
    if isinstance(exc, DetailedPyreqwestError):
        known = _rust_cause_kind(exc)
        if known is not None:
            return known
    if any(isinstance(e, socket.gaierror) for e in chain):
        return Outcome.CONNECTION_ERROR, "dns lookup failed"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return Outcome.TLS_ERROR, "tls error"
    aiohttp_kind = _aiohttp_kind(chain)
    if aiohttp_kind is not None:
        return aiohttp_kind
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return Outcome.CONNECTION_ERROR, "connection refused"
    return Outcome.CONNECTION_ERROR, f"connection error ({type(exc).__name__})"
