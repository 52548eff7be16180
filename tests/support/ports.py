"""Local ports and Prometheus scrapes for tests that run roles as processes."""

from __future__ import annotations

import random
import socket
import urllib.error
import urllib.request
from pathlib import Path

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _outside_ephemeral() -> range:
    """Ports the kernel never hands out by itself: a port chosen from its ephemeral range is free when
    probed, but any outbound connection (Kafka, PostgreSQL, HTTP) may take it before the role under test
    binds it, and the role then fails with "address already in use"."""
    try:
        low, high = (int(part) for part in _EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(10_000, low) if low - 10_000 >= 5_000 else range(high + 1, 65_536)


def free_ports(count: int = 1) -> int:
    """The first of `count` consecutive ports, outside the ephemeral range, that are all free now. Chosen at
    random, so two test workers rarely pick the same ones; each is probed by binding it."""
    ports = _outside_ephemeral()
    for _ in range(200):
        base = random.randrange(ports.start, ports.stop - count)
        probes: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return base
    raise RuntimeError(f"no block of {count} free ports in {ports.start}-{ports.stop - 1}")


def free_port() -> int:
    """A port free now, outside the ephemeral range (see `free_ports`)."""
    return free_ports(1)


def scrape(port: int, timeout_s: float = 2.0) -> dict[str, float]:
    """`name{labels}` -> value of every sample a role's /metrics serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def http_status(url: str) -> int | None:
    """The status a local health endpoint answers with; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - http://127.0.0.1 built by the test
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None
