"""SSRF guard: which addresses a delivery may connect to (pure; docs/architecture.md#ssrf-guard).

Customer URLs are untrusted. An address is allowed only when it is globally routable: the verdict is
the standard library's `is_global` (IANA's special-purpose registries), tightened where that copy of the
registries lags or is too generous (multicast, reserved, the ranges in `_NOT_GLOBAL`), because it differs
between Python patch releases, and never a cloud platform's metadata endpoint (`_PLATFORM`: globally
routable addresses that only answer inside a cloud). The operator's allow-list opens networks for local
testing.

IPv6 translation ranges carry an IPv4 address, and what a connection reaches is that IPv4 address, so
an address in ::/96, ::ffff:0:0/96, ::ffff:0:0:0/96, 64:ff9b::/96 or 2002::/16 is judged by the IPv4
address it carries: `::ffff:10.0.0.1` is as blocked as `10.0.0.1`, `64:ff9b::8.8.8.8` as allowed as
`8.8.8.8`. The local-use NAT64 prefix 64:ff9b:1::/48 (a translator inside the operator's network) and
Teredo 2001::/32 (a tunnel) are never public destinations; their embedded IPv4 only matters for the
allow-list.

Hosts are checked before any resolver sees them: `127.1`, `2130706433`, `0177.0.0.1`, `0x7f.1` or
`127.0.0.1.` are IP addresses to an HTTP client or to `getaddrinfo` (inet_aton forms, the URL standard's
"ends in a number" rule), but not to `ipaddress`, so a check that only recognises dotted quads would
let them through. They are refused outright: nobody needs them to reach a public receiver.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NOT_GLOBAL: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        # Special-purpose ranges that some Python releases still report as global.
        "192.0.0.0/24",  # IETF protocol assignments (incl. 192.0.0.192 Oracle metadata); anycast only
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated, RFC 7526)
        "198.18.0.0/15",  # benchmarking
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): the translator is in the operator's network
        "2001::/23",  # IETF protocol assignments, incl. Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs (RFC 9602)
        "fec0::/10",  # site-local (deprecated, still routed inside some networks)
        "fd00:ec2::254/128",  # AWS metadata over IPv6 (inside fc00::/7 too; named for clarity)
    )
)

_PLATFORM: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        # Cloud platform and metadata endpoints that are globally routable addresses, so `is_global` lets them
        # through although they answer only inside the cloud, and answer there with the platform's secrets.
        "168.63.129.16/32",  # Azure WireServer (VM agent, extensions, platform DNS and health probes)
    )
)
"""Every other documented metadata endpoint is refused as not global already: 169.254.169.254 (AWS, Azure
IMDS, GCP, Oracle, DigitalOcean, OpenStack, IBM, Huawei), 169.254.0.23 (Tencent), 169.254.169.123 and
.253, 169.254.170.2, 169.254.170.23 (AWS), 100.100.100.200 (Alibaba, in CGNAT 100.64.0.0/10), 192.0.0.192
(Oracle), fd00:ec2::/64 addresses (AWS) and fd20:ce::254 (GCP, in fc00::/7): the known-answer tests list them."""

_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")

_TRANSLATED = (_V4_MAPPED, _V4_COMPATIBLE, _SIIT, _NAT64, _SIXTOFOUR)
"""Ranges whose verdict is the verdict of the IPv4 address they carry."""


def _low32(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


def embedded_ipv4s(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address an IPv6 address of a translation range stands for (empty for any other)."""
    if address in _V4_MAPPED or address in _V4_COMPATIBLE or address in _SIIT or address in _NAT64:
        return (_low32(address),)
    if address in _NAT64_LOCAL:
        # RFC 6052 puts the IPv4 address after the operator's prefix; with the usual /96 that is the low 32 bits.
        return (_low32(address),)
    if address in _SIXTOFOUR and address.sixtofour is not None:
        return (address.sixtofour,)
    if address in _TEREDO and address.teredo is not None:
        server, client = address.teredo
        return (client, server)
    return ()


def _not_global(ip: IPAddress) -> bool:
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_loopback
        or ip.is_link_local
        or any(ip.version == n.version and ip in n for n in _NOT_GLOBAL)
        or any(ip.version == n.version and ip in n for n in _PLATFORM)
    )


def _allowed(candidates: Sequence[IPAddress], allow: Sequence[IPNetwork]) -> bool:
    return any(c.version == n.version and c in n for c in candidates for n in allow)


def is_blocked(address: str | IPAddress, allow: Sequence[IPNetwork] = ()) -> bool:
    """True when a delivery must not connect to `address`. `allow` opens networks for local testing."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%")[0])
    inner = embedded_ipv4s(ip) if isinstance(ip, ipaddress.IPv6Address) else ()
    if _allowed([ip, *inner], allow):
        return False
    if inner and any(ip in network for network in _TRANSLATED):
        return any(_not_global(v4) for v4 in inner)
    return _not_global(ip) or any(_not_global(v4) for v4 in inner)


def is_nonstandard_ip_literal(host: str) -> bool:
    """True for a host that an HTTP client or `getaddrinfo` reads as an IPv4 address although it is not a
    plain dotted quad: `127.1`, `2130706433`, `0177.0.0.1`, `0x7f.1`, `127.0.0.1.` (trailing dot).

    Two readers are covered: inet_aton (what `getaddrinfo` accepts: 1-4 parts, decimal, octal, hex) and
    the URL standard's "ends in a number" rule (the last label, after one trailing dot, is decimal or
    0x-hex), which makes such a host an IPv4 address or an invalid URL, never a host name.
    """
    name = host.strip().lower()
    if name.startswith("[") or ":" in name:  # IPv6 literal: `ipaddress` parses every form urlsplit passes
        return False
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return False  # the one standard form
    try:
        socket.inet_aton(name)
    except (OSError, ValueError):
        pass
    else:
        return True
    labels = name.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    last = labels[-1] if labels else ""
    return last.isdecimal() or (last.startswith("0x") and all(c in "0123456789abcdef" for c in last[2:]))


def url_host_problem(url: str, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why a delivery must not go to `url`'s host before any DNS lookup, or None. Host names are judged
    later, on the addresses they resolve to."""
    host = urlsplit(url).hostname or ""
    if is_nonstandard_ip_literal(host):
        return f"{host[:100]} is an IP address in a non-standard form"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return f"{ip} is a blocked address" if is_blocked(ip, allow) else None


class UrlHostGuard:
    """`url_host_problem` before every connection, judged once per URL: the answer depends only on the URL
    and the allow list, and every delivery asks again. The HTTP client skips the resolver for IP literals
    (and reads `127.1` as one), so this runs before each request."""

    def __init__(self, allow: Sequence[IPNetwork] = (), size: int = 4096) -> None:
        self._allow = tuple(allow)
        self._size = size
        self._problems: dict[str, str | None] = {}

    def check(self, url: str) -> None:
        """Raise BlockedAddressError for an IP-literal host the guard refuses."""
        problem = self._problems.get(url, "")
        if problem == "":
            if len(self._problems) >= self._size:
                self._problems.clear()
            problem = self._problems[url] = url_host_problem(url, self._allow)
        if problem is not None:
            raise BlockedAddressError(problem)


class BlockedAddressError(OSError):
    """The destination resolves only to addresses the SSRF guard refuses. Never retried into the network."""
