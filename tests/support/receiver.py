"""A real HTTPS webhook receiver for tests: aiohttp on its own thread and loop, trustme certificates.

Each path has a behaviour (a list of statuses to answer in turn, then the last one forever, or "hang").
Every request is recorded with its headers, raw body and arrival time, and its signature is checked with
the documented receiver formula against the secret registered for that path.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import trustme
from aiohttp import web
from multidict import CIMultiDict


@dataclass(frozen=True)
class Received:
    path: str
    headers: CIMultiDict[str]  # case-insensitive, as HTTP header names are (RFC 9110 §5.1)
    body: bytes
    at: float
    signature_ok: bool | None
    peer: tuple[str, int] | None = None

    @property
    def event_id(self) -> str:
        return self.headers["X-Webhook-Id"]

    @property
    def attempt(self) -> int:
        return int(self.headers["X-Webhook-Attempt"])


@dataclass
class _Behaviour:
    statuses: list[int] = field(default_factory=lambda: [200])
    hang: bool = False
    body: bytes | None = None
    served: int = 0
    fail_events: dict[str, int] = field(default_factory=dict)  # event id -> how many of its deliveries fail
    headers: Callable[[], dict[str, str]] | None = None  # response headers, made per answer (HTTP dates)


class HttpsReceiver:
    def __init__(
        self,
        ca: trustme.CA,
        names: tuple[str, ...] = ("localhost", "127.0.0.1"),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        cert = ca.issue_cert(*names)
        self.host = host
        self._bind_port = port  # 0: any free port
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._ssl)
        self._behaviours: dict[str, _Behaviour] = defaultdict(_Behaviour)
        self._secrets: dict[str, str] = {}
        self._lock = threading.Lock()
        self.received: list[Received] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="https-receiver", daemon=True)
        self.port = port
        self._release = asyncio.Event()

    # -------------------------------------------------------------------------------- configuration

    def expect(
        self,
        path: str,
        secret: str | None = None,
        statuses: list[int] | None = None,
        hang: bool = False,
        body: bytes | None = None,
        headers: dict[str, str] | Callable[[], dict[str, str]] | None = None,
        fail_events: dict[str, int] | None = None,
    ) -> str:
        """Configure `path` (answer `body`, default "answered <status>"; 500 to the first n deliveries of
        each event in `fail_events`; `headers` on every answer, or made by a function per answer); returns
        its https URL."""
        make_headers = (lambda fixed=dict(headers): dict(fixed)) if isinstance(headers, dict) else headers
        with self._lock:
            self._behaviours[path] = _Behaviour(
                statuses=statuses or [200],
                hang=hang,
                body=body,
                fail_events=dict(fail_events or {}),
                headers=make_headers,
            )
            if secret is not None:
                self._secrets[path] = secret
        return self.url(path)

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def wait_for(self, predicate, timeout_s: float = 30.0, interval_s: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval_s)
        return bool(predicate())

    # -------------------------------------------------------------------------------- server

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path
        with self._lock:
            behaviour = self._behaviours[path]
            secret = self._secrets.get(path)
            status = behaviour.statuses[min(behaviour.served, len(behaviour.statuses) - 1)]
            behaviour.served += 1
            event_id = request.headers.get("X-Webhook-Id", "")
            if behaviour.fail_events.get(event_id, 0) > 0:
                behaviour.fail_events[event_id] -= 1
                status = 500
            hang = behaviour.hang
            answer = behaviour.body
            make_headers = behaviour.headers
        ok = None
        if secret is not None:
            expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
            ok = expected == request.headers.get("X-Webhook-Signature")
        with self._lock:
            peer = request.transport.get_extra_info("peername") if request.transport is not None else None
            self.received.append(Received(path, CIMultiDict(request.headers), body, time.time(), ok, peer))
        if hang:
            await self._release.wait()
        extra = make_headers() if make_headers is not None else None
        if answer is not None:
            return web.Response(status=status, body=answer, headers=extra)
        return web.Response(status=status, text=f"answered {status}", headers=extra)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, self.host, self._bind_port, ssl_context=self._ssl, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def start(self) -> HttpsReceiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def release_hung(self) -> None:
        """Answer every hanging request now and hang no more from here on: the receiver has recovered."""
        self._loop.call_soon_threadsafe(self._release.set)

    def stop(self) -> None:
        self.release_hung()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
