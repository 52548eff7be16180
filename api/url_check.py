"""The SSRF check at create/update time: a webhook URL whose host resolves only to blocked addresses
(private, loopback, link-local, metadata, ...) is refused with a 422 naming `url`.

This is the early, friendly answer. It is not the defence: DNS can change after this check, so every
delivery re-checks the addresses it actually connects to (delivery/deliverer.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from api.errors import ApiError
from delivery.address_guard import IPNetwork, is_blocked, is_nonstandard_ip_literal

RESOLVE_TIMEOUT_S = 5.0


def _blocked(address: str, allow: Sequence[IPNetwork]) -> bool:
    try:
        return is_blocked(address, allow)
    except ValueError:  # not an IP address at all: never connect to it
        return True


class HostChecker:
    """Resolves webhook hosts in a small pool of its own threads.

    `loop.getaddrinfo` would use the loop's default executor, which the API's other blocking work shares
    (redrive, the key check): a burst of registrations at a slow DNS server would stall those. Here at
    most `workers` lookups run at once; a slot is freed when its lookup really ends (a thread cannot be
    cancelled), and a request that finds no free slot within the timeout gets a 503 with Retry-After.
    """

    def __init__(self, allow: Sequence[IPNetwork], workers: int = 4) -> None:
        self._allow = tuple(allow)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dns")
        self._slots = asyncio.Semaphore(workers)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self._slots.acquire(), RESOLVE_TIMEOUT_S)
        except TimeoutError:
            raise ApiError(
                503,
                "busy",
                "webhook url checks are queued behind slow DNS lookups; try again shortly",
                headers={"Retry-After": "5"},
            ) from None
        try:
            lookup = self._pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        except RuntimeError:  # the pool is shut down: the API is stopping
            self._slots.release()
            raise
        lookup.add_done_callback(lambda _: loop.call_soon_threadsafe(self._slots.release))
        answers = await asyncio.wait_for(asyncio.wrap_future(lookup), RESOLVE_TIMEOUT_S)
        return [str(answer[4][0]) for answer in answers]

    async def check(self, url: str) -> None:
        """422 naming `url` unless its host resolves to at least one public (or allow-listed) address."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if is_nonstandard_ip_literal(host):
            raise ApiError(
                422,
                "url_blocked",
                f"webhook url host {host[:100]} is an IP address in a non-standard form;"
                " use a host name (or a plain dotted-quad public address)",
                "url",
            )
        try:
            addresses = set(await self._resolve(host, parts.port or 443))
        except (OSError, UnicodeError, ValueError, TimeoutError):
            raise ApiError(
                422, "url_unresolvable", f"webhook url host {host[:100]} does not resolve; check the host name", "url"
            ) from None
        if not addresses or all(_blocked(address, self._allow) for address in addresses):
            raise ApiError(
                422,
                "url_blocked",
                f"webhook url host {host[:100]} resolves only to private, loopback, link-local or reserved"
                " addresses; use a publicly reachable host",
                "url",
            )
