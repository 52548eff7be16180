"""One signed HTTPS POST: the only HTTP code of the dispatcher, reused by the API's "Test" action so a
test delivery is byte-for-byte a real one.

The client is http1.py: HTTP/1.1 on the event loop's own TLS transports, parsed in C. Chosen by
measurement against aiohttp and pyreqwest (bench/RESULTS.md "HTTP client choice"): in the dispatcher's
hot path it costs about a third of what pyreqwest did per delivery, because nothing crosses a thread.

SSRF guard, and why the address checked is the address connected to: this module resolves and checks
each host itself and pins it; the client connects to that address only (it never resolves anything),
with the URL's host as the TLS server name, so a DNS answer that changes between the check and the
connect (DNS rebinding) cannot take the connection elsewhere (through an egress proxy, the CONNECT names
the checked address, never the host: egress_proxy.py). Hosts are read with the same parser the
request is built from (`parse_target`), so the host checked is the host used; `address_guard.UrlHostGuard`
refuses IP literals in non-standard forms (`127.1`) first, and IP literals are checked directly.
A pin lives `PIN_TTL_S`; the next delivery after that resolves and checks again, keeps the pool when
its address is still answered, and otherwise makes a new pinned pool (the old one closes when its last
delivery ends). A pool holds one address: when connecting to it fails, the next delivery looks the host
up again and prefers another allowed answer. Hosts idle for `IDLE_CLIENT_S` lose their pool, so memory
follows the active hosts.

Bounds: connect (TCP + TLS) within `connect_timeout_s`; the whole attempt, DNS lookup included, within
exactly `delivery_timeout_s` (one timer on the loop, not rounded up to a whole second as aiohttp's is: that
rounding made 10 s attempts end at 10.4-11.0 s). Response body kept up to 64 KiB (a longer one is cut
and its connection closed); no redirects (a 3xx is a failure); response headers limited to 100 and
64 KiB; no response decompression; TLS verified against the system roots plus `HOOKFLEET_CA_BUNDLE`.
Header names go out exactly as written.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from delivery.address_guard import BlockedAddressError, IPAddress, IPNetwork, UrlHostGuard, is_blocked
from delivery.egress_proxy import EgressProxy, ProxyError, ProxyRefused
from delivery.endpoint import Endpoint
from delivery.http1 import ConnectFailed, Pool, ProtocolError, monotonic_deadline, tls_context
from delivery.outcome import classify_error, classify_status
from delivery.retry_after import parse_retry_after
from delivery.signing import request_headers
from delivery.wire_json import attempt_json
from hookfleet import USER_AGENT, tracing
from hookfleet.settings import DeliverySettings
from schemas.ids import new_attempt_id
from schemas.models import AttemptRecord, Event, NextStep, Outcome, has_userinfo

EXCERPT_BYTES = 512
READ_CAP = 64 * 1024  # keep at most this much of a response body (a longer one closes its connection)
PIN_TTL_S = 30.0  # how long a checked address is used before the host is resolved and checked again
IDLE_CLIENT_S = 90.0  # a host's keep-alive pool is closed after this long unused
KEEPALIVE_S = 30.0  # an idle connection is not reused after this (one the server closed sooner is skipped)
DNS_RETRY_S = 5.0  # a failed refresh of a pinned host's lookup is retried this much later
DNS_THREADS = 16  # system lookups run in this many threads of their own (a lookup cannot be cancelled)
DNS_LOOKUPS_PER_ACCOUNT = 4  # lookups one account's deliveries may have running at once (one per host anyway)

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


_PATH_SAFE = "/%:@!$&'()*+,;=-._~?"


@dataclass(frozen=True, slots=True)
class Target:
    """A URL as the request is built from it: `domain` is None for an IP literal (then `address` is set)."""

    domain: str | None
    address: IPAddress | None
    port: int
    host_header: str  # what the Host header and the TLS server name say
    path: str  # path and query, percent-encoded

    @property
    def server_name(self) -> str:
        return self.domain if self.domain is not None else str(self.address)

    def request_head(self, headers: dict[str, str], length: int) -> bytes:
        lines = [f"POST {self.path} HTTP/1.1\r\nHost: {self.host_header}\r\nUser-Agent: {USER_AGENT}\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:  # the API refuses these too
                raise ValueError(f"header {name.strip()[:40]!r} is not one line")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {length}\r\n\r\n")
        return "".join(lines).encode("latin-1")


@functools.lru_cache(maxsize=4096)
def parse_target(url: str) -> Target:
    """Parsed once per URL (cached: every delivery asks again); ValueError for anything but https://host."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme.lower() != "https" or not host or has_userinfo(url):
        raise ValueError("webhook url must be https with a host")
    port = parts.port or 443
    address: IPAddress | None
    domain: str | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        address, domain = None, host.rstrip(".").encode("idna").decode("ascii")
        shown = domain
    else:
        address, domain = literal, None
        shown = f"[{literal}]" if literal.version == 6 else str(literal)
    path = quote(parts.path or "/", safe=_PATH_SAFE) + (
        f"?{quote(parts.query, safe=_PATH_SAFE)}" if parts.query else ""
    )
    return Target(domain, address, port, shown if port == 443 else f"{shown}:{port}", path)


_DNS_POOL = ThreadPoolExecutor(max_workers=DNS_THREADS, thread_name_prefix="dns")


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (the same lookup aiohttp and curl make).

    In threads of its own, not the loop's default executor: a slow DNS server holds a thread until the
    system resolver gives up, and must not take the threads other blocking work needs."""
    loop = asyncio.get_running_loop()
    infos = await loop.run_in_executor(
        _DNS_POOL, functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def checked_address(host: str, answers: Sequence[str], allow: Sequence[IPNetwork]) -> str:
    """The first answer the SSRF guard allows; refuses the host when every answer is blocked."""
    for answer in answers:
        if not is_blocked(answer, allow):
            return answer
    raise BlockedAddressError(f"{host} resolves only to blocked addresses")


def _says_about_address(exc: ConnectFailed) -> bool:
    """Whether a failed connect tells against the pinned address: the proxy itself failing does not (every
    host fails alike then), its refusal does (it could not reach, or may not reach, that address)."""
    cause = exc.__cause__
    return not isinstance(cause, ProxyError) or isinstance(cause, ProxyRefused)


@dataclass(slots=True)
class _HostClient:
    """One host's keep-alive pool and the address it is pinned to."""

    pool: Pool
    address: str | None
    checked_at: float
    last_used: float
    in_flight: int = 0
    retired: bool = False
    unreachable: bool = False  # a connect to `address` failed: the next lookup prefers another answer


@dataclass(slots=True)
class _LookupShare:
    """One account's concurrent DNS lookups: `slots` bounds them, `users` counts holders and waiters."""

    slots: asyncio.Semaphore
    users: int = 0


class Deliverer:
    """Owns the per-host clients. Create inside a running loop; `await close()` on shutdown.

    `resolve` is the DNS lookup (host, port) -> addresses; tests replace it to play a rebinding server.
    A host has one lookup running at a time, and an account at most `DNS_LOOKUPS_PER_ACCOUNT`, so one
    account's slow DNS cannot take the lookup threads every other host needs. A lookup runs to its end
    (a thread cannot be stopped), but the delivery waiting for it ends at its deadline.
    """

    def __init__(self, settings: DeliverySettings, resolve: Resolve = system_resolve) -> None:
        self._allow = tuple(settings.allow_networks)
        self._total_s = settings.delivery_timeout_s
        self._connect_s = min(settings.connect_timeout_s, settings.delivery_timeout_s)
        self._tls = tls_context(settings.ca_bundle)
        proxy = settings.egress_proxy
        self._proxy = EgressProxy.from_url(proxy.get_secret_value()) if proxy is not None else None
        self._resolve = resolve
        self._hosts: dict[str, _HostClient] = {}
        self._pending: dict[str, asyncio.Future[_HostClient]] = {}
        self._account_lookups: dict[str, _LookupShare] = {}  # accounts with lookups running or waiting
        self._literals: dict[str, _HostClient] = {}  # IP-literal hosts: no lookup, the address is the host
        self._host_guard = UrlHostGuard(self._allow)  # IP literals in non-standard forms, blocked literals

    def _build(self, server_name: str, address: str) -> Pool:
        return Pool(
            address,
            server_name,
            self._tls,
            connect_timeout_s=self._connect_s,
            keepalive_s=KEEPALIVE_S,
            body_cap=READ_CAP,
            proxy=self._proxy,
        )

    def _ready_pool(self, target: Target) -> tuple[Pool, _HostClient | None] | None:
        """The pool for `target` when no lookup is needed (an IP literal, or a host pinned less than
        `PIN_TTL_S` ago): the hot path, with no coroutine and no timer; None when a lookup must run."""
        if target.domain is None:
            assert target.address is not None
            if is_blocked(target.address, self._allow):
                raise BlockedAddressError(f"{target.address} is a blocked address")
            literal = str(target.address)
            entry = self._literals.get(literal)
            if entry is None or entry.retired:
                now = time.monotonic()
                self._sweep(now)
                entry = self._literals[literal] = _HostClient(self._build(literal, literal), literal, now, now)
            return entry.pool, entry
        host = self._hosts.get(target.domain)
        if host is not None and time.monotonic() - host.checked_at < PIN_TTL_S:
            return host.pool, host
        return None

    async def _pool_after_lookup(self, target: Target, account_id: str) -> tuple[Pool, _HostClient | None]:
        """The pool for `target` once its host is (re)resolved and checked."""
        assert target.domain is not None
        host = self._hosts.get(target.domain)
        domain = target.domain
        pending = self._pending.get(domain)
        if pending is None:  # one lookup per host at a time, however many deliveries wait for it
            pending = asyncio.ensure_future(self._pin(domain, target.port, host, account_id))
            self._pending[domain] = pending
            pending.add_done_callback(lambda done: self._lookup_done(domain, done))
        fresh = await asyncio.shield(pending)
        return fresh.pool, fresh

    def _lookup_done(self, domain: str, done: asyncio.Future[_HostClient]) -> None:
        self._pending.pop(domain, None)
        if not done.cancelled():
            done.exception()  # retrieved here too, so a lookup nobody waits for any more is not reported

    async def _lookup(self, domain: str, port: int, account_id: str) -> list[str]:
        """`resolve`, within the account's share of concurrent lookups."""
        share = self._account_lookups.get(account_id)
        if share is None:
            share = self._account_lookups[account_id] = _LookupShare(asyncio.Semaphore(DNS_LOOKUPS_PER_ACCOUNT))
        share.users += 1
        try:
            async with share.slots:
                return await self._resolve(domain, port)
        finally:
            share.users -= 1
            if share.users == 0:  # nobody holds or waits: forget the account
                del self._account_lookups[account_id]

    async def _pin(self, domain: str, port: int, current: _HostClient | None, account_id: str) -> _HostClient:
        try:
            answers = await self._lookup(domain, port, account_id)
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
        fresh = _HostClient(self._build(domain, address), address, now, now)
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
            host.pool.close()

    def _sweep(self, now: float) -> None:
        """Close the pools of hosts nobody delivered to for a while (runs only when a pool is built)."""
        for hosts in (self._hosts, self._literals):
            for name, host in list(hosts.items()):
                if host.in_flight == 0 and now - host.last_used > IDLE_CLIENT_S:
                    del hosts[name]
                    self._retire(host)

    @tracing.attempt_span  # one span per attempt when tracing is on; the method itself when off
    async def deliver(
        self, endpoint: Endpoint, event: Event, attempt: int, body: bytes | None = None
    ) -> DeliveryResult:
        """POST `event` to `endpoint`; never raises for anything the receiver or network does."""
        payload = event.body() if body is None else body
        attempted_at = datetime.now(UTC)
        secret, previous = endpoint.signing_secrets(attempted_at)
        headers = request_headers(
            secret, previous, event.id, event.type.value, attempt, int(attempted_at.timestamp()), payload,
            endpoint.headers, endpoint.signing_keys(attempted_at),
        )  # fmt: skip
        headers.update(tracing.receiver_headers())  # traceparent, when tracing and HOOKFLEET_TRACE_RECEIVERS are on
        started = time.monotonic()
        host: _HostClient | None = None
        raw = b""
        status: int | None = None
        retry_after: float | None = None
        try:
            self._host_guard.check(endpoint.url)
            target = parse_target(endpoint.url)
            loop = asyncio.get_running_loop()
            deadline = monotonic_deadline(loop, started, self._total_s)  # the whole attempt, DNS included
            ready = self._ready_pool(target)
            if ready is None:
                async with asyncio.timeout_at(deadline):
                    ready = await self._pool_after_lookup(target, endpoint.account_id)
            pool, host = ready
            if host is not None:
                host.in_flight += 1
            data = target.request_head(headers, len(payload)) + payload
            response = await pool.request(target.port, data, deadline)
            status, raw = response.status, response.body
            retry_after = parse_retry_after(response.retry_after, attempted_at)
            outcome, error = classify_status(status)
        except (OSError, ValueError, TimeoutError, ProtocolError) as exc:
            raw, status, retry_after = b"", None, None
            outcome, error = classify_error(exc)
            if host is not None and isinstance(exc, ConnectFailed) and _says_about_address(exc):
                host.unreachable = True  # look the host up again at the next delivery, preferring another address
                host.checked_at = float("-inf")
        finally:
            if host is not None:
                host.in_flight -= 1
                host.last_used = time.monotonic()
                if host.retired and host.in_flight == 0:
                    host.pool.close()
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
        for host in self._hosts.values():
            host.pool.close()
        for host in self._literals.values():
            host.pool.close()
        self._hosts.clear()
        self._literals.clear()
        await asyncio.sleep(0)  # let the transports' close callbacks run
