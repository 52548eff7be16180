"""Probe: which HTTP client should deliver? Req/s and client CPU per request, side by side, same run.

Every candidate POSTs the same signed ~1 KB bodies (the dispatcher's own `signature_headers`) over
keep-alive HTTPS to the benchmark receiver, from its own process on uvloop, at a fixed number of
concurrent requests (= connections). Client CPU is user + system time of the whole client process
(`resource.getrusage(RUSAGE_SELF)` covers every thread, so a client that does its TLS and HTTP in
native threads is charged for them). The receiver is shared and is usually the throughput cap on a
2-core machine, so CPU per request is the figure to compare; req/s only shows the client is not the
one holding things back. Runs alternate between clients so load from other work hits them alike.

    python -m bench.http_clients --seconds 4 --rounds 2 --connections 16,1000

`deliverer` is the real delivery path (`delivery.deliverer.Deliverer` on `delivery/http1.py`:
pinning, signing, capped body, classification). aiohttp (the API server) is a dependency and pyreqwest
is in the test extras for this probe. The others are installed by hand for a probe, in a separate
virtualenv: niquests pulls in urllib3-future, which installs itself as `urllib3` and breaks `requests`
(and so schemathesis) in the environment it lands in.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import machine
from bench.receiver import Receiver
from delivery.signing import new_secret, signature_headers
from hookfleet import USER_AGENT
from producer.publisher import build_event
from schemas.catalog import PRODUCT_TYPES, EventType, sample_data
from schemas.models import Event

CLIENTS = ("aiohttp", "pyreqwest", "pyreqwest_mt", "curl_cffi", "niquests", "deliverer")
Post = Callable[[str, Event, bytes, dict[str, str]], Awaitable[bool]]


def _events(count: int) -> list[tuple[Event, bytes]]:
    types = list(PRODUCT_TYPES)  # operational types are published by hookfleet only
    out = []
    for n in range(count):
        event_type = types[n % len(types)]
        event = build_event(f"acct_{n % 20:03d}", event_type, sample_data(event_type))
        out.append((event, event.body()))
    return out


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _client(name: str, ca: str, connections: int) -> tuple[Post, Callable[[], Awaitable[None]]]:
    """(post, close) for one candidate, configured as a delivery would be: verify TLS, no redirects."""
    if name == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, ssl=ssl.create_default_context(cafile=ca), keepalive_timeout=30)
        session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})

        async def post_aiohttp(url: str, event: Event, body: bytes, headers: dict[str, str]) -> bool:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.content.read(65536)
                return 200 <= resp.status < 300

        return post_aiohttp, session.close
    if name in ("pyreqwest", "pyreqwest_mt"):
        from datetime import timedelta

        from pyreqwest.client import ClientBuilder

        client = (
            ClientBuilder()
            .runtime_multithreaded(name == "pyreqwest_mt")
            .add_root_certificate_pem(Path(ca).read_bytes())
            .follow_redirects(False)
            .user_agent(USER_AGENT)
            .timeout(timedelta(seconds=10))
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .build()
        )

        async def post_pyreqwest(url: str, event: Event, body: bytes, headers: dict[str, str]) -> bool:
            req = client.post(url).headers(headers).body_bytes(body).streamed_read_buffer_limit(65536)
            async with req.build_streamed() as resp:
                await resp.body_reader.read(65536)
                return 200 <= resp.status < 300

        return post_pyreqwest, client.close
    if name == "curl_cffi":
        from curl_cffi.requests import AsyncSession

        options: dict[str, Any] = {"verify": ca, "allow_redirects": False, "timeout": 10}
        curl_session: Any = AsyncSession(max_clients=connections, **options)

        async def post_curl(url: str, event: Event, body: bytes, headers: dict[str, str]) -> bool:
            resp = await curl_session.post(url, data=body, headers={**headers, "User-Agent": USER_AGENT})
            return bool(200 <= resp.status_code < 300)

        return post_curl, curl_session.close
    if name == "niquests":
        import niquests

        nq = niquests.AsyncSession(pool_connections=4, pool_maxsize=connections)
        nq.headers["User-Agent"] = USER_AGENT

        async def post_niquests(url: str, event: Event, body: bytes, headers: dict[str, str]) -> bool:
            resp = await nq.post(url, data=body, headers=headers, allow_redirects=False, timeout=10, verify=ca)
            return resp.status_code is not None and 200 <= resp.status_code < 300

        return post_niquests, nq.close
    if name == "deliverer":  # the real delivery path (http1.py): pinning, signing, capped read, classification
        from delivery.deliverer import Deliverer
        from delivery.endpoint import Endpoint
        from hookfleet.settings import DeliverySettings

        deliverer = Deliverer(DeliverySettings(ca_bundle=ca, allow_networks=["127.0.0.0/8"]))
        endpoints: dict[str, Endpoint] = {}
        secret = new_secret()

        async def post_deliverer(url: str, event: Event, body: bytes, headers: dict[str, str]) -> bool:
            endpoint = endpoints.get(url)
            if endpoint is None:
                endpoint = endpoints[url] = Endpoint(url, "acct", url, frozenset(EventType), True, secret)
            return (await deliverer.deliver(endpoint, event, 1, body)).ok

        return post_deliverer, deliverer.close
    raise ValueError(f"unknown client {name!r} (choose from {', '.join(CLIENTS)})")


async def _run(name: str, base: str, ca: str, connections: int, seconds: float, warmup: float) -> dict[str, Any]:
    post, close = await _client(name, ca, connections)
    secret = new_secret()
    feed = itertools.cycle(_events(1000))
    urls = itertools.cycle([f"{base}/fast/a{n:03d}" for n in range(20)])
    counting = stop = False
    done = errors = 0

    async def worker() -> None:
        nonlocal done, errors
        while not stop:
            event, body = next(feed)
            headers: dict[str, str] = {}
            if name != "deliverer":  # the deliverer signs inside, as a delivery does
                headers = signature_headers(secret, None, event.id, event.type.value, 1, int(time.time()), body)
                headers["Content-Type"] = "application/json"
            try:
                ok = await post(next(urls), event, body, headers)
            except Exception:
                ok = False
            if counting:
                done, errors = (done + 1, errors) if ok else (done, errors + 1)

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(warmup)
    counting = True
    cpu_start, started = _cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed, cpu = time.monotonic() - started, _cpu_s() - cpu_start
    counting = False
    stop = True
    await asyncio.wait(workers, timeout=15)
    await close()
    return {
        "client": name,
        "connections": connections,
        "seconds": round(elapsed, 2),
        "requests": done,
        "errors": errors,
        "per_s": round(done / elapsed, 1),
        "client_cpu_us_per_request": round(cpu / max(done, 1) * 1e6, 1),
        "client_cores": round(cpu / elapsed, 2),
        "threads": len(os.listdir("/proc/self/task")),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _child(args: argparse.Namespace) -> None:
    import uvloop

    uvloop.install()
    result = asyncio.run(_run(args.client, args.base, args.ca, args.connections, args.seconds, args.warmup))
    print(json.dumps(result), flush=True)


def _measure(
    client: str, receiver: Receiver, ca: Path, connections: int, seconds: float, warmup: float | None
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.http_clients", "--child", "--client", client, "--base", receiver.base]
    cmd += ["--ca", str(ca), "--connections", str(connections), "--seconds", str(seconds)]
    cmd += ["--warmup", str(warmup if warmup is not None else (1.5 if connections <= 100 else 3.5))]
    receiver.reset()
    receiver_before = _proc_cpu_s(receiver.pid)
    busy = machine.CpuSample.now()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90, check=False)
    machine_cpu = machine.CpuSample.now().busy_since(busy)
    receiver_cpu = _proc_cpu_s(receiver.pid) - receiver_before
    if out.returncode != 0:
        return {"client": client, "connections": connections, "failed": out.stderr[-1500:]}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["machine_busy"] = machine_cpu
    result["connections_opened"] = receiver.stats()["client_connections"]
    result["receiver_cpu_us_per_request_incl_warmup"] = round(receiver_cpu / max(result["requests"], 1) * 1e6, 1)
    return result


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_clients", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--connections", default="16,1000")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, help="seconds before counting (default 1.5; 3.5 above 100 connections)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.connections = int(args.connections)
        _child(args)
        return
    from demo.tls import make_demo_certs

    workdir = Path(tempfile.mkdtemp(prefix="hookfleet-http-clients-"))
    ca, cert, key = make_demo_certs(workdir / "tls")
    receiver = Receiver(cert, key, ca, workdir, slow_ms=2000)
    report: dict[str, Any] = {"machine": machine.describe(), "runs": []}
    try:
        for _ in range(args.rounds):
            for connections in (int(c) for c in args.connections.split(",")):
                for client in args.clients.split(","):
                    result = _measure(client, receiver, ca, connections, args.seconds, args.warmup)
                    report["runs"].append(result)
                    print(json.dumps(result), flush=True)
    finally:
        receiver.stop()
    report["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    out = machine.save_report("http_clients", report)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
