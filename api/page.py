"""The Settings -> Webhooks page: one static HTML page with a small script that calls the same `/v1` API
a customer's code calls (no front-end build, no server-side session). It signs in with an API key, or
with a portal session opened from a one-time link (api/portal_sessions.py); either credential is kept in
the tab's memory (and sessionStorage where the browser allows it), never in a cookie, so no other site can
make the browser act with it, and the page needs no cookie when it runs in another site's frame.

Framing: `frame-ancestors 'none'` unless the operator lists origins in HOOKFLEET_PORTAL_FRAME_ANCESTORS,
which then are the only ones that may show the page in an <iframe> (clickjacking from anywhere else is
refused by the browser). A portal link's theme (accent, mode, font) is checked here and served as a small
stylesheet of CSS variables (api/portal_theme.py), since the CSP allows no inline style.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from api.portal_theme import ThemeError, read_theme, theme_css, theme_query
from api.resources import resources_of

_STATIC = {
    "settings.js": "text/javascript",
    "replay.js": "text/javascript",
    "detail.js": "text/javascript",
    "events.js": "text/javascript",
    "deliverylog.js": "text/javascript",
    "settings.css": "text/css",
}
_THEME_MARKER = "<!-- theme -->"


def content_security_policy(frame_ancestors: tuple[str, ...]) -> str:
    """The page's CSP; `frame_ancestors` are origins already checked by the settings (hookfleet/settings.py)."""
    ancestors = " ".join(frame_ancestors) if frame_ancestors else "'none'"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:;"
        f" form-action 'self'; frame-ancestors {ancestors}; base-uri 'none'"
    )


def _headers(request: web.Request) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(resources_of(request).settings.portal_frame_ancestors),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _asset(name: str) -> bytes:
    return resources.files("api").joinpath("static", name).read_bytes()


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/settings/webhooks")


def _refused_theme(request: web.Request, exc: ThemeError) -> web.Response:
    return web.Response(
        status=400, text=f"{exc}; fix the link's query string", content_type="text/plain", headers=_headers(request)
    )


async def settings_page(request: web.Request) -> web.StreamResponse:
    try:
        theme = read_theme(request.query)
    except ThemeError as exc:
        return _refused_theme(request, exc)
    body = _asset("settings.html")
    if theme is not None:
        link = f'<link rel="stylesheet" href="/settings/theme.css{theme_query(theme).replace("&", "&amp;")}">'
        body = body.replace(_THEME_MARKER.encode(), link.encode(), 1)
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=_headers(request))


async def theme_stylesheet(request: web.Request) -> web.StreamResponse:
    try:
        theme = read_theme(request.query)
    except ThemeError as exc:
        return _refused_theme(request, exc)
    css = theme_css(theme) if theme is not None else ""
    return web.Response(text=css, content_type="text/css", charset="utf-8", headers=_headers(request))


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_asset(name), content_type=_STATIC[name], charset="utf-8", headers=_headers(request))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index, name="index")
    app.router.add_get("/settings/webhooks", settings_page, name="settings_page")
    app.router.add_get("/settings/theme.css", theme_stylesheet, name="theme_stylesheet")
    app.router.add_get("/static/{name}", static_file, name="static")
