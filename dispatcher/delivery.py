"""One signed HTTPS POST: the only HTTP code of the dispatcher, reused by the API's "Test" action so a
test delivery is byte-for-byte a real one.

The client is pyreqwest (Rust reqwest + hyper + rustls on a tokio thread): TLS and HTTP run outside the
GIL. In the side-by-side probe it cost 0.5-0.7x aiohttp's client CPU per request at 16 connections and
about the same at 1,000; in the dispatcher the event-loop thread does 27-39 % less work per delivery
(`python -m bench.http_clients`, bench/RESULTS.md "HTTP client choice").

SSRF guard, and why the address checked is the address connected to: reqwest has no resolver hook
that Python can fill per request, so this module resolves and checks each host itself and pins it.
Every host gets its own client (its own keep-alive pool) built with `ClientBuilder.resolve(host,
checked_address)`; that client never resolves the host again, so a DNS answer that changes between the
check and the connect (DNS rebinding) cannot take the connection elsewhere. Hosts are read with
pyreqwest's own URL parser, so the host checked is byte for byte the host the client uses (`127.1` is
the IP literal 127.0.0.1 to it; `address_guard.UrlHostGuard` refuses such non-standard literals
first), and IP literals are checked directly (one shared client serves them: no DNS is involved).
A pin lives `PIN_TTL_S`; the next delivery after that resolves and checks again, keeps the client when
its address is still answered, and otherwise builds a new pinned client (the old one closes when its
last delivery ends). A client holds one address: when connecting to it fails, the next delivery looks
the host up again and prefers another allowed answer. Hosts idle for `IDLE_CLIENT_S` lose their client,
so memory follows the active hosts (~150 KB each, the system root store that every reqwest client
loads; building one costs ~10 ms of CPU, once per host).

Bounds: connect (TCP + TLS) within `connect_timeout_s`; the whole attempt within exactly
`delivery_timeout_s` (tokio's timer, not rounded up to a whole second as aiohttp's is: that rounding
made 10 s attempts end at 10.4-11.0 s). Response body read capped at 64 KiB; no redirects (a 3xx is a
failure); hyper's response header limits (100 headers, 400 KB); no response decompression; TLS
verified against the system roots plus `HOOKFLEET_CA_BUNDLE`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import ConnectError, ConnectTimeoutError, PyreqwestError
from pyreqwest.http import Url

from dispatcher.address_guard import BlockedAddressError, IPAddress, IPNetwork, UrlHostGuard, is_blocked
from dispatcher.outcome import classify_error, classify_status
from dispatcher.routing import parse_retry_after
from dispatcher.signing import signature_headers
from dispatcher.subscriptions import Endpoint
from dispatcher.wire_json import attempt_json
from hookfleet import USER_AGENT, tracing
from hookfleet.settings import DeliverySettings
from schemas.ids import new_attempt_id
from schemas.models import AttemptRecord, Event, NextStep, Outcome

EXCERPT_BYTES = 512
READ_CAP = 64 * 1024  # read at most this much of a response: enough to keep the connection reusable
PIN_TTL_S = 30.0  # how long a checked address is used before the host is resolved and checked again
IDLE_CLIENT_S = 90.0  # a host's client (and its keep-alive pool) is closed after this long unused
KEEPALIVE_S = 30.0
DNS_RETRY_S = 5.0  # a failed refresh of a pinned host's lookup is retried this much later

log = logging.getLogger(__name__)

Resolve = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome
    status_code: int | None
    error: str | None
    response_ms: int
    excerpt: str
    attempted_at: datetime
    retry_after_s: float | None = None  # the response's Retry-After, in seconds (routing.py decides its use)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS


def record_json(
    body: bytes,
    event: Event,
    webhook_id: str,
    attempt: int,
    result: DeliveryResult,
    next_step: NextStep,
    test: bool = False,
    replay_id: str | None = None,
) -> bytes:
    """The delivery-log record of one attempt, as the attempts topic carries it, with `body` (the bytes
    sent) as its event: the same shape from the dispatcher and from "Test"; `replay_id` marks a replay's
    attempts in the log."""
    return attempt_json(
        body,
        event,
        webhook_id,
        attempt,
        attempt_id=new_attempt_id(),
        outcome=result.outcome,
        status_code=result.status_code,
        error=result.error,
        response_ms=result.response_ms,
        excerpt=result.excerpt,
        attempted_at=result.attempted_at,
        next_step=next_step,
        test=test,
        replay_id=replay_id,
    )


def attempt_record(
    event: Event,
    webhook_id: str,
    attempt: int,
    result: DeliveryResult,
    next_step: NextStep,
    test: bool = False,
    replay_id: str | None = None,
) -> AttemptRecord:
    """`record_json` as the model (the API's Test stores it; tests seed logs with it)."""
    return AttemptRecord.model_validate_json(
        record_json(event.body(), event, webhook_id, attempt, result, next_step, test, replay_id)
    )


@dataclass(frozen=True, slots=True)
class Target:
    """A URL as the HTTP client reads it: `domain` is None for an IP literal (then `address` is set)."""

    url: Url
    domain: str | None
    address: IPAddress | None
    port: int


@functools.lru_cache(maxsize=4096)
def parse_target(url: str) -> Target:
    """Parsed with the client's own parser (cached: every delivery asks again)."""
    parsed = Url(url)
    host = parsed.host_str
    port = parsed.port_or_known_default
    if parsed.scheme != "https" or not host or port is None:
        raise ValueError("webhook url must be https with a host")
    domain = parsed.domain
    address = None if domain is not None else ipaddress.ip_address(host.strip("[]"))
    return Target(parsed, domain, address, port)


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (the same lookup aiohttp and curl make)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def checked_address(host: str, answers: Sequence[str], allow: Sequence[IPNetwork]) -> str:
    """The first answer the SSRF guard allows; refuses the host when every answer is blocked."""
    for answer in answers:
        if not is_blocked(answer, allow):
            return answer
    raise BlockedAddressError(f"{host} resolves only to blocked addresses")


def _ca_pems(ca_bundle: str) -> list[bytes]:
    """Each certificate of a PEM bundle on its own (a client adds roots one certificate at a time)."""
    end = b"-----END CERTIFICATE-----"
    text = Path(ca_bundle).read_bytes()
    return [part.strip() + b"\n" + end + b"\n" for part in text.split(end) if b"-----BEGIN" in part]


@dataclass(slots=True)
class _HostClient:
    """One host's client and the address it is pinned to."""

    client: Client
    address: str | None
    checked_at: float
    last_used: float
    in_flight: int = 0
    retired: bool = False
    unreachable: bool = False  # a connect to `address` failed: the next lookup prefers another answer


class Deliverer:
    """Owns the per-host clients. Create inside a running loop; `await close()` on shutdown.

    `resolve` is the DNS lookup (host, port) -> addresses; tests replace it to play a rebinding server.
    """

    def __init__(self, settings: DeliverySettings, resolve: Resolve = system_resolve) -> None:
        self._allow = tuple(settings.allow_networks)
        self._total = timedelta(seconds=settings.delivery_timeout_s)
        self._connect = timedelta(seconds=min(settings.connect_timeout_s, settings.delivery_timeout_s))
        self._roots = _ca_pems(settings.ca_bundle) if settings.ca_bundle else []
        self._resolve = resolve
        self._hosts: dict[str, _HostClient] = {}
        self._pending: dict[str, asyncio.Future[_HostClient]] = {}
        self._literal_client: Client | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._host_guard = UrlHostGuard(self._allow)  # IP literals in non-standard forms, blocked literals

    def _build(self, domain: str | None = None, address: str | None = None, port: int = 443) -> Client:
        builder = (
            ClientBuilder()
            .user_agent(USER_AGENT)
            .follow_redirects(False)
            .referer(False)
            .timeout(self._total)
            .connect_timeout(self._connect)
            .pool_idle_timeout(timedelta(seconds=KEEPALIVE_S))
            .https_only(True)
            .no_proxy()
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
        )
        for pem in self._roots:
            builder = builder.add_root_certificate_pem(pem)
        if domain is not None and address is not None:
            builder = builder.resolve(domain, address, port)
        return builder.build()

    async def _client_for(self, target: Target) -> tuple[Client, _HostClient | None]:
        if target.domain is None:
            assert target.address is not None
            if is_blocked(target.address, self._allow):
                raise BlockedAddressError(f"{target.address} is a blocked address")
            if self._literal_client is None:
                self._literal_client = self._build()
            return self._literal_client, None
        now = time.monotonic()
        host = self._hosts.get(target.domain)
        if host is not None and now - host.checked_at < PIN_TTL_S:
            return host.client, host
        domain = target.domain
        pending = self._pending.get(domain)
        if pending is None:  # one lookup per host at a time, however many deliveries wait for it
            pending = asyncio.ensure_future(self._pin(domain, target.port, host))
            self._pending[domain] = pending
            pending.add_done_callback(lambda done: self._lookup_done(domain, done))
        fresh = await asyncio.shield(pending)
        return fresh.client, fresh

    def _lookup_done(self, domain: str, done: asyncio.Future[_HostClient]) -> None:
        self._pending.pop(domain, None)
        if not done.cancelled():
            done.exception()  # retrieved here too, so a lookup nobody waits for any more is not reported

    async def _pin(self, domain: str, port: int, current: _HostClient | None) -> _HostClient:
        try:
            answers = await self._resolve(domain, port)
        except OSError:
            if current is None or current.retired:
                raise
            # DNS failing while the pinned address (checked earlier) still serves: keep it, look up again soon.
            current.checked_at = time.monotonic() - PIN_TTL_S + DNS_RETRY_S
            log.warning("event=dns_refresh_failed host_pinned=true retry_in_s=%s", DNS_RETRY_S)
            return current
        now = time.monotonic()
        if current is not None and current.retired:  # closed meanwhile (idle sweep): start afresh
            current = None
        if current is not None and current.unreachable:  # try the other answers first, this one last
            answers = [a for a in answers if a != current.address] + [a for a in answers if a == current.address]
        elif current is not None and current.address in answers:
            answers = [current.address]  # still answered: keep the client and its pool (checked below)
        address = checked_address(domain, answers, self._allow)
        if current is not None and address == current.address:
            current.checked_at, current.unreachable = now, False
            return current
        fresh = _HostClient(self._build(domain, address, port), address, now, now)
        if current is not None and self._hosts.get(domain) is current:
            del self._hosts[domain]
            self._retire(current)
        self._sweep(now)
        self._hosts[domain] = fresh
        return fresh

    def _retire(self, host: _HostClient) -> None:
        if host.retired:
            return
        host.retired = True
        if host.in_flight == 0:
            self._close_later(host.client)

    def _sweep(self, now: float) -> None:
        """Close clients of hosts nobody delivered to for a while (runs only when a client is built)."""
        for domain, host in list(self._hosts.items()):
            if host.in_flight == 0 and now - host.last_used > IDLE_CLIENT_S:
                del self._hosts[domain]
                self._retire(host)

    def _close_later(self, client: Client) -> None:
        task = asyncio.ensure_future(client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @tracing.attempt_span  # one span per attempt when tracing is on; the method itself when off
    async def deliver(
        self, endpoint: Endpoint, event: Event, attempt: int, body: bytes | None = None
    ) -> DeliveryResult:
        """POST `event` to `endpoint`; never raises for anything the receiver or network does."""
        payload = event.body() if body is None else body
        attempted_at = datetime.now(UTC)
        secret, previous = endpoint.signing_secrets(attempted_at)
        headers: dict[str, Any] = signature_headers(
            secret, previous, event.id, event.type.value, attempt, int(attempted_at.timestamp()), payload
        )
        headers["Content-Type"] = "application/json"
        # The webhook's own headers (e.g. Authorization); reserved names are refused when they are set.
        headers.update(endpoint.headers)
        headers.update(tracing.receiver_headers())  # traceparent, when tracing and HOOKFLEET_TRACE_RECEIVERS are on
        started = time.monotonic()
        host: _HostClient | None = None
        raw = b""
        status: int | None = None
        retry_after: float | None = None
        try:
            self._host_guard.check(endpoint.url)
            target = parse_target(endpoint.url)
            client, host = await self._client_for(target)
            if host is not None:
                host.in_flight += 1
            request = client.post(target.url).headers(headers).body_bytes(payload).build_streamed()
            async with request as response:
                status = response.status
                raw = await _read_capped(response.body_reader)
                retry_after = parse_retry_after(response.get_header("Retry-After"), attempted_at)
            outcome, error = classify_status(status)
        except (PyreqwestError, OSError, ValueError, TimeoutError) as exc:
            raw, status, retry_after = b"", None, None
            outcome, error = classify_error(exc)
            if host is not None and isinstance(exc, (ConnectError, ConnectTimeoutError)):
                host.unreachable = True  # look the host up again at the next delivery, preferring another address
                host.checked_at = float("-inf")
        finally:
            if host is not None:
                host.in_flight -= 1
                host.last_used = time.monotonic()
                if host.retired and host.in_flight == 0:
                    self._close_later(host.client)
        elapsed_ms = round((time.monotonic() - started) * 1000)
        return DeliveryResult(
            outcome=outcome,
            status_code=status,
            error=error,
            response_ms=elapsed_ms,
            excerpt=raw[:EXCERPT_BYTES].decode("utf-8", errors="replace")[:EXCERPT_BYTES],
            attempted_at=attempted_at,
            retry_after_s=retry_after,
        )

    async def close(self) -> None:
        clients = [h.client for h in self._hosts.values()]
        if self._literal_client is not None:
            clients.append(self._literal_client)
        self._hosts.clear()
        self._literal_client = None
        await asyncio.gather(*(c.close() for c in clients), *self._closing, return_exceptions=True)


async def _read_capped(reader: Any) -> bytes:
    """The body up to READ_CAP bytes; a longer body is cut (and its connection not reused)."""
    chunks: list[bytes] = []
    size = 0
    while size < READ_CAP:
        chunk = await reader.read(READ_CAP - size)
        if not chunk:
            break
        data = bytes(chunk)
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)
