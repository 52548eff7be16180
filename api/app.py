"""The API application: routes from the operation table, the settings page, and the middlewares that
give every request the same error shape, authentication and metrics."""

from __future__ import annotations

import time

from aiohttp import web

from api import page, routes
from api.auth import auth_middleware
from api.errors import Handler, error_middleware
from api.resources import RESOURCES, Resources, lifecycle
from hookfleet.metrics import API_REQUEST_DURATION, API_REQUESTS
from hookfleet.settings import ApiSettings

MAX_BODY_BYTES = 64 * 1024
"""Far above any valid body (a URL is at most 2 KiB); bigger is a 413 before any parsing."""


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects raised by the page routes
        status = exc.status
        raise
    else:
        status = response.status
        return response
    finally:
        route = request.match_info.route.name or "unmatched"
        API_REQUESTS.labels(route, f"{status // 100}xx").inc()
        API_REQUEST_DURATION.labels(route).observe(time.monotonic() - started)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response: no MIME sniffing, no server version banner (aiohttp would send its own and Python's).
    Every `/v1` response: never stored by a cache or a proxy, as create, rotate and reveal carry secrets."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Server"] = "hookfleet"
    if request.path.startswith("/v1"):
        response.headers["Cache-Control"] = "no-store"


def build_app(settings: ApiSettings) -> web.Application:
    # metrics outermost: it sees the status the client gets, after error_middleware turned errors into bodies.
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, auth_middleware], client_max_size=MAX_BODY_BYTES
    )
    app.on_response_prepare.append(security_headers)
    app[RESOURCES] = Resources(settings)
    app.cleanup_ctx.append(lifecycle)
    routes.add_routes(app)
    page.add_routes(app)
    return app
