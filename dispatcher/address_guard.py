"""SSRF guard: which resolved addresses a delivery may connect to (pure; docs/architecture.md#ssrf-guard).

Customer URLs are untrusted. A hostname that resolves into the operator's network (private, loopback,
link-local, CGNAT, cloud metadata, multicast, unspecified, reserved) is refused unless the operator
allow-listed that network. IPv4-mapped and 6to4/NAT64-embedded IPv4 addresses are judged by the IPv4
address they carry, so `::ffff:10.0.0.1` is as blocked as `10.0.0.1`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, incl. 169.254.169.254 metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments (incl. 192.0.0.192 Oracle metadata)
        "192.0.2.0/24",  # TEST-NET-1
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. broadcast
        "::/128",
        "::1/128",
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
        "fd00:ec2::254/128",  # AWS metadata over IPv6 (inside fc00::/7 too; named for clarity)
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
    )
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64 well-known prefix), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_blocked(address: str | IPAddress, allow: Sequence[IPNetwork] = ()) -> bool:
    """True when a delivery must not connect to `address`. `allow` opens networks for local testing."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%")[0])
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            candidates.append(inner)
    if any(c.version == n.version and c in n for c in candidates for n in allow):
        return False
    return any(c.version == n.version and c in n for c in candidates for n in _BLOCKED_NETWORKS)


class BlockedAddressError(OSError):
    """The destination resolves only to addresses the SSRF guard refuses. Never retried into the network."""
