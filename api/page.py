"""The Settings -> Webhooks page: one static HTML page with a small script that calls the same `/v1` API
a customer's code calls (no front-end build, no server-side session). It signs in with an API key kept
in the tab's sessionStorage, never in a cookie, so no other site can make the browser act with it.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

_STATIC = {
    "settings.js": "text/javascript",
    "replay.js": "text/javascript",
    "detail.js": "text/javascript",
    "events.js": "text/javascript",
    "settings.css": "text/css",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:;"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> bytes:
    return resources.files("api").joinpath("static", name).read_bytes()


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/settings/webhooks")


async def settings_page(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_asset("settings.html"), content_type="text/html", charset="utf-8", headers=_HEADERS)


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_asset(name), content_type=_STATIC[name], charset="utf-8", headers=_HEADERS)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index, name="index")
    app.router.add_get("/settings/webhooks", settings_page, name="settings_page")
    app.router.add_get("/static/{name}", static_file, name="static")
