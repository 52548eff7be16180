"""The Replay action of the Settings -> Webhooks page in headless Chromium, against the real API, real
PostgreSQL and the real broker: the count comes first (a dry run), nothing is sent until the user
confirms, then the progress is shown; the log marks replayed attempts with a `replay` badge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Page, expect

from delivery.deliverer import DeliveryResult, attempt_record
from recorder.batch import Batch
from recorder.store import RecorderStore
from schemas.catalog import EventType, sample_data
from schemas.ids import new_event_id
from schemas.models import AttemptRecord, Event, Outcome
from schemas.topics import Topics
from tests.support.api_client import RunningApi, api_settings, consume
from tests.support.browser import shot

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics) -> AsyncIterator[RunningApi]:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle, topics)) as running:
        yield running


def logged(webhook_id: str, account: str, at: datetime, replay_id: str | None = None) -> AttemptRecord:
    event = Event(
        id=new_event_id(),
        type=EventType.MESSAGE_READ,
        created_at=at,
        account_id=account,
        data=sample_data(EventType.MESSAGE_READ),
    )
    result = DeliveryResult(Outcome.HTTP_ERROR, 500, None, 12, "boom", at)
    return attempt_record(event, webhook_id, 1, result, "retry", replay_id=replay_id)


async def test_replay_counts_first_then_sends_on_confirm_and_shows_progress(
    api: RunningApi, page: Page, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    account, key = api.account("Acme")
    made = await api.call(
        "POST", "/v1/webhooks", key, {"name": "CRM Sync", "url": "https://localhost:9/crm", "events": ["message.read"]}
    )
    webhook_id = made.body["id"]
    now = datetime.now(UTC).replace(microsecond=0)
    records = [logged(webhook_id, account, now - timedelta(hours=h)) for h in (5, 4, 3)]
    records.append(logged(webhook_id, account, now - timedelta(minutes=1), replay_id="rpl_01JD8Z6Q3K4M5N6P7R8S9T0V1W"))
    batch = Batch()
    for offset, record in enumerate(records):
        batch.add("attempts", 0, offset, record)
    store = RecorderStore(database_url)
    store.write(batch)
    store.close()

    await page.goto(f"{api.base_url}/settings/webhooks")
    await page.get_by_label("API key").fill(key)
    await page.get_by_label("API key").press("Enter")
    await page.get_by_role("button", name="Replay events to CRM Sync").click()
    await expect(page.get_by_role("heading", name="Replay events to CRM Sync")).to_be_focused()
    since = (now - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M")
    await page.get_by_label("From (UTC)").fill(since)
    await page.get_by_role("button", name="Count events").click()

    # The dry run's count, and nothing sent yet
    await expect(page.locator("#replay-count")).to_contain_text("3 events would be sent again")
    await shot(page, "settings-07-replay-count")
    assert consume(kafka_bootstrap, topics.deliveries, 1, timeout_s=2.0) == []

    # Confirm: the three events are queued for this webhook and the progress is shown
    await page.get_by_role("button", name="Replay 3 events").click()
    await expect(page.locator("#replay-progress")).to_contain_text("3 of 3 queued", timeout=15_000)
    await expect(page.locator("#replay-progress")).to_contain_text("0 delivered")
    await shot(page, "settings-08-replay-progress")
    sent = consume(kafka_bootstrap, topics.deliveries, 3)
    assert {key_.decode() for key_, _ in sent} == {webhook_id}
    assert sorted(value for _, value in sent) and len(sent) == 3

    # The log marks the replayed attempt
    await page.get_by_role("button", name="Close").last.click()
    await page.get_by_role("link", name="CRM Sync").click()  # the log is on the webhook's own page
    rows = page.locator("#logs tbody tr")
    await expect(rows).to_have_count(4)
    await expect(rows.nth(0).locator(".badge.replay")).to_have_text("replay")
    await expect(rows.nth(1).locator(".badge.replay")).to_have_count(0)
