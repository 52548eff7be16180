"""The settings page inside a product's own page, in headless Chromium, against the real API, real
PostgreSQL and a real HTTPS receiver.

The "product" is a second HTTP server on another origin (http://localhost:<port>, so another site than the
API's http://127.0.0.1:<port>) whose page frames a portal link made with the product's API key. Inside the
frame: the link opens a session, the token leaves the address bar, a webhook is created and its Test reaches
the receiver, with the product's accent and font; no request carries the token or a Referer. A product
origin the operator did not allow gets no page in its frame (CSP frame-ancestors); a link used twice or
opened too late says so in a sentence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from html import escape

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import ConsoleMessage, Error, Frame, Page, Request, expect

from schemas.topics import Topics
from tests.support.api_client import RunningApi, api_settings
from tests.support.browser import ARTIFACTS, shot
from tests.support.ports import free_port
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DOCS_IMAGE = ARTIFACTS / "portal-embedded.png"
"""The README's image (docs/images/portal-embedded.png) is a copy of this one: the test run never changes a
tracked file; copy it over when the page changes."""
THEME = {"accent": "#7c3aed", "font": "DejaVu Sans, sans-serif"}


@dataclass
class ProductSite:
    """The product's page on its own origin: a header of its own and the portal link in an <iframe>."""

    server: TestServer
    frames: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.server.port}"

    def page_with(self, name: str, portal_url: str) -> str:
        self.frames[name] = portal_url
        return f"{self.origin}/{name}"


def _product_page(frames: dict[str, str]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        src = frames.get(request.match_info["name"])
        if src is None:
            raise web.HTTPNotFound()
        html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Acme CRM</title>
<style>
body {{ margin: 0; font: 15px/1.5 "DejaVu Sans", sans-serif; background: #f4f2fb; color: #1f1b2e; }}
header {{ display: flex; gap: 28px; align-items: center; padding: 12px 28px; background: #2e1065; color: #fff; }}
header b {{ font-size: 18px; }} header span {{ opacity: .8; }}
main {{ display: grid; grid-template-columns: 200px 1fr; gap: 24px; padding: 20px 28px; }}
nav a {{ display: block; padding: 6px 10px; color: #1f1b2e; text-decoration: none; border-radius: 6px; }}
nav a.on {{ background: #e4dcfb; font-weight: 600; }}
iframe {{ width: 100%; height: 760px; border: 1px solid #d9d2ee; border-radius: 10px; background: #fff; }}
</style></head><body>
<header><b>Acme CRM</b><span>Contacts</span><span>Deals</span><span>Reports</span><span>Settings</span></header>
<main><nav><a href="#">Profile</a><a href="#">Team</a><a href="#">Billing</a><a class="on" href="#">Webhooks</a></nav>
<iframe title="Webhooks" src="{escape(src)}"></iframe></main></body></html>"""
        return web.Response(text=html, content_type="text/html")

    return handler


async def _product_site() -> ProductSite:
    frames: dict[str, str] = {}
    app = web.Application()
    app.router.add_get("/{name}", _product_page(frames))
    server = TestServer(app, host="localhost", port=free_port())
    await server.start_server()
    return ProductSite(server, frames)


@pytest.fixture
async def product() -> AsyncIterator[ProductSite]:
    site = await _product_site()
    yield site
    await site.server.close()


@pytest.fixture
async def stranger() -> AsyncIterator[ProductSite]:
    """Another site, which the operator did not allow to frame the page."""
    site = await _product_site()
    yield site
    await site.server.close()


@pytest.fixture
async def api(
    database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics, product: ProductSite
) -> AsyncIterator[RunningApi]:
    settings = api_settings(
        database_url, kafka_bootstrap, ca_bundle, topics, portal_frame_ancestors=f"https://crm.example {product.origin}"
    )
    async with RunningApi(settings) as running:
        yield running


async def _portal_link(api: RunningApi, key: str, **body: object) -> tuple[str, str]:
    reply = await api.call("POST", "/v1/portal-sessions", key, json_body=body)
    assert reply.status == 201, reply.body
    url: str = reply.body["url"]
    return url, url.split("#token=")[1]


def _portal_frame(page: Page, api: RunningApi) -> Frame:
    [frame] = [f for f in page.frames if f.url.startswith(api.base_url)]
    return frame


async def test_the_page_works_inside_an_allowed_product_page_with_a_portal_session(
    api: RunningApi, page: Page, product: ProductSite, receiver: HttpsReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the API's log and aiohttp's access log of both servers
    _, key = api.account("Acme", "acct_acme")
    url, token = await _portal_link(api, key, theme=THEME)
    sent: list[Request] = []

    def on_request(request: Request) -> None:
        sent.append(request)

    page.on("request", on_request)

    await page.goto(product.page_with("settings", url))
    frame = page.frame_locator("iframe[title=Webhooks]")
    await expect(frame.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    await expect(frame.get_by_text("No webhooks yet.")).to_be_visible()
    await expect(frame.get_by_role("button", name="Sign out")).to_be_hidden()
    inner = _portal_frame(page, api)
    assert inner.url == f"{api.base_url}/settings/webhooks?accent=%237c3aed&font=DejaVu+Sans%2C+sans-serif#/"
    # The product's look: its accent on the primary button (white text on it), its font.
    new = frame.get_by_role("button", name="New webhook")
    assert await new.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(124, 58, 237)"
    assert await new.evaluate("b => getComputedStyle(b).color") == "rgb(255, 255, 255)"
    assert (await new.evaluate("b => getComputedStyle(b).fontFamily")).startswith('"DejaVu Sans"')

    # Create a webhook and run Test, all inside the frame.
    await new.click()
    await frame.get_by_label("Name", exact=True).fill("CRM Sync")
    await frame.get_by_label("Endpoint URL").fill(receiver.expect("/crm"))
    await frame.get_by_label("message.read").check()
    await frame.get_by_role("button", name="Create webhook").click()
    await expect(frame.get_by_role("heading", name="Signing secret of CRM Sync")).to_be_visible()
    await frame.get_by_role("button", name="I have stored it").click()
    await frame.get_by_role("button", name="Test CRM Sync").click()
    await frame.get_by_role("button", name="Send test").click()
    result = frame.locator("#test-result")
    await expect(result).to_contain_text("Delivered")
    await expect(result).to_contain_text(re.compile(r"HTTP 200 in \d+ ms"))
    [delivered] = receiver.at("/crm")
    assert delivered.headers["X-Webhook-Event"] == "message.read"
    await shot(page, "portal-embedded")

    # The webhook is the account's, made through the session.
    listed = await api.call("GET", "/v1/webhooks", key)
    assert [w["name"] for w in listed.body["data"]] == ["CRM Sync"]
    # The token went to the API once, in a body; no request carried it in its URL or a Referer, and what the
    # page itself requested carried no Referer at all (Referrer-Policy: no-referrer).
    to_api = [r for r in sent if r.url.startswith(api.base_url)]
    assert [r.method for r in to_api if r.url.endswith("/v1/portal-sessions/exchange")] == ["POST"]
    for request in to_api:
        assert token not in request.url and token not in request.headers.get("referer", ""), request.url
        if not request.is_navigation_request():  # the frame's own load carries the product's Referer
            assert not request.headers.get("referer"), (request.url, request.headers)
    assert len(to_api) > 8
    logged = [record.getMessage() for record in caplog.records]
    assert any("/v1/portal-sessions/exchange" in line for line in logged), "the access log was not captured"
    assert not [line for line in logged if token in line]


async def test_a_product_origin_not_allowed_gets_no_page_in_its_frame(
    api: RunningApi, page: Page, stranger: ProductSite
) -> None:
    _, key = api.account("Acme", "acct_acme")
    url, _ = await _portal_link(api, key)
    refusals: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "frame-ancestors" in message.text:
            refusals.append(message.text)

    page.on("console", on_console)
    await page.goto(stranger.page_with("settings", url))  # waits for the frame's load too
    await expect(page.get_by_role("heading", name="Webhooks")).to_have_count(0)
    frame = page.frame_locator("iframe[title=Webhooks]")
    await expect(frame.locator("#main")).to_have_count(0)
    await wait_until_async(lambda: refusals, 10, "Chromium's console line refusing the frame")
    assert refusals[0].startswith(f"Framing '{api.base_url}/' violates the following Content Security Policy")
    assert '"frame-ancestors https://crm.example http://localhost:' in refusals[0]
    assert "The request has been blocked." in refusals[0]
    [framed] = [f for f in page.frames if f != page.main_frame]
    assert framed.url == "chrome-error://chromewebdata/"  # Chromium's blocked-frame page, not ours
    await shot(page, "portal-refused-origin")


async def test_a_reused_or_expired_link_says_so(api: RunningApi, page: Page, product: ProductSite) -> None:
    _, key = api.account("Acme", "acct_acme")
    url, token = await _portal_link(api, key)
    used = await api.call("POST", "/v1/portal-sessions/exchange", json_body={"token": token})
    assert used.status == 200
    await page.goto(product.page_with("reused", url))
    frame = page.frame_locator("iframe[title=Webhooks]")
    await expect(frame.locator("#portal-message")).to_have_text(
        "This link was already used: each link opens the page once."
        " Open Webhooks again from the app that brought you here."
    )
    await expect(frame.get_by_role("heading", name="This page cannot open")).to_be_visible()
    await expect(frame.get_by_label("API key")).to_be_hidden()
    assert token not in _portal_frame(page, api).url
    await shot(page, "portal-link-reused")

    late_url, _ = await _portal_link(api, key)
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        conn.execute("UPDATE portal_sessions SET link_expires_at = now() - interval '1 second' WHERE used_at IS NULL")
    await page.goto(product.page_with("late", late_url))
    await expect(frame.locator("#portal-message")).to_have_text(
        "This link has expired: links open only within a few minutes of being made."
        " Open Webhooks again from the app that brought you here."
    )


async def test_a_read_only_session_shows_that_changes_are_refused(
    api: RunningApi, page: Page, product: ProductSite
) -> None:
    _, key = api.account("Acme", "acct_acme")
    url, _ = await _portal_link(api, key, read_only=True, theme={"mode": "dark"})
    await page.goto(product.page_with("viewer", url))
    frame = page.frame_locator("iframe[title=Webhooks]")
    banner = "View only: you can look at everything here, but changes are refused."
    await expect(frame.locator("#portal-banner")).to_have_text(banner)
    body = frame.locator("body")
    assert await body.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(13, 17, 23)"  # dark
    await frame.get_by_label("Failure notifications by e-mail").fill("ops@example.com")
    await frame.get_by_role("button", name="Save").click()
    await expect(frame.locator("#notify-error")).to_contain_text("this portal session is read-only")
    await shot(page, "portal-read-only-dark")

    # Chromium gives this third-party frame no sessionStorage, so the session lived in the page's memory only:
    # reloading the frame (its address no longer has the token) ends it, and the frame never asks for an API key.
    inner = _portal_frame(page, api)
    with pytest.raises(Error, match="Access is denied for this document"):
        await inner.evaluate("sessionStorage.length")
    await inner.evaluate("location.reload()")
    await expect(frame.locator("#portal-message")).to_have_text(
        "This page opens from a link of the app it is shown in. Open Webhooks again from the app that brought you here."
    )
    await expect(frame.get_by_label("API key")).to_be_hidden()
