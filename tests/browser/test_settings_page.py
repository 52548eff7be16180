"""The Settings -> Webhooks page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright),
against the real API, real PostgreSQL and a real HTTPS receiver.

A customer signs in with an API key, creates a webhook, sees its secret once, presses Test and sees the
receiver's 200, switches Active off (with the keyboard) and on, and reads the delivery log on the webhook's
own page. Screenshots
of each step are written to tests/artifacts/ for people to look at.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from playwright.async_api import Page, expect

from hookfleet.secretbox import SecretBox
from tests.support.api_client import SECRET_KEY, RunningApi, insert_attempt
from tests.support.browser import shot
from tests.support.receiver import HttpsReceiver

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_create_test_toggle_and_read_logs_in_the_browser(
    api: RunningApi, page: Page, receiver: HttpsReceiver
) -> None:
    _, key = api.account("Acme", "acct_acme")
    await page.goto(f"{api.base_url}/settings/webhooks")

    # Sign in: a wrong key is refused next to the field; the right one opens the (empty) list.
    await page.get_by_label("API key").fill("hfk_" + "x" * 43)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#api-key-error")).to_have_text("This API key is not valid.")
    await expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    await page.get_by_label("API key").fill(key)
    await page.get_by_label("API key").press("Enter")
    await expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    await expect(page.get_by_text("No webhooks yet.")).to_be_visible()
    await shot(page, "settings-01-signed-in")

    # New webhook: mistakes are shown next to their fields, from the page and from the API.
    await page.get_by_role("button", name="New webhook").click()
    await expect(page.get_by_label("Name", exact=True)).to_be_focused()
    await page.get_by_role("button", name="Create webhook").click()
    await expect(page.locator("#wh-name-error")).to_have_text("Enter a name.")
    await expect(page.locator("#wh-url-error")).to_have_text("Enter a URL that starts with https://")
    await expect(page.locator("#wh-events-error")).to_have_text("Choose at least one event.")
    await expect(page.get_by_label("Name", exact=True)).to_be_focused()
    await page.get_by_label("Name", exact=True).fill("CRM Sync")
    await page.get_by_label("Endpoint URL").fill("https://10.0.0.7/hooks")
    await page.get_by_label("message.read").check()
    await page.get_by_role("button", name="Create webhook").click()
    await expect(page.locator("#wh-url-error")).to_contain_text("private, loopback, link-local or reserved")
    await expect(page.get_by_label("Endpoint URL")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#wh-name-error")).to_be_empty()
    await shot(page, "settings-02-field-errors")

    url = receiver.expect("/crm")
    await page.get_by_label("Endpoint URL").fill(url)
    await page.get_by_label("contact.created").check()
    await page.get_by_label("Custom headers").fill("Content-Type: text/plain")
    await page.get_by_role("button", name="Create webhook").click()
    await expect(page.locator("#wh-headers-error")).to_contain_text("reserved")
    await page.get_by_label("Custom headers").fill("Authorization: Bearer gw-token-1234567890")
    await page.get_by_label("Redeliver dead letters when it recovers").check()
    await page.get_by_role("button", name="Create webhook").click()

    # The secret, once: the same secret the server sealed for this webhook.
    await expect(page.get_by_role("heading", name="Signing secret of CRM Sync")).to_be_focused()
    secret = await page.get_by_label("Secret", exact=True).input_value()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        row = conn.execute("SELECT id, secret_ciphertext FROM webhooks WHERE account_id = 'acct_acme'").fetchone()
    assert row is not None
    webhook_id = str(row[0])
    assert SecretBox.from_b64(SECRET_KEY).open(bytes(row[1]), webhook_id) == secret
    assert (await api.call("GET", f"/v1/webhooks/{webhook_id}", key)).body["redrive_on_recovery"] is True
    webhooks_row = page.locator(f"tr[data-webhook-id='{webhook_id}']")
    await expect(webhooks_row).to_contain_text("Healthy")
    await expect(webhooks_row).to_contain_text("contact.created, message.read")
    await shot(page, "settings-03-secret-shown-once")
    await page.get_by_role("button", name="I have stored it").click()
    await expect(page.locator("#secret-panel")).to_be_hidden()
    await page.reload()
    await expect(webhooks_row).to_be_visible()
    assert secret not in await page.content()
    assert secret[-4:] not in await webhooks_row.inner_text()

    # Test: the sample goes to the real HTTPS receiver, signed with that secret, and its 200 is shown.
    receiver.expect("/crm", secret=secret)
    await page.get_by_role("button", name="Test CRM Sync").click()
    await expect(page.get_by_role("heading", name="Send a test to CRM Sync")).to_be_focused()
    await page.get_by_role("combobox", name="Event type").select_option("message.read")
    await page.get_by_role("button", name="Send test").click()
    result = page.locator("#test-result")
    await expect(result).to_contain_text("Delivered")
    await expect(result).to_contain_text(re.compile(r"HTTP 200 in \d+ ms"))
    await expect(result.get_by_label("Response body")).to_have_text("answered 200")
    await shot(page, "settings-04-test-200")
    [delivered] = receiver.at("/crm")
    assert delivered.signature_ok is True and delivered.headers["X-Webhook-Event"] == "message.read"
    assert delivered.headers["Authorization"] == "Bearer gw-token-1234567890"
    assert "gw-token" not in await page.content()

    # Where failure notifications are mailed: checked by the API, kept by the page.
    await page.get_by_label("Failure notifications by e-mail").fill("not-an-address")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#notify-error")).to_contain_text("e-mail address")
    await page.get_by_label("Failure notifications by e-mail").fill("ops@example.com")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#notice")).to_contain_text("once you enter the code mailed to it")
    assert (await api.call("GET", "/v1/account", key)).body["notification_email"] == "ops@example.com"
    # A wrong code is refused next to its field (the right one is proven through the API, with a real mailbox).
    await page.get_by_label("Confirmation code from that e-mail").fill("not-the-code")
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.locator("#confirm-error")).to_contain_text("not the one mailed")
    await page.get_by_role("combobox", name="Event type").select_option("contact.created")
    await page.get_by_role("button", name="Send test").click()
    await expect(result).to_contain_text("contact.created")

    # Active off with the keyboard only, then on again with a click; the API agrees each time.
    switch = page.get_by_role("switch", name="Active: CRM Sync")
    await switch.focus()
    await page.keyboard.press("Space")
    await expect(page.locator("#notice")).to_contain_text("CRM Sync is now paused")
    await expect(switch).not_to_be_checked()
    await expect(switch).to_be_focused()
    assert (await api.call("GET", f"/v1/webhooks/{webhook_id}", key)).body["active"] is False
    await expect(webhooks_row.locator(".off-reason")).to_contain_text("Switched off by hand · since")
    await shot(page, "settings-05-inactive")
    await switch.click()
    await expect(page.locator("#notice")).to_contain_text("CRM Sync is now active")
    await expect(switch).to_be_checked()
    await expect(webhooks_row.locator(".off-reason")).to_have_text("")
    assert (await api.call("GET", f"/v1/webhooks/{webhook_id}", key)).body["active"] is True

    # Logs: both test attempts and an earlier real attempt that timed out (as the recorder logs it),
    # newest first, with type, status and response time.
    insert_attempt(
        api.settings.database_url.get_secret_value(),
        webhook_id,
        datetime.now(UTC) - timedelta(minutes=5),
        "message.incoming",
        outcome="timeout",
        status_code=None,
        account_id="acct_acme",
    )
    await page.get_by_role("link", name="CRM Sync").click()  # the log is on the webhook's own page
    await expect(page.get_by_role("heading", name="CRM Sync", level=1)).to_be_focused()
    await expect(page.get_by_role("heading", name="Deliveries of CRM Sync")).to_be_visible()
    rows = page.locator("#logs tbody tr")
    await expect(rows).to_have_count(3)
    await expect(rows.nth(0)).to_contain_text("contact.created")
    await expect(rows.nth(1)).to_contain_text("message.read")
    for i in range(2):
        await expect(rows.nth(i)).to_contain_text("200")
        await expect(rows.nth(i)).to_contain_text(re.compile(r"\d+ ms"))
        await expect(rows.nth(i)).to_contain_text("test")
    await expect(rows.nth(2)).to_contain_text("message.incoming")
    await expect(rows.nth(2)).to_contain_text("timeout")
    await shot(page, "settings-06-logs")

    # Filter the log, then rotate the secret (confirmed in a dialog): the new one is shown once.
    await page.get_by_role("combobox", name="Event type").select_option("message.read")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(1)
    await page.get_by_role("combobox", name="Event type").select_option("")
    await page.get_by_role("combobox", name="Outcome").select_option("timeout")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(1)
    await expect(rows.nth(0)).to_contain_text("message.incoming")
    await page.get_by_role("link", name="All webhooks").click()
    await expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_focused()
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Rotate the secret of CRM Sync").click()
    await expect(page.get_by_role("heading", name="Signing secret of CRM Sync")).to_be_focused()
    rotated = await page.get_by_label("Secret", exact=True).input_value()
    assert rotated.startswith("whsec_") and rotated != secret
