"""Where did an event go, on the settings page, in headless Chromium against the real API and PostgreSQL (the
event's trail written by the recorder's own batch write): the search box above every view takes an event id
and opens the event's view, one panel per webhook with what became of it and each attempt; an attempt opens
that delivery in full. A mistyped id is refused next to the box; an unknown id and another account's event
both say "Not found". Keyboard only. Screenshots go to tests/artifacts/event-*.png.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.support.api_client import SECRET_KEY, RunningApi
from tests.support.browser import shot
from tests.support.event_log import log_event
from tests.support.fleet import seed_webhook

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_an_event_id_opens_where_it_went_per_webhook_attempt_by_attempt(
    api: RunningApi, page: Page, database_url: str
) -> None:
    account, key = api.account("Acme", "acct_acme")
    crm, _ = seed_webhook(
        database_url, account, "https://127.0.0.1:9/crm", ["message.read"], name="CRM Sync", secret_key=SECRET_KEY
    )
    erp, _ = seed_webhook(
        database_url, account, "https://127.0.0.1:9/erp", ["message.read"], name="Old ERP", secret_key=SECRET_KEY
    )
    event_id = log_event(database_url, account, (crm, erp))
    globex, _ = api.account("Globex", "acct_globex")
    their_hook, _ = seed_webhook(database_url, globex, "https://127.0.0.1:9/g", ["message.read"], secret_key=SECRET_KEY)
    their_event = log_event(database_url, globex, (their_hook, their_hook))

    await page.goto(f"{api.base_url}/settings/webhooks")
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.keyboard.type(key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("link", name="CRM Sync")).to_be_visible()
    search = page.get_by_role("searchbox", name="Find an event")

    # A mistyped id is refused next to the box, and the box keeps the focus
    await search.focus()
    await page.keyboard.type("att_42")
    await page.keyboard.press("Enter")
    await expect(page.locator("#event-search-error")).to_contain_text("Enter an event id: evt_")
    await expect(search).to_have_attribute("aria-invalid", "true")
    await expect(search).to_be_focused()

    # The event's id opens its view: one panel per webhook, what became of it, each attempt
    await page.keyboard.press("Control+A")
    await page.keyboard.type(event_id)
    await page.keyboard.press("Enter")
    title = page.get_by_role("heading", name=f"Event {event_id}", level=1)
    await expect(title).to_be_focused()
    await expect(search).not_to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#event-summary")).to_have_text(
        f"message.read · published {await published(api, key, event_id)} UTC · sent to 2 webhooks"
    )
    crm_panel = page.get_by_role("region", name="CRM Sync Delivered")
    erp_panel = page.get_by_role("region", name="Old ERP Dead-lettered: Recover sends it again")
    await expect(crm_panel.locator("tbody tr")).to_have_count(2)
    await expect(crm_panel.locator("tbody tr").nth(0).locator("td").nth(2)).to_have_text("500")
    await expect(crm_panel.locator("tbody tr").nth(1).locator("td").nth(2)).to_have_text("200")
    await expect(crm_panel.locator("tbody tr").nth(1).locator("td").nth(3)).to_have_text("41 ms")
    await expect(erp_panel.locator("tbody tr")).to_have_count(4)
    assert await erp_panel.locator("tbody tr td:nth-child(3)").all_text_contents() == ["503"] * 4
    await expect(erp_panel.locator(".dead-letter")).to_contain_text("Dead letter since")
    await expect(erp_panel.locator(".dead-letter")).to_contain_text("(http 503)")
    await expect(page.locator("#event-payload")).to_contain_text('"message_id": "m-7"')
    await shot(page, "event-01-view")

    # An attempt opens that delivery in full, with every attempt of the event to that webhook
    await erp_panel.get_by_role("link", name="Attempt 4 to Old ERP", exact=False).focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#delivery-title")).to_be_focused()
    await expect(page.locator("#delivery-title")).to_have_text("message.read · attempt 4")
    await expect(page.locator("#delivery-timeline li")).to_have_count(4)
    await page.get_by_role("link", name=f"Every webhook event {event_id} went to").click()
    await expect(title).to_be_focused()
    await expect(page.locator("#event-webhooks section")).to_have_count(2)

    # The search box is there on every view: an unknown id, and another account's event, are not found
    for missing in ("evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W", their_event):
        await search.focus()
        await page.keyboard.press("Control+A")
        await page.keyboard.type(missing)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name=f"Event {missing}", level=1)).to_be_focused()
        await expect(page.locator("#event-summary")).to_contain_text("Not found: no webhook of your account")
        await expect(page.locator("#event-webhooks section")).to_have_count(0)
        await expect(page.locator("#event-payload-panel")).to_be_hidden()
    await shot(page, "event-02-not-found")


async def published(api: RunningApi, key: str, event_id: str) -> str:
    """The event's time as the page writes it (`formatTime`: no T, no milliseconds)."""
    created: str = (await api.call("GET", f"/v1/events/{event_id}", key)).body["created_at"]
    return created.replace("T", " ").split(".")[0].removesuffix("Z")
