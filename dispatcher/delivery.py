"""One signed HTTPS POST: the only HTTP code of the dispatcher, reused by the API's "Test" action so a
test delivery is byte-for-byte a real one.

One shared aiohttp session serves every delivery (keep-alive per host). The SSRF guard sits in the
resolver: blocked addresses are dropped from the answer before aiohttp connects, so the address checked
is the address used (no DNS-rebinding window), and TLS still verifies the URL's hostname.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from dispatcher.address_guard import BlockedAddressError, IPNetwork, check_url_host, is_blocked
from dispatcher.outcome import classify_error, classify_status
from dispatcher.routing import parse_retry_after
from dispatcher.signing import signature_headers
from dispatcher.subscriptions import Endpoint
from hookfleet import USER_AGENT
from hookfleet.settings import DeliverySettings
from schemas.ids import new_attempt_id
from schemas.models import AttemptRecord, Event, NextStep, Outcome

EXCERPT_BYTES = 512
_READ_CAP = 64 * 1024  # read at most this much of a response: enough to keep the connection reusable


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


def attempt_record(
    event: Event,
    webhook_id: str,
    attempt: int,
    result: DeliveryResult,
    next_step: NextStep,
    test: bool = False,
    replay_id: str | None = None,
) -> AttemptRecord:
    """The delivery-log record of one attempt: the same shape from the dispatcher and from "Test";
    `replay_id` marks the attempts of a replay in the log."""
    return AttemptRecord(
        attempt_id=new_attempt_id(),
        event_id=event.id,
        event_type=event.type,
        account_id=event.account_id,
        webhook_id=webhook_id,
        attempt=attempt,
        outcome=result.outcome,
        status_code=result.status_code,
        error=result.error,
        response_ms=result.response_ms,
        response_excerpt=result.excerpt,
        attempted_at=result.attempted_at,
        next_step=next_step,
        test=test,
        replay_id=replay_id,
        event=event,
    )


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver, then drops every address the SSRF guard refuses."""

    def __init__(self, allow: Sequence[IPNetwork]) -> None:
        self._inner = aiohttp.DefaultResolver()
        self._allow = tuple(allow)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        allowed = [a for a in answers if not is_blocked(a["host"], self._allow)]
        if not allowed:
            raise BlockedAddressError(f"{host} resolves only to blocked addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class Deliverer:
    """Owns the shared session. Create inside a running loop; `await close()` on shutdown."""

    def __init__(self, settings: DeliverySettings) -> None:
        self._allow = tuple(settings.allow_networks)
        self._timeout = aiohttp.ClientTimeout(total=settings.delivery_timeout_s)
        connector = aiohttp.TCPConnector(
            limit=0,  # bounded by the dispatcher's own global and per-endpoint limits
            ssl=tls_context(settings.ca_bundle),
            resolver=GuardedResolver(self._allow),
            ttl_dns_cache=30,
            keepalive_timeout=30,
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers={"User-Agent": USER_AGENT}, trust_env=False
        )

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
        started = time.monotonic()
        try:
            check_url_host(endpoint.url, self._allow)
            async with self._session.post(endpoint.url, data=payload, headers=headers, allow_redirects=False) as resp:
                raw = await resp.content.read(_READ_CAP)
                outcome, error = classify_status(resp.status)
                status: int | None = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), attempted_at)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raw, status, retry_after = b"", None, None
            outcome, error = classify_error(exc)
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
        await self._session.close()
