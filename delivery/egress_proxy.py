"""Egress through an HTTP forward proxy: a CONNECT tunnel to the checked address (docs/architecture.md#egress-proxy).

Why the CONNECT names the address and never the host: the SSRF guard resolved and checked the host
(deliverer.py) and the pool is pinned to that address. A proxy handed a host name would resolve it again, and
a DNS answer that changed since the check (rebinding) would take the connection inside the proxy's network.
Handed the checked IP address, the proxy resolves nothing. TLS then runs inside the tunnel, end to end with
the receiver, verified against the URL's host (http1.py): the proxy sees only the address and the bytes.

The proxy's own host name is the operator's, not a customer's: it is resolved by the system, unchecked.
Its password (`http://user:password@host:port`) goes only into the `Proxy-Authorization` header of each
CONNECT: never into an error text, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import unquote, urlsplit

MAX_ANSWER_HEAD = 16 * 1024  # a CONNECT answer's status line and headers; a longer head is no proxy's answer
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: |\r\n)")


class ProxyError(ConnectionError):
    """The proxy failed the tunnel; `str()` is the delivery log's error text (it names no secret)."""


class ProxyRefused(ProxyError):
    """The proxy answered CONNECT with a non-2xx status (403 its ACL, 407 its credentials, 502/503 the
    destination unreachable from the proxy)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"egress proxy refused CONNECT: {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class EgressProxy:
    """Where the proxy listens, and the `Proxy-Authorization` value when it wants Basic credentials."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # carries the password: never shown

    @classmethod
    def from_url(cls, url: str) -> EgressProxy:
        """`http://[user:password@]host:port` (hookfleet/settings.py checked its shape; percent-escapes in the
        credentials are decoded, as in any URL)."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError("egress proxy must be http://[user:password@]host:port")
        authorization = None
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
        return cls(parts.hostname, parts.port, authorization)

    def connect_request(self, address: str, port: int) -> bytes:
        """The CONNECT for `address` (an IP address, never a host name) and `port`."""
        authority = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if self.authorization is not None:
            head += f"Proxy-Authorization: {self.authorization}\r\n"
        return (head + "\r\n").encode("latin-1")


_UNREACHABLE = {ConnectionRefusedError: "connection refused", socket.gaierror: "dns lookup failed"}


class _Tunnel(asyncio.Protocol):
    """Reads the proxy's answer to one CONNECT; nothing more ever reaches it (TLS takes the transport over)."""

    def __init__(self) -> None:
        self.answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._head = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.answered.done():  # TLS has not started: the receiver cannot have spoken yet
            self._fail(ProxyError("egress proxy sent bytes after its CONNECT answer"))
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_ANSWER_HEAD:
                self._fail(ProxyError(f"egress proxy answer head over {MAX_ANSWER_HEAD} bytes"))
            return
        match = _STATUS_LINE.match(self._head)
        if match is None:
            self._fail(ProxyError("egress proxy answered CONNECT with no HTTP status"))
            return
        status = int(match.group(1))
        if not 200 <= status < 300:
            self._fail(ProxyRefused(status))  # its error page is not read
            return
        if end + 4 != len(self._head):
            self._fail(ProxyError("egress proxy sent bytes after its CONNECT answer"))
            return
        assert self.transport is not None
        self.transport.pause_reading()  # until TLS takes over the transport
        self.answered.set_result(status)

    def eof_received(self) -> bool:
        self._fail(ProxyError("egress proxy closed the connection before answering CONNECT"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        error = ProxyError("egress proxy closed the connection before answering CONNECT")
        error.__cause__ = exc
        self._fail(error)

    def _fail(self, error: ProxyError) -> None:
        if not self.answered.done():
            self.answered.set_exception(error)
        if self.transport is not None:
            self.transport.abort()


async def open_tunnel(
    loop: asyncio.AbstractEventLoop, proxy: EgressProxy, address: str, port: int
) -> asyncio.Transport:
    """A TCP connection to the proxy, tunnelled by CONNECT to `address`:`port`, ready for TLS to start on it.

    Raises ProxyRefused (non-2xx answer), ProxyError (no connection to the proxy, or no valid answer); the
    caller's timeout bounds it (a proxy that hangs never answers)."""
    try:
        transport, tunnel = await loop.create_connection(_Tunnel, proxy.host, proxy.port)
    except OSError as exc:
        kind = _UNREACHABLE.get(type(exc), type(exc).__name__)
        raise ProxyError(f"egress proxy unreachable ({kind})") from exc
    try:
        transport.write(proxy.connect_request(address, port))
        await tunnel.answered
    except BaseException:
        transport.abort()
        raise
    return transport
