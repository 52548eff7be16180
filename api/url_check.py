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
from typing import Any
from urllib.parse import urlsplit

from api.errors import ApiError
from api.quotas import too_many
from delivery.address_guard import IPNetwork, is_blocked, is_nonstandard_ip_literal

RESOLVE_TIMEOUT_S = 5.0


def _blocked(address: str, allow: Sequence[IPNetwork]) -> bool:
    try:
        return is_blocked(address, allow)
    except ValueError:  # not an IP address at all: never connect to it
        return True


def _getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    # `socket.getaddrinfo` looked up at each call: the seam a test uses to make one host's lookups hang.
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


class HostChecker:
    """Resolves webhook hosts in a small pool of its own threads.

    `loop.getaddrinfo` would use the loop's default executor, which the API's other blocking work shares
    (redrive, the key check): a burst of registrations at a slow DNS server would stall those. Here at
    most `workers` lookups run at once; a slot is freed when its lookup really ends (a thread cannot be
    cancelled), and a request that finds no free slot within the timeout gets a 503 with Retry-After.

    One account holds at most `per_account` of the slots (its own lookups, until they really end): an
    account registering hosts behind a hanging DNS server gets a 429 for its further lookups, while the
    other accounts' hosts still resolve.
    """

    def __init__(self, allow: Sequence[IPNetwork], workers: int = 4, per_account: int = 2) -> None:
        self._allow = tuple(allow)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dns")
        self._slots = asyncio.Semaphore(workers)
        self.per_account = per_account
        self._held: dict[str, int] = {}
        """Slots each account holds now (lookups not yet ended); only touched on the event loop."""

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _take(self, account_id: str) -> None:
        held = self._held.get(account_id, 0)
        if held >= self.per_account:
            raise too_many(
                f"this account has {held} webhook host lookups still running (its DNS answers slowly), the"
                f" limit is {self.per_account}; try again shortly",
                RESOLVE_TIMEOUT_S,
                "HOOKFLEET_DNS_LOOKUPS_PER_ACCOUNT",
            )
        self._held[account_id] = held + 1

    def _give_back(self, account_id: str) -> None:
        held = self._held.get(account_id, 0) - 1
        if held > 0:
            self._held[account_id] = held
        else:
            self._held.pop(account_id, None)

    async def _resolve(self, host: str, port: int, account_id: str) -> list[str]:
        loop = asyncio.get_running_loop()
        self._take(account_id)
        try:
            await asyncio.wait_for(self._slots.acquire(), RESOLVE_TIMEOUT_S)
        except TimeoutError:
            self._give_back(account_id)
            raise ApiError(
                503,
                "busy",
                "webhook url checks are queued behind slow DNS lookups; try again shortly",
                headers={"Retry-After": "5"},
            ) from None
        except BaseException:
            self._give_back(account_id)
            raise
        try:
            lookup = self._pool.submit(_getaddrinfo, host, port)
        except RuntimeError:  # the pool is shut down: the API is stopping
            self._slots.release()
            self._give_back(account_id)
            raise

        def ended() -> None:
            self._slots.release()
            self._give_back(account_id)

        lookup.add_done_callback(lambda _: loop.call_soon_threadsafe(ended))
        answers = await asyncio.wait_for(asyncio.wrap_future(lookup), RESOLVE_TIMEOUT_S)
        return [str(answer[4][0]) for answer in answers]

    async def check(self, url: str, account_id: str) -> None:
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
            addresses = set(await self._resolve(host, parts.port or 443, account_id))
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
