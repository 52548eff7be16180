"""The demo's customer endpoint: verifies every signature with the documented formula and drops
duplicates by `X-Webhook-Id`, as the customer docs tell receivers to do."""

from __future__ import annotations

import hashlib
import hmac
import ssl
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web


@dataclass
class Endpoint:
    secret: str
    fail_first_attempt_every: int = 0  # 3 -> every third event fails its first attempt (shows retries)
    gone: bool = False  # answers 410 Gone: hookfleet switches the webhook off
    seen: set[str] = field(default_factory=set)


class DemoReceiver:
    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.counts: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def add(self, path: str, secret: str, fail_first_attempt_every: int = 0, gone: bool = False) -> None:
        self.endpoints[path] = Endpoint(secret, fail_first_attempt_every, gone=gone)

    async def _handle(self, request: web.Request) -> web.Response:
        endpoint = self.endpoints.get(request.path)
        if endpoint is None:
            return web.json_response({"error": "unknown endpoint"}, status=404)
        body = await request.read()
        expected = hmac.new(endpoint.secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Webhook-Signature", "")):
            self.counts["bad_signature"] += 1
            return web.json_response({"error": "bad signature"}, status=401)
        self.counts["verified"] += 1
        event_id = request.headers.get("X-Webhook-Id", "")
        if endpoint.gone:
            self.counts["answered_410"] += 1
            return web.json_response({"error": "this endpoint was retired (demo)"}, status=410)
        attempt = int(request.headers.get("X-Webhook-Attempt", "1"))
        every = endpoint.fail_first_attempt_every
        if every and attempt == 1 and int(hashlib.sha256(event_id.encode()).hexdigest(), 16) % every == 0:
            self.counts["answered_500"] += 1
            return web.json_response({"error": "temporarily unavailable (demo)"}, status=500)
        if event_id in endpoint.seen:
            self.counts["duplicates_dropped"] += 1
            return web.json_response({"status": "duplicate ignored"})
        endpoint.seen.add(event_id)
        self.counts["accepted"] += 1
        return web.json_response({"status": "ok"})

    async def start(self, cert: Path, key: Path) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
