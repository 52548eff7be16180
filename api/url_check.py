"""The SSRF check at create/update time: a webhook URL whose host resolves only to blocked addresses
(private, loopback, link-local, metadata, ...) is refused with a 422 naming `url`.

This is the early, friendly answer. It is not the defence: DNS can change after this check, so every
delivery re-checks the addresses it actually connects to (dispatcher/delivery.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from api.errors import ApiError
from dispatcher.address_guard import IPNetwork, is_blocked, is_nonstandard_ip_literal

RESOLVE_TIMEOUT_S = 5.0


def _blocked(address: str, allow: Sequence[IPNetwork]) -> bool:
    try:
        return is_blocked(address, allow)
    except ValueError:  # not an IP address at all: never connect to it
        return True


async def check_public_host(url: str, allow: Sequence[IPNetwork]) -> None:
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
    loop = asyncio.get_running_loop()
    try:
        answers = await asyncio.wait_for(
            loop.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, UnicodeError, ValueError, TimeoutError):
        raise ApiError(
            422, "url_unresolvable", f"webhook url host {host[:100]} does not resolve; check the host name", "url"
        ) from None
    addresses = {str(answer[4][0]) for answer in answers}
    if not addresses or all(_blocked(address, allow) for address in addresses):
        raise ApiError(
            422,
            "url_blocked",
            f"webhook url host {host[:100]} resolves only to private, loopback, link-local or reserved addresses;"
            " use a publicly reachable host",
            "url",
        )
