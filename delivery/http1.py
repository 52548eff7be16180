"""HTTP/1.1 over TLS on the event loop's own transports: the delivery client (docs/architecture.md#delivery-client).

Why a small client of our own: a delivery is one POST of a body we already hold, to an address the SSRF
guard already checked, answered by a status and a short body. General clients pay for what a delivery
never uses, and the one that ran TLS in native threads (pyreqwest) paid per await with a hand-over to and
from its own thread: in the dispatcher, HTTP cost 390 us of CPU per delivery with it, about 130 us here,
where the request is one `write` on a uvloop TLS transport and the answer is parsed in C (httptools,
llhttp) from `data_received` (bench/RESULTS.md "HTTP client choice").

What it does, and nothing more: one request at a time per connection, keep-alive pools per pinned
(address, port, TLS server name), connects only to the address it is given (no DNS here: the caller pins
the checked address; through an egress proxy, a CONNECT tunnel to that address, egress_proxy.py), TLS
verified against the server name, a connect bound and one absolute deadline for the whole exchange,
response headers limited (`MAX_HEADERS`, `MAX_HEADER_BYTES`), the body kept up to a cap (a longer one
is cut and its connection closed), no redirects (a 3xx is just a status), no decompression, interim 1xx
answers skipped.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools

from delivery.egress_proxy import EgressProxy, open_tunnel

MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 * 1024


class ProtocolError(Exception):
    """The answer is not an HTTP/1.1 response this client accepts (malformed, too many headers, upgrade)."""


class InvalidStatus(ProtocolError):
    """The status code is outside 100-599: no HTTP status, so no outcome can be read from it."""


class ServerDisconnected(ConnectionError):
    """The connection ended before the response's status line and headers arrived."""


class ConnectFailed(OSError):
    """Connecting (TCP and TLS) to the pinned address failed; the cause says why."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes  # at most the pool's body cap
    retry_after: str | None  # the Retry-After header, as sent


class _Connection(asyncio.Protocol):
    """One TLS connection; `exchange` sends a request and resolves with its response."""

    def __init__(self, body_cap: int) -> None:
        self._cap = body_cap
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._error: Exception | None = None  # raised by a parser callback (httptools wraps it)
        self._reset()
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0

    def _reset(self) -> None:
        self._status = 0
        # One buffer, not a list of fragments: a body sent as many tiny chunks would otherwise hold an object
        # header (~33 bytes) per byte kept, and the cap would bound the bytes counted instead of the memory.
        self._body = bytearray()
        self._headers = 0
        self._header_bytes = 0
        self._retry_after: str | None = None
        self._headers_done = False
        self._complete = False  # the final response of this exchange is in: anything after it is refused
        self._head_bytes = 0  # received before the headers were complete: bounded, as the parser buffers them

    def exchange(self, data: bytes) -> asyncio.Future[Response]:
        assert self._transport is not None
        self._reset()
        self.reusable = False
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return waiter

    def abort(self) -> None:
        """Close at once (timeout, cancellation, a cut body): the connection's state is unknown."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def time_out(self) -> None:
        self._fail(TimeoutError())
        self.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's TLS transport is not a subclass

    def data_received(self, data: bytes) -> None:
        """Bytes after the response (in a later read, or in the same one: another response or anything the
        parser refuses) abort the connection, so they are never read as the answer to the next request.
        Empty lines, which HTTP/1.1 clients ignore before a status line, are all the parser skips."""
        if self._waiter is None:  # bytes nobody asked for: this connection cannot be trusted any more
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols"))
            self.abort()
            return
        except httptools.HttpParserError as exc:
            self._fail(self._error or ProtocolError(f"invalid HTTP response ({type(exc).__name__})"))
            self.abort()
            return
        if not self._headers_done and self._waiter is not None:  # the parser holds an unfinished head
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES + 8192:  # the status line and framing besides the headers
                self._fail(ProtocolError(f"response head over {MAX_HEADER_BYTES} bytes"))
                self.abort()

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended(exc)

    def _ended(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None:
            return
        if self._headers_done:  # a body delimited by the close, or cut short: the status is known
            self._done()
            return
        error = ServerDisconnected("server disconnected")
        error.__cause__ = exc
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _done(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, bytes(self._body), self._retry_after))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:  # a second response in the same read, which nobody asked for: never pool this
            self._error = ProtocolError("bytes after the response")
            raise self._error

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        self._header_bytes += len(name) + len(value)
        if self._headers > MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            self._error = ProtocolError(f"response headers over the limit ({MAX_HEADERS} or {MAX_HEADER_BYTES} bytes)")
            raise self._error
        if len(name) == 11 and name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if not 100 <= status <= 599:  # llhttp reads any three digits ("000", "999")
            self._error = InvalidStatus(f"status code {status:03d} is outside 100-599")
            raise self._error
        self._status = status
        self._headers_done = True

    @property
    def body_kept(self) -> int:
        """Bytes of the current response body held so far (at most the cap)."""
        return len(self._body)

    def on_body(self, body: bytes) -> None:
        room = self._cap - len(self._body)
        if len(body) <= room:
            self._body += body
            return
        if room > 0:
            self._body += body[:room]
        if self._waiter is not None:  # over the cap: answer with what is kept, drop the rest with the connection
            self._done()
            self.abort()

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer (100 Continue, 103 Early Hints): the final one follows
            self._reset()
            return
        self._complete = True
        self.reusable = not self.closed and self._parser.should_keep_alive()
        self._done()


class Pool:
    """Keep-alive connections to one pinned address (any port) under one TLS server name; through `proxy`,
    each connection is a CONNECT tunnel to that address, kept alive like a direct one."""

    def __init__(
        self,
        address: str,
        server_name: str,
        context: ssl.SSLContext,
        *,
        connect_timeout_s: float,
        keepalive_s: float,
        body_cap: int,
        proxy: EgressProxy | None = None,
    ) -> None:
        self.address = address
        self._proxy = proxy
        self._server_name = server_name
        self._context = context
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._cap = body_cap
        self._idle: dict[int, deque[_Connection]] = {}  # per port, oldest first; the newest is reused first
        self._closed = False
        self.connections_opened = 0

    async def request(self, port: int, data: bytes, deadline: float) -> Response:
        """Send `data` (head and body) to `port` and return the response; `deadline` is in `loop.time()`.

        A kept-alive connection that the server closed just as the request went out fails before any
        answer: that request is sent once more on a new connection (a receiver may then see it twice,
        which the event id lets it ignore; not sending it at all would cost a retry 10 s later)."""
        loop = asyncio.get_running_loop()
        idle = self._idle.get(port)
        if idle is None:
            idle = self._idle[port] = deque()
        conn = self._checkout(idle, loop.time())
        if conn is not None:
            try:
                return await self._exchange(loop, idle, conn, data, deadline)
            except ServerDisconnected:
                pass
        conn = await self._connect(loop, port, deadline)
        return await self._exchange(loop, idle, conn, data, deadline)

    def close(self) -> None:
        """Close idle connections now; busy ones close when their response is in."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.popleft().close()

    def _checkout(self, idle: deque[_Connection], now: float) -> _Connection | None:
        while idle and (idle[0].closed or now - idle[0].idle_since > self._keepalive_s):
            idle.popleft().close()
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, port: int, deadline: float) -> _Connection:
        timeout = min(self._connect_timeout_s, deadline - loop.time())
        if timeout <= 0:
            raise TimeoutError()
        self.connections_opened += 1
        try:
            async with asyncio.timeout(timeout):
                if self._proxy is not None:
                    return await self._connect_through(loop, self._proxy, port, timeout)
                _, conn = await loop.create_connection(
                    lambda: _Connection(self._cap),
                    self.address,
                    port,
                    ssl=self._context,
                    server_hostname=self._server_name,
                    ssl_handshake_timeout=timeout,
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"connect failed ({type(exc).__name__})") from exc
        return conn

    async def _connect_through(
        self, loop: asyncio.AbstractEventLoop, proxy: EgressProxy, port: int, handshake_s: float
    ) -> _Connection:
        """A CONNECT tunnel to the pinned address (never the host name), then TLS inside it with the URL's
        host as server name: the same connection as a direct one, end to end with the receiver."""
        tunnel = await open_tunnel(loop, proxy, self.address, port)
        conn = _Connection(self._cap)
        try:
            tls = await loop.start_tls(
                tunnel, conn, self._context, server_hostname=self._server_name, ssl_handshake_timeout=handshake_s
            )
        except BaseException:
            tunnel.abort()
            raise
        if tls is None:  # only for a transport that is closing; start_tls raises otherwise
            raise ConnectionResetError("egress proxy tunnel closed during the TLS handshake")
        conn.connection_made(tls)  # start_tls does not call it
        return conn

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        idle: deque[_Connection],
        conn: _Connection,
        data: bytes,
        deadline: float,
    ) -> Response:
        timer = loop.call_at(deadline, conn.time_out)
        try:
            response = await conn.exchange(data)
        except BaseException:
            conn.abort()
            raise
        finally:
            timer.cancel()
        if conn.reusable and not conn.closed and not self._closed:
            conn.idle_since = loop.time()
            idle.append(conn)
        else:
            conn.close()
        return response


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """System roots plus `ca_bundle`; certificates and the server name verified; HTTP/1.1 offered by ALPN."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    context.set_alpn_protocols(["http/1.1"])
    return context


def monotonic_deadline(loop: asyncio.AbstractEventLoop, started: float, total_s: float) -> float:
    """`started` (time.monotonic) plus `total_s`, on the loop's clock (uvloop's clock is its own)."""
    return loop.time() + total_s - (time.monotonic() - started)
