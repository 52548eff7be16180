"""Worst-case memory of one in-flight delivery: `.venv/bin/python -m bench.delivery_memory [N]`.

The worst case a receiver can force while a delivery is open: the request carries the largest event
body (256 KiB), and the receiver answers with a body just under the 64 KiB cap in 2-byte chunks (the
costliest fragment size to hold), then stalls, so every response stays pending with its buffer full.
N such deliveries run at once through one `Deliverer` on uvloop, each with its own body object and its
own connection; the hostile receiver runs in a child process so its memory is not counted. The figure
is the growth of the process's resident memory (VmRSS, which includes OpenSSL's buffers) divided by N.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import ssl
import sys
import tempfile
import time
from pathlib import Path

import trustme
import uvloop

from delivery import deliverer as delivery
from delivery import http1
from delivery.deliverer import Deliverer
from delivery.endpoint import Endpoint
from hookfleet.settings import DeliverySettings
from producer.publisher import build_event
from schemas.catalog import EventType, sample_data

BODY_BYTES = 256 * 1024
ANSWER_BYTES = delivery.READ_CAP - 1024  # under the cap: the response stays pending, its buffer full
SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLWRlbGl2ZXJ5LXRlc3Rz"


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _serve(cert_pem: bytes, key_pem: bytes, port_out: multiprocessing.Queue[int]) -> None:
    """The hostile receiver: reads the whole request, answers with 2-byte chunks, then never finishes."""
    fragment = b"2\r\nxx\r\n"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + fragment * (ANSWER_BYTES // 2))
            await writer.drain()
            await asyncio.Event().wait()
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()

    async def main() -> None:
        with tempfile.NamedTemporaryFile() as cert, tempfile.NamedTemporaryFile() as key:
            cert.write(cert_pem)
            key.write(key_pem)
            cert.flush()
            key.flush()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert.name, key.name)
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context, backlog=4096)
        port_out.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    uvloop.run(main())


async def measure(n: int, ca_file: str, port: int) -> dict[str, float]:
    opened: list[http1._Connection] = []

    class Recorded(http1._Connection):
        def __init__(self, body_cap: int) -> None:
            super().__init__(body_cap)
            opened.append(self)

    http1._Connection = Recorded  # type: ignore[misc]  # counts the connections, changes nothing else
    deliverer = Deliverer(DeliverySettings(ca_bundle=ca_file, allow_networks="127.0.0.0/8", delivery_timeout_s=60))
    endpoint = Endpoint("wh_bench", "acct_bench", f"https://127.0.0.1:{port}/", frozenset(EventType), True, SECRET)
    event = build_event("acct_bench", EventType.MESSAGE_READ, sample_data(EventType.MESSAGE_READ))
    warm = asyncio.ensure_future(deliverer.deliver(endpoint, event, 1, b"w" * BODY_BYTES))
    while not (opened and opened[0].body_kept >= ANSWER_BYTES):
        if warm.done():
            raise RuntimeError(f"the warm-up delivery ended: {warm.result()}")
        await asyncio.sleep(0.05)
    baseline = _rss_bytes()
    started = time.monotonic()
    bodies = [bytes([65 + i % 26]) * BODY_BYTES for i in range(n)]  # one body object per delivery
    running = [asyncio.ensure_future(deliverer.deliver(endpoint, event, 1, body)) for body in bodies]
    del bodies
    while sum(1 for c in opened[1:] if c.body_kept >= ANSWER_BYTES) < n:
        if time.monotonic() - started > 50:
            raise RuntimeError("the deliveries did not all reach the stalled, full response")
        await asyncio.sleep(0.05)
    grown = _rss_bytes() - baseline
    for task in [warm, *running]:
        task.cancel()
    await asyncio.gather(warm, *running, return_exceptions=True)
    await deliverer.close()
    return {"in_flight": n, "baseline_rss_mb": baseline / 1e6, "per_delivery_kib": grown / n / 1024}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(
        target=_serve, args=(cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes(), ports), daemon=True
    )
    server.start()
    try:
        with tempfile.NamedTemporaryFile(suffix=".pem") as ca_file:
            ca_file.write(ca.cert_pem.bytes())
            ca_file.flush()
            result = uvloop.run(measure(n, ca_file.name, ports.get(timeout=30)))
    finally:
        server.terminate()
    print(result)


if __name__ == "__main__":
    main()
