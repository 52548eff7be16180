"""Known answers of the SSRF guard: every special-purpose range, every IPv6 translation range judged by
the IPv4 address it carries, and every non-standard IPv4 literal form, at the guard and at the delivery
check (`UrlHostGuard`)."""

from __future__ import annotations

import ipaddress

import pytest

from delivery.address_guard import (
    BlockedAddressError,
    UrlHostGuard,
    embedded_ipv4s,
    is_blocked,
    is_nonstandard_ip_literal,
)

PUBLIC_V4 = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.32.0.1", "100.128.0.1", "192.0.3.1", "192.88.100.1"]
PUBLIC_V6 = ["2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001:80b::200e"]

NOT_GLOBAL_V4 = [
    "0.0.0.0",  # noqa: S104 - a verdict, not a bind
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",  # cloud metadata
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.9",  # IETF protocol assignments (anycast), reported global by some Pythons
    "192.0.0.192",  # Oracle metadata
    "192.0.2.1",  # TEST-NET-1
    "192.88.99.1",  # 6to4 relay anycast
    "192.168.1.1",
    "198.18.0.1",  # benchmarking
    "198.51.100.1",  # TEST-NET-2
    "203.0.113.1",  # TEST-NET-3
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
]
NOT_GLOBAL_V6 = [
    "::",
    "::1",
    "100::1",  # discard-only
    "2001::1",  # Teredo
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, RFC 4380's example
    "2001:2::1",  # benchmarking
    "2001:10::1",  # ORCHID
    "2001:db8::1",  # documentation
    "3fff::1",  # documentation (RFC 9637)
    "5f00::1",  # SRv6
    "64:ff9b:1::808:808",  # local-use NAT64, even of a public IPv4
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 of the metadata address
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",  # site-local
    "ff02::1",
    "ff0e::1",  # global-scope multicast is still multicast
    "1000::1",  # unallocated (reserved)
]

# (address, embedded IPv4) for every translation range
TRANSLATED = [
    ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
    ("::ffff:a9fe:a9fe", "169.254.169.254"),
    ("::7f00:1", "127.0.0.1"),  # IPv4-compatible ::/96
    ("::a00:1", "10.0.0.1"),
    ("::ffff:0:7f00:1", "127.0.0.1"),  # SIIT ::ffff:0:0:0/96
    ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 well-known prefix
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
    ("2002:7f00:1::", "127.0.0.1"),  # 6to4
    ("2002:a00:1::", "10.0.0.1"),
    ("2002:c058:6301::", "192.88.99.1"),
]
TRANSLATED_PUBLIC = ["::ffff:8.8.8.8", "::808:808", "::ffff:0:808:808", "64:ff9b::808:808", "2002:808:808::"]


# The documented platform and metadata endpoints of the major clouds (each provider's own docs).
CLOUD_METADATA = [
    "169.254.169.254",  # AWS, Azure IMDS, GCP, Oracle, DigitalOcean, OpenStack, IBM Cloud, Huawei
    "169.254.169.123",  # AWS Time Sync
    "169.254.169.253",  # AWS VPC DNS (Nitro)
    "169.254.170.2",  # AWS ECS task metadata and credentials
    "169.254.170.23",  # AWS EKS Pod Identity
    "fd00:ec2::254",  # AWS metadata over IPv6
    "fd00:ec2::23",  # AWS EKS Pod Identity over IPv6
    "fd00:ec2::123",  # AWS Time Sync over IPv6
    "168.63.129.16",  # Azure WireServer: globally routable, answers only inside Azure
    "::ffff:168.63.129.16",  # ... as an IPv4-mapped address
    "64:ff9b::a83f:8110",  # ... through NAT64
    "2002:a83f:8110::",  # ... through 6to4
    "fd20:ce::254",  # GCP metadata over IPv6
    "100.100.100.200",  # Alibaba Cloud metadata (in CGNAT 100.64.0.0/10)
    "192.0.0.192",  # Oracle Cloud metadata (legacy)
    "169.254.0.23",  # Tencent Cloud metadata
]


@pytest.mark.parametrize("address", CLOUD_METADATA)
def test_cloud_platform_and_metadata_endpoints_are_blocked(address: str) -> None:
    assert is_blocked(address)
    with pytest.raises(BlockedAddressError):
        UrlHostGuard().check(f"https://{'[' + address + ']' if ':' in address else address}/hook")


def test_azure_wireserver_neighbours_stay_public() -> None:
    assert not is_blocked("168.63.129.15") and not is_blocked("168.63.129.17")


@pytest.mark.parametrize("address", PUBLIC_V4 + PUBLIC_V6 + TRANSLATED_PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert not is_blocked(address)


@pytest.mark.parametrize("address", NOT_GLOBAL_V4 + NOT_GLOBAL_V6)
def test_addresses_that_are_not_globally_routable_are_blocked(address: str) -> None:
    assert is_blocked(address)


@pytest.mark.parametrize(("address", "inner"), TRANSLATED)
def test_translation_ranges_are_judged_by_the_ipv4_they_carry(address: str, inner: str) -> None:
    ip = ipaddress.IPv6Address(address)
    assert ipaddress.IPv4Address(inner) in embedded_ipv4s(ip)
    assert is_blocked(address)
    assert not is_blocked(address, [ipaddress.ip_network(f"{inner}/32")])  # the allow-list sees it too


def test_teredo_carries_server_and_client() -> None:
    server, client = ipaddress.IPv4Address("65.54.227.120"), ipaddress.IPv4Address("192.0.2.45")
    assert embedded_ipv4s(ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:3fff:fdd2")) == (client, server)


def test_allow_list_opens_only_its_network() -> None:
    allow = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert not is_blocked("127.0.0.1", allow)
    assert not is_blocked("::ffff:127.0.0.1", allow)
    assert not is_blocked("::1", allow)
    assert is_blocked("10.0.0.1", allow)
    assert is_blocked("169.254.169.254", allow)
    assert is_blocked("64:ff9b::a9fe:a9fe", allow)


NONSTANDARD = [
    "127.1",
    "127.0.1",
    "2130706433",  # 127.0.0.1 as one number
    "0177.1",  # octal
    "0177.0.0.1",
    "0x7f.1",  # hex
    "0X7F.0.0.1",
    "0x7f000001",
    "017700000001",
    "127.0.0.1.",  # trailing dot
    "8.8.8.8.",
    "10.0.0.1.",
    "example.123",  # the URL standard reads "ends in a number" hosts as IPv4 (or an invalid URL)
    "example.0x1f",
    "1.2.3.4.5",
]
STANDARD_HOSTS = [
    "127.0.0.1",
    "8.8.8.8",
    "example.com",
    "example.com.",
    "crm.example.com",
    "1e100.net",
    "x1.io",
    "::1",
    "[::1]",
    "fe80::1%eth0",
    "0xdeadbeef.example.com",
    "localhost",
]


@pytest.mark.parametrize("host", NONSTANDARD)
def test_nonstandard_ipv4_literals_are_recognised(host: str) -> None:
    assert is_nonstandard_ip_literal(host)


@pytest.mark.parametrize("host", STANDARD_HOSTS)
def test_host_names_and_standard_literals_are_not_nonstandard(host: str) -> None:
    assert not is_nonstandard_ip_literal(host)


@pytest.mark.parametrize("host", NONSTANDARD)
def test_delivery_check_refuses_nonstandard_literals_even_when_allow_listed(host: str) -> None:
    allow = [ipaddress.ip_network("0.0.0.0/0")]
    with pytest.raises(BlockedAddressError, match="non-standard form"):
        UrlHostGuard(allow).check(f"https://{host}/hook")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://[::7f00:1]/",
        "https://[64:ff9b:1::a9fe:a9fe]/",
        "https://[::ffff:0:7f00:1]/",
        "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "https://[2002:c058:6301::]:8443/x",
        "https://192.88.99.1/",
        "https://169.254.169.254/latest/meta-data/",
    ],
)
def test_delivery_check_refuses_blocked_literals(url: str) -> None:
    with pytest.raises(BlockedAddressError, match="blocked address"):
        UrlHostGuard().check(url)


@pytest.mark.parametrize(
    "url", ["https://8.8.8.8/", "https://[2606:4700:4700::1111]/", "https://example.com/", "https://localhost/"]
)
def test_delivery_check_leaves_public_literals_and_names_to_the_resolver(url: str) -> None:
    UrlHostGuard().check(url)  # names are judged on the addresses they resolve to (GuardedResolver)


def test_delivery_check_honours_the_allow_list() -> None:
    UrlHostGuard([ipaddress.ip_network("127.0.0.0/8")]).check("https://127.0.0.1:8443/")


def test_delivery_check_answers_the_same_after_its_per_url_memory_is_full() -> None:
    guard = UrlHostGuard(size=2)
    for n in range(5):
        guard.check(f"https://example{n}.com/")
        with pytest.raises(BlockedAddressError, match="blocked address"):
            guard.check("https://127.0.0.1/")
