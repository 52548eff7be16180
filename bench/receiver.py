"""The benchmark receiver: one HTTPS process that every benchmark POSTs to, the raw ceiling client and the
dispatcher alike, so their figures are comparable.

Paths choose the behaviour: `/fast/...` answers 200 at once; `/slow/...` answers 200 after a fixed
delay; `/hang/...` never answers (the handler is cancelled when the client gives up and disconnects).
Every POST is recorded as (arrival time, `X-Webhook-Id`, path group) so the runner can compute
throughput windows and publish-to-receive latency on the same clock. Signatures are not verified here:
the integration tests prove them, and verifying would only tax both sides of the comparison equally.

    python -m bench.receiver --cert server.pem --key server.key --slow-ms 2000   # prints its port
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

_OK = b"ok"


class _Recorder:
    def __init__(self, slow_s: float) -> None:
        self.slow_s = slow_s
        self.arrivals: list[tuple[float, str, str]] = []
        self.forgotten = 0  # arrivals already read and dropped: positions keep counting from the first
        self.in_flight = 0
        self.peak_in_flight = 0
        self.counts: dict[str, int] = {}
        self.peers: set[object] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        now = time.time()
        path = request.path
        group = path.split("/", 2)[1] if path.count("/") >= 1 else ""
        self.arrivals.append((now, request.headers.get("X-Webhook-Id", ""), path))
        self.counts[group] = self.counts.get(group, 0) + 1
        if request.transport is not None:
            self.peers.add(request.transport.get_extra_info("peername"))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if group == "slow":
                await asyncio.sleep(self.slow_s)
            elif group == "hang":
                await asyncio.Event().wait()  # until the client disconnects and aiohttp cancels us
            return web.Response(body=_OK)
        finally:
            self.in_flight -= 1

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "received": self.forgotten + len(self.arrivals),
                "counts": self.counts,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "client_connections": len(self.peers),
            }
        )

    async def arrivals_since(self, request: web.Request) -> web.Response:
        start = int(request.query.get("from", "0"))
        return web.json_response({"from": start, "arrivals": self.arrivals[max(0, start - self.forgotten) :]})

    async def forget(self, request: web.Request) -> web.Response:
        """Drop arrivals before position `upto`, once read: a run of millions of deliveries then holds only
        what has not been read yet (positions go on counting from the first arrival since the reset)."""
        upto = int(request.query.get("upto", "0"))
        drop = max(0, min(upto - self.forgotten, len(self.arrivals)))
        del self.arrivals[:drop]
        self.forgotten += drop
        return web.json_response({"forgotten": self.forgotten})

    async def reset(self, request: web.Request) -> web.Response:
        self.arrivals = []
        self.forgotten = 0
        self.counts = {}
        self.peers = set()
        self.peak_in_flight = self.in_flight
        return web.json_response({"reset": True})


def _install_fast_loop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def _serve(cert: str, key: str, slow_s: float, port_file: str | None) -> None:
    recorder = _Recorder(slow_s)
    app = web.Application()
    app.router.add_get("/_stats", recorder.stats)
    app.router.add_get("/_arrivals", recorder.arrivals_since)
    app.router.add_post("/_reset", recorder.reset)
    app.router.add_post("/_forget", recorder.forget)
    app.router.add_post("/{tail:.*}", recorder.handle)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    if port_file:
        Path(port_file).write_text(str(port))
    print(f"event=receiver_ready port={port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--slow-ms", type=int, default=2000)
    parser.add_argument("--port-file")
    args = parser.parse_args()
    _install_fast_loop()
    asyncio.run(_serve(args.cert, args.key, args.slow_ms / 1000, args.port_file))


class Receiver:
    """The receiver subprocess, seen from the runner: start, query, stop."""

    def __init__(self, cert: Path, key: Path, ca: Path, workdir: Path, slow_ms: int) -> None:
        port_file = workdir / "receiver.port"
        port_file.unlink(missing_ok=True)
        self.log_path = workdir / "receiver.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.receiver",
                "--cert",
                str(cert),
                "--key",
                str(key),
                "--slow-ms",
                str(slow_ms),
                "--port-file",
                str(port_file),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.slow_ms = slow_ms
        self._context = ssl.create_default_context(cafile=str(ca))
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"benchmark receiver did not start; log: {self.log_path}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.base = f"https://localhost:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def _call(self, method: str, path: str) -> Any:
        url = self.base + path  # always https://localhost:<port>/...
        request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)  # noqa: S310
        with urllib.request.urlopen(request, context=self._context, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_stats")
        return result

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def arrivals(self, start: int = 0) -> list[tuple[float, str, str]]:
        return [(float(t), str(i), str(p)) for t, i, p in self._call("GET", f"/_arrivals?from={start}")["arrivals"]]

    def forget(self, upto: int) -> None:
        """Let the receiver drop the arrivals before position `upto` (read already)."""
        self._call("POST", f"/_forget?upto={upto}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
