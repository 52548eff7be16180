"""Ed25519 signing on the settings page, in headless Chromium against the real API, real PostgreSQL and a
real HTTPS receiver: opt in on create, the public key shown (never the private one) and the one a Test
delivery verifies with in Node, the key rotated with its previous key shown, and switched off in Edit.
Screenshots go to tests/artifacts/ed25519-*.png."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import psycopg
import pytest
from playwright.async_api import Page, expect

from hookfleet.secretbox import SecretBox, open_signing_key
from schemas.topics import Topics
from tests.support.api_client import SECRET_KEY, RunningApi, api_settings
from tests.support.browser import shot
from tests.support.node_verifier import node_verify
from tests.support.receiver import HttpsReceiver

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PUBLIC_KEY = re.compile(r"whpk_[A-Za-z0-9+/]{43}=")


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics) -> AsyncIterator[RunningApi]:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle, topics)) as running:
        yield running


def private_key(api: RunningApi, webhook_id: str) -> str | None:
    with psycopg.connect(api.settings.database_url.get_secret_value()) as conn:
        row = conn.execute("SELECT signing_key_ciphertext FROM webhooks WHERE id = %s", (webhook_id,)).fetchone()
    assert row is not None
    return open_signing_key(SecretBox.from_b64(SECRET_KEY), row[0], webhook_id)


async def test_opt_in_show_rotate_and_switch_off_ed25519_in_the_browser(
    api: RunningApi, page: Page, receiver: HttpsReceiver
) -> None:
    _, key = api.account("Acme", "acct_acme")
    url = receiver.expect("/ledger")
    await page.goto(f"{api.base_url}/settings/webhooks")
    await page.get_by_label("API key").fill(key)
    await page.get_by_label("API key").press("Enter")
    await expect(page.get_by_text("No webhooks yet.")).to_be_visible()

    # Create with the checkbox: the secret panel shows the public key beside the secret.
    await page.get_by_role("button", name="New webhook").click()
    await page.get_by_label("Name", exact=True).fill("Ledger")
    await page.get_by_label("Endpoint URL").fill(url)
    await page.get_by_label("message.read").check()
    await page.get_by_label("Also sign with Ed25519").check()
    await page.get_by_role("button", name="Create webhook").click()
    await expect(page.get_by_role("heading", name="Signing secret of Ledger")).to_be_focused()
    created_public = await page.get_by_label("Public key", exact=True).input_value()
    assert PUBLIC_KEY.fullmatch(created_public), created_public
    await shot(page, "ed25519-01-created")
    await page.get_by_role("button", name="I have stored it").click()

    # The webhook's page shows the same public key; a Test delivery verifies with it in Node.
    await page.get_by_role("link", name="Ledger").click()
    await expect(page.get_by_role("heading", name="Ledger", level=1)).to_be_focused()
    webhook_id = page.url.rsplit("/", 1)[-1]
    shown = page.get_by_label("Public key (Ed25519)")
    await expect(shown).to_have_value(created_public)
    private = private_key(api, webhook_id)
    assert private is not None
    assert private not in await page.content() and private[5:] not in await page.content()
    assert (await api.call("POST", f"/v1/webhooks/{webhook_id}/test", key)).body["ok"] is True
    [got] = receiver.at("/ledger")
    assert node_verify([created_public], got.headers, got.body, time.time()).verified == [True]

    # Rotate the signing key (confirmed in a dialog): a new key, the previous one shown with its end.
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Rotate signing key").click()
    await expect(page.get_by_label("Previous public key")).to_have_value(created_public)
    new_public = await shown.input_value()
    assert PUBLIC_KEY.fullmatch(new_public) and new_public != created_public
    await expect(page.locator("#previous-public-key-hint")).to_contain_text("Also signs until")
    await shot(page, "ed25519-02-rotated")

    # Edit: the checkbox reflects the webhook; unchecking it switches Ed25519 off and the key box goes.
    await page.get_by_role("button", name="Edit").click()
    await expect(page.get_by_label("Also sign with Ed25519")).to_be_checked()
    await page.get_by_label("Also sign with Ed25519").uncheck()
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("heading", name="Ledger", level=1)).to_be_focused()
    await expect(page.locator("#notice")).to_contain_text("Saved: asymmetric signing")
    await expect(page.locator("#public-key-box")).to_be_hidden()
    await expect(page.get_by_role("button", name="Rotate signing key")).to_be_hidden()
    assert private_key(api, webhook_id) is None
    assert (await api.call("GET", f"/v1/webhooks/{webhook_id}", key)).body["public_key"] is None
