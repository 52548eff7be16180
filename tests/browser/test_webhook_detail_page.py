"""The webhook detail view, its Edit form and one delivery in full, in headless Chromium against the real
API, real PostgreSQL and a real HTTPS receiver. One browser and one API for the whole walk, to stay quick.

Keyboard only: sign in, create a webhook, open it, edit each field with a mistake first (the page's own
checks, then the API's message for the URL), save. Then real deliveries (Test, through the dispatcher's
delivery code) plus an older logged timeout: the success rate and the chart's bars are the API's buckets; one
delivery shows the exact body the receiver got and the signature it verified; Reveal shows the secret the
receiver verified with. Screenshots go to tests/artifacts/webhook-*.png.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Locator, Page, expect

from schemas.topics import Topics
from tests.support.api_client import RunningApi, api_settings, insert_attempt
from tests.support.browser import ARTIFACTS, shot
from tests.support.receiver import HttpsReceiver

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DOCS_IMAGE = ARTIFACTS / "webhook-detail.png"
"""The README's image (docs/images/webhook-detail.png) is a copy of this one: the test run never changes a
tracked file; copy it over when the page changes."""


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics) -> AsyncIterator[RunningApi]:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle, topics)) as running:
        yield running


async def tab_to(page: Page, target: Locator, limit: int = 60) -> None:
    """Press Tab until `target` has the focus, as a keyboard user would."""
    for _ in range(limit):
        if await target.evaluate("node => node === document.activeElement"):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"{target} never got the focus after {limit} Tabs")


async def retype(page: Page, text: str) -> None:
    await page.keyboard.press("Control+A")
    await page.keyboard.press("Backspace")
    if text:
        await page.keyboard.type(text)


async def test_detail_edit_delivery_and_reveal_in_the_browser(
    api: RunningApi, page: Page, receiver: HttpsReceiver
) -> None:
    account, key = api.account("Acme", "acct_acme")
    first_url = receiver.expect("/crm")
    await page.goto(f"{api.base_url}/settings/webhooks")

    # ---- keyboard only: sign in, create, open, edit
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.keyboard.type(key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_text("No webhooks yet.")).to_be_visible()
    await tab_to(page, page.get_by_role("button", name="New webhook"))
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Name", exact=True)).to_be_focused()
    await page.keyboard.type("CRM Sync")
    await page.keyboard.press("Tab")
    await page.keyboard.type(first_url)
    await tab_to(page, page.get_by_label("message.read"))
    await page.keyboard.press("Space")
    await tab_to(page, page.get_by_role("button", name="Create webhook"))
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Signing secret of CRM Sync")).to_be_focused()
    secret = await page.get_by_label("Secret", exact=True).input_value()
    await tab_to(page, page.get_by_role("button", name="I have stored it"))
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("button", name="New webhook")).to_be_focused()
    await shot(page, "webhook-01-list")

    await tab_to(page, page.get_by_role("link", name="CRM Sync"))
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="CRM Sync", level=1)).to_be_focused()
    await expect(page.locator("#logs-empty")).to_be_visible()  # the empty state
    await expect(page.locator("#health-text")).to_have_text("No deliveries in the last 24 hours.")
    webhook_id = page.url.rsplit("/", 1)[-1]

    await tab_to(page, page.get_by_role("button", name="Edit"))
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Name", exact=True)).to_be_focused()
    save = page.get_by_role("button", name="Save changes")
    # Name: empty first, refused by the page next to the field.
    await retype(page, "")
    await tab_to(page, save)
    await page.keyboard.press("Enter")
    await expect(page.locator("#wh-name-error")).to_have_text("Enter a name.")
    await expect(page.get_by_label("Name", exact=True)).to_be_focused()
    await retype(page, "CRM Sync v2")
    # URL: a private address, refused by the API, whose message is shown next to the field.
    await page.keyboard.press("Tab")
    await retype(page, "https://10.0.0.7/hooks")
    await tab_to(page, save)
    await page.keyboard.press("Enter")
    await expect(page.locator("#wh-url-error")).to_contain_text("private, loopback, link-local or reserved")
    await expect(page.get_by_label("Endpoint URL")).to_be_focused()
    await expect(page.locator("#wh-name-error")).to_be_empty()
    await shot(page, "webhook-02-edit-error")
    second_url = receiver.expect("/crm2", secret=secret, statuses=[200, 500, 200, 200])
    await retype(page, second_url)
    # Events: none, then two.
    await tab_to(page, page.get_by_label("message.read"))
    await page.keyboard.press("Space")
    await tab_to(page, save)
    await page.keyboard.press("Enter")
    await expect(page.locator("#wh-events-error")).to_have_text("Choose at least one event.")
    await tab_to(page, page.get_by_label("message.read"))
    await page.keyboard.press("Space")
    await tab_to(page, page.get_by_label("contact.created"))
    await page.keyboard.press("Space")
    # Rate limit: out of range, then a good one.
    await tab_to(page, page.get_by_label("Rate limit (deliveries per second, optional)"))
    await page.keyboard.type("20000")
    await tab_to(page, save)
    await page.keyboard.press("Enter")
    await expect(page.locator("#wh-rate-error")).to_contain_text("from 1 to 10000")
    await expect(page.get_by_label("Rate limit (deliveries per second, optional)")).to_be_focused()
    await retype(page, "25")
    await tab_to(page, save)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="CRM Sync v2", level=1)).to_be_focused()
    await expect(page.locator("#notice")).to_contain_text("Saved: name, url, events, rate limit per s")
    saved = (await api.call("GET", f"/v1/webhooks/{webhook_id}", key)).body
    assert saved["name"] == "CRM Sync v2" and saved["url"] == second_url and saved["rate_limit_per_s"] == 25
    assert sorted(saved["events"]) == ["contact.created", "message.read"]

    # ---- real deliveries: four Tests to the real receiver (one answered 500), and an older logged timeout
    for _ in range(4):
        assert (await api.call("POST", f"/v1/webhooks/{webhook_id}/test", key)).status == 200
    insert_attempt(
        api.settings.database_url.get_secret_value(),
        webhook_id,
        datetime.now(UTC) - timedelta(hours=3),
        outcome="timeout",
        status_code=None,
        account_id=account,
    )
    delivered = receiver.at("/crm2")
    assert len(delivered) == 4 and all(r.signature_ok for r in delivered)

    await page.get_by_role("button", name="Last 24 hours").click()  # reloads the stats
    stats = (await api.call("GET", f"/v1/webhooks/{webhook_id}/stats", key)).body
    assert stats["summary"]["attempts"] == 5 and stats["summary"]["successes"] == 3
    summary = page.locator("#health-summary")
    await expect(summary).to_contain_text("Success rate60.0%")
    await expect(page.locator("#health-text")).to_contain_text("5 attempts, 3 succeeded (60.0%), 2 failed")
    bars = page.locator("#attempts-svg g.bar")
    await expect(bars).to_have_count(24)
    shown = await bars.evaluate_all(
        "gs => gs.map(g => [g.dataset.start, +g.dataset.success, +g.dataset.httpError, +g.dataset.timeout,"
        " +g.dataset.connectionError, g.querySelectorAll('rect').length])"
    )
    expected = [
        [b["start"], b["success"], b["http_error"], b["timeout"], b["connection_error"]] for b in stats["buckets"]
    ]
    assert [row[:5] for row in shown] == expected
    assert [row[5] for row in shown] == [sum(1 for n in b[1:] if n) for b in expected]  # one drawn part per outcome
    assert (await page.locator("#latency-svg polyline").count()) >= 1
    await page.get_by_role("button", name="Last 7 days").click()
    await expect(bars).to_have_count(168)
    await page.get_by_role("button", name="Last 24 hours").click()
    await expect(bars).to_have_count(24)
    await page.get_by_role("button", name="Refresh").click()
    await expect(page.locator("#logs tbody tr")).to_have_count(5)
    await shot(page, "webhook-03-detail")
    await page.locator("#detail-view").screenshot(path=str(DOCS_IMAGE))

    # ---- one delivery in full: the body the receiver got, the signature it verified, the attempt timeline
    failed = delivered[1]
    assert json.loads(failed.body)["id"] == failed.event_id
    await page.get_by_role("link", name=f"Delivery of event {failed.event_id}, attempt 1").click()
    await expect(page.locator("#delivery-title")).to_be_focused()
    await expect(page.locator("#delivery-summary")).to_contain_text("HTTP error (HTTP 500)")
    raw = await page.locator("#request-body-raw").text_content()
    assert raw is not None and raw.encode() == failed.body
    assert json.loads(await page.locator("#request-body-pretty").text_content() or "") == json.loads(failed.body)
    headers = page.locator("#request-headers tbody")
    for name in ("X-Webhook-Signature", "X-Webhook-Timestamp", "webhook-signature"):
        await expect(headers.locator("tr", has=page.locator(f"th:text-is('{name}')")).locator("td")).to_have_text(
            failed.headers[name]
        )
    await expect(page.locator("#response-body")).to_have_text("answered 500")
    await expect(page.locator("#delivery-timeline li")).to_have_count(1)
    await expect(page.locator("#delivery-timeline li[aria-current]")).to_contain_text("Attempt 1")
    await page.locator("details summary").click()
    await shot(page, "webhook-04-delivery")
    await page.get_by_role("button", name=f"Redeliver event {failed.event_id}").click()
    await expect(page.locator("#notice")).to_contain_text(f"Event {failed.event_id} is queued for delivery again.")

    # ---- reveal: the secret the receiver verified every delivery with
    await page.locator("#delivery-back").click()
    await expect(page.get_by_role("heading", name="CRM Sync v2", level=1)).to_be_focused()
    await page.get_by_role("button", name="Reveal secret").click()
    revealed = page.get_by_label("Signing secret", exact=True)
    await expect(revealed).to_be_focused()
    assert await revealed.input_value() == secret
    await page.get_by_role("button", name="Hide").click()
    await expect(revealed).to_have_value("")
    await expect(page.get_by_role("button", name="Reveal secret")).to_be_focused()
