"""Classify one HTTP attempt as a delivery outcome: pure (docs/architecture.md#wire-contract).

Success is any 2xx. Everything else fails: another status (a 3xx too: redirects are not followed, as
they could point inside the network), timeout, TLS error, connection error, or a blocked address.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from delivery.address_guard import BlockedAddressError
from delivery.egress_proxy import ProxyError
from delivery.http1 import InvalidStatus, ProtocolError, ServerDisconnected
from schemas.models import Outcome


def classify_status(status: int) -> tuple[Outcome, str | None]:
    if 200 <= status < 300:
        return Outcome.SUCCESS, None
    if 300 <= status < 400:
        return Outcome.HTTP_ERROR, f"http {status} (redirects are not followed)"
    return Outcome.HTTP_ERROR, f"http {status}"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (http1.py's `ConnectFailed` carries the resolver, TCP or TLS error)."""
    seen: list[BaseException] = []
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        stack.extend([getattr(current, "os_error", None), current.__cause__, current.__context__])
    return seen


def classify_error(exc: BaseException) -> tuple[Outcome, str]:
    """Outcome and a short error kind (never the URL's query string or any secret)."""
    chain = _causes(exc)
    if any(isinstance(e, BlockedAddressError) for e in chain):
        return Outcome.BLOCKED, "blocked address"
    if any(isinstance(e, (asyncio.TimeoutError, TimeoutError)) for e in chain):
        return Outcome.TIMEOUT, "timeout"
    proxy = next((e for e in chain if isinstance(e, ProxyError)), None)
    if proxy is not None:  # the egress proxy refused or failed the tunnel: its own text, which names no secret
        return Outcome.CONNECTION_ERROR, str(proxy)
    if any(isinstance(e, socket.gaierror) for e in chain):
        return Outcome.CONNECTION_ERROR, "dns lookup failed"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return Outcome.TLS_ERROR, "tls error"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return Outcome.CONNECTION_ERROR, "connection refused"
    if any(isinstance(e, (ServerDisconnected, ConnectionResetError, BrokenPipeError)) for e in chain):
        return Outcome.CONNECTION_ERROR, "server disconnected"
    if any(isinstance(e, InvalidStatus) for e in chain):
        return Outcome.CONNECTION_ERROR, "invalid status code"
    if any(isinstance(e, ProtocolError) for e in chain):
        return Outcome.CONNECTION_ERROR, "invalid response"
    return Outcome.CONNECTION_ERROR, f"connection error ({type(exc).__name__})"
