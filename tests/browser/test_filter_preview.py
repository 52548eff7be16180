"""The Edit form's filter field and its Preview, in headless Chromium against the real API and real
PostgreSQL holding a seeded log: a bad filter is shown next to the field with its position, a good one
previews the counts of the account's stored events, and Save stores it. Screenshot:
tests/artifacts/filter-preview.png."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page, expect

from schemas.topics import Topics
from tests.integration.test_api_filters import _log
from tests.support.api_client import RunningApi, api_settings
from tests.support.browser import shot

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics) -> AsyncIterator[RunningApi]:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle, topics)) as running:
        yield running


async def test_the_edit_form_previews_a_filter_and_saves_it(api: RunningApi, page: Page) -> None:
    _, key = api.account("Acme", "acct_a")
    _log(api.settings.database_url.get_secret_value())  # 6 whatsapp, 4 sms, 2 without a channel (2 days)
    created = await api.call(
        "POST",
        "/v1/webhooks",
        key,
        {"name": "Support desk", "url": "https://localhost:9/hooks", "events": ["message.incoming"]},
    )
    webhook_id = created.body["id"]
    await page.goto(f"{api.base_url}/settings/webhooks")
    await page.get_by_label("API key").fill(key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("link", name="Support desk")).to_be_visible()
    await page.goto(f"{api.base_url}/settings/webhooks#/webhooks/{webhook_id}/edit")
    await expect(page.get_by_label("Name", exact=True)).to_be_focused()

    field = page.get_by_label("Filter")
    preview = page.get_by_role("button", name="Preview")
    await field.fill("data.channel ==")
    await preview.click()
    await expect(page.locator("#wh-filter-error")).to_contain_text("syntax error")
    await expect(page.locator("#wh-filter-error")).to_contain_text("(line 1, column 16)")
    await expect(field).to_be_focused()

    await field.fill('data.channel == "whatsapp"')
    await page.get_by_label("Preview over the last").select_option("7")
    await preview.click()
    result = page.locator("#filter-preview-result")
    await expect(result).to_contain_text("Of 15 stored events of its types: 9 would be sent, 4 left out, 2 could not")
    await expect(result).to_contain_text('Key not found in map : "channel"')
    await expect(page.locator("#wh-filter-error")).to_be_empty()
    await page.get_by_label("Preview over the last").select_option("1")
    await preview.click()
    await expect(result).to_contain_text("Of 6 stored events of its types: 6 would be sent, 0 left out")
    await shot(page, "filter-preview")

    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("heading", name="Support desk", level=1)).to_be_visible()
    await expect(page.locator("#detail-events")).to_have_text(
        'Subscribed to: message.incoming, only when data.channel == "whatsapp"'
    )
    shown = await api.call("GET", f"/v1/webhooks/{webhook_id}", key)
    assert shown.body["filter"] == 'data.channel == "whatsapp"'
