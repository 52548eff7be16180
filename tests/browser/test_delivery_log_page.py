"""The account's delivery log on the settings page (`#/deliveries`), in headless Chromium against the real API and
PostgreSQL (the log written by the recorder's own batch write): reached from the page's views by keyboard, newest
first across webhooks; event type and outcome, then an HTTP status, narrow the table and stay in the address
(a reload shows the same rows); Older pages on with the keyset cursor, next rows and no repeats; an event id
opens where that event went; a status the API refuses is shown next to its field; a read-only portal session
reads it too; an Older page the retention dropped meanwhile is said to be past it. Screenshots go to
tests/artifacts/log-*.png.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Page, expect

from delivery.deliverer import DeliveryResult, attempt_record
from hookfleet.retention import prune
from producer.publisher import build_event
from recorder.batch import Batch
from recorder.store import RecorderStore
from schemas.catalog import EventType
from schemas.models import Outcome
from tests.support.api_client import SECRET_KEY, RunningApi, api_settings
from tests.support.browser import shot
from tests.support.fleet import seed_webhook

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PAGE_SIZE = 25  # deliverylog.js LOG_PAGE_SIZE
OUTCOMES: list[tuple[Outcome, int | None]] = [
    (Outcome.SUCCESS, 200),
    (Outcome.HTTP_ERROR, 503),
    (Outcome.SUCCESS, 204),
    (Outcome.TIMEOUT, None),
    (Outcome.HTTP_ERROR, 500),
]
TYPES = [EventType.MESSAGE_READ, EventType.CONTACT_CREATED, EventType.MESSAGE_DELIVERED]


@dataclass(frozen=True)
class Row:
    attempt_id: str
    event_id: str
    webhook_id: str
    event_type: str
    outcome: str
    status: int | None
    at: datetime


def minutes_back(count: int) -> list[timedelta]:
    return [timedelta(minutes=i + 1) for i in range(count)]


def seed_log(database_url: str, account: str, webhooks: list[str], ages: list[timedelta]) -> list[Row]:
    """One attempt per age (back from now) over the webhooks, as the recorder writes them; newest first."""
    now = datetime.now(UTC).replace(microsecond=0)
    batch, rows = Batch(), []
    for i, age in enumerate(ages):
        at = now - age
        outcome, status = OUTCOMES[i % len(OUTCOMES)]
        event = build_event(account, TYPES[i % len(TYPES)], {"n": i}, created_at=at)
        error = None if outcome is Outcome.SUCCESS else f"http {status}" if status else "timeout"
        result = DeliveryResult(outcome, status, error, 10 + i, "", at)
        webhook_id = webhooks[i % len(webhooks)]
        record = attempt_record(event, webhook_id, 1, result, "done" if outcome is Outcome.SUCCESS else "retry")
        batch.add("attempts", 0, i, record)
        rows.append(Row(record.attempt_id, event.id, webhook_id, event.type.value, outcome.value, status, at))
    store = RecorderStore(database_url)
    try:
        store.write(batch)
    finally:
        store.close()
    return sorted(rows, key=lambda r: (r.at, r.attempt_id), reverse=True)


async def shown(page: Page) -> list[str]:
    """The attempt ids of the table's rows, top to bottom."""
    ids: list[str] = await page.locator("#log-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.attemptId)"
    )
    return ids


async def expect_rows(page: Page, rows: list[Row]) -> None:
    await expect(page.locator("#log-table tbody tr")).to_have_count(len(rows))
    assert await shown(page) == [r.attempt_id for r in rows]


async def test_the_account_log_filters_pages_and_links_to_events(
    api: RunningApi, page: Page, database_url: str
) -> None:
    # Given 40 attempts over two webhooks of one account, and another account's log
    account, key = api.account("Acme", "acct_acme")
    crm, _ = seed_webhook(
        database_url, account, "https://127.0.0.1:9/crm", ["message.read"], name="CRM Sync", secret_key=SECRET_KEY
    )
    erp, _ = seed_webhook(
        database_url, account, "https://127.0.0.1:9/erp", ["message.read"], name="Old ERP", secret_key=SECRET_KEY
    )
    log = seed_log(database_url, account, [crm, erp], minutes_back(40))
    globex, _ = api.account("Globex", "acct_globex")
    theirs, _ = seed_webhook(database_url, globex, "https://127.0.0.1:9/g", ["message.read"], secret_key=SECRET_KEY)
    seed_log(database_url, globex, [theirs], minutes_back(5))

    await page.goto(f"{api.base_url}/settings/webhooks")
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.keyboard.type(key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("link", name="CRM Sync")).to_be_visible()

    # The view is one of the page's views, opened by keyboard: the newest page across both webhooks
    views = page.get_by_role("navigation", name="Views")
    await views.get_by_role("link", name="Delivery log").focus()
    await page.keyboard.press("Enter")
    view = page.locator("#log-view")
    title = view.get_by_role("heading", name="Delivery log", level=1)
    await expect(title).to_be_focused()
    await expect(views.get_by_role("link", name="Delivery log")).to_have_attribute("aria-current", "page")
    await expect_rows(page, log[:PAGE_SIZE])
    first = page.locator("#log-table tbody tr").first
    newest = log[0]
    await expect(first.locator("td").nth(1).get_by_role("link")).to_have_attribute("href", f"#/webhooks/{crm}")
    await expect(first.locator("td").nth(1)).to_contain_text("CRM Sync")
    await expect(first.locator("td").nth(2)).to_have_text(newest.event_type)
    await expect(first.locator("td").nth(3)).to_have_text(newest.event_id)
    await expect(first.locator("td").nth(4)).to_have_text("1")
    await expect(first.locator("td").nth(5)).to_have_text("200")
    await expect(first.locator("td").nth(6)).to_have_text("10 ms")
    await expect(page.locator("#log-table tbody tr").nth(3).locator("td").nth(5)).to_have_text("timeout")
    await shot(page, "log-01-all")

    # Older: the next rows, none repeated, and the reading goes on at the first of them
    older = view.get_by_role("button", name="Older")
    await older.focus()
    await page.keyboard.press("Enter")
    await expect_rows(page, log)
    assert len(set(await shown(page))) == len(log)
    await expect(older).to_be_hidden()
    await expect(page.locator("#log-table tbody tr").nth(PAGE_SIZE).get_by_role("link").first).to_be_focused()

    # Event type and outcome narrow the table, and they are in the address: a reload shows the same rows
    await view.get_by_label("Event type").select_option("contact.created")
    await view.get_by_label("Outcome").select_option("http_error")
    await view.get_by_role("button", name="Search").click()
    wanted = [r for r in log if r.event_type == "contact.created" and r.outcome == "http_error"]
    assert 0 < len(wanted) < PAGE_SIZE
    await expect_rows(page, wanted)
    assert page.url.endswith("#/deliveries?event_type=contact.created&outcome=http_error")
    await page.reload()
    await expect(title).to_be_focused()
    await expect(view.get_by_label("Event type")).to_have_value("contact.created")
    await expect(view.get_by_label("Outcome")).to_have_value("http_error")
    await expect_rows(page, wanted)
    await shot(page, "log-02-filtered")

    # An HTTP status alone
    await view.get_by_role("button", name="Clear filters").click()
    await expect_rows(page, log[:PAGE_SIZE])
    await view.get_by_label("HTTP status").fill("503")
    await page.keyboard.press("Enter")
    with_503 = [r for r in log if r.status == 503]
    await expect_rows(page, with_503)
    assert page.url.endswith("#/deliveries?status=503")

    # A time range (UTC, since inclusive, before exclusive), and an end before its start is refused next to it
    await view.get_by_role("button", name="Clear filters").click()
    await expect_rows(page, log[:PAGE_SIZE])
    await view.get_by_label("Since (UTC)").fill(log[5].at.strftime("%Y-%m-%dT%H:%M:%S"))
    await view.get_by_label("Before (UTC)").fill(log[2].at.strftime("%Y-%m-%dT%H:%M:%S"))
    await view.get_by_role("button", name="Search").click()
    await expect_rows(page, log[3:6])
    await page.reload()
    await expect_rows(page, log[3:6])
    await view.get_by_label("Before (UTC)").fill(log[9].at.strftime("%Y-%m-%dT%H:%M:%S"))
    await view.get_by_role("button", name="Search").click()
    await expect(page.locator("#log-until-error")).to_have_text("until must be after since")
    await view.get_by_role("button", name="Clear filters").click()
    await expect(page.locator("#log-until-error")).to_be_empty()

    # A status the API refuses: its message next to the field, which takes the focus
    status = view.get_by_label("HTTP status")
    await status.fill("99")
    await page.keyboard.press("Enter")
    await expect(page.locator("#log-status-error")).to_have_text("Input should be greater than or equal to 100")
    await expect(status).to_have_attribute("aria-invalid", "true")
    await expect(status).to_be_focused()
    await expect(page.locator("#log-table")).to_be_hidden()
    await shot(page, "log-03-bad-status")

    # An event id opens where that event went
    await status.fill("503")
    await page.keyboard.press("Enter")
    await expect(status).not_to_have_attribute("aria-invalid", "true")
    await expect_rows(page, with_503)
    event_id = with_503[0].event_id
    await page.get_by_role("link", name=event_id, exact=True).click()
    await expect(page.get_by_role("heading", name=f"Event {event_id}", level=1)).to_be_focused()
    await expect(page.locator("#event-webhooks section")).to_have_count(1)


async def test_a_read_only_portal_session_reads_the_log(api: RunningApi, page: Page, database_url: str) -> None:
    account, key = api.account("Acme", "acct_acme")
    crm, _ = seed_webhook(
        database_url, account, "https://127.0.0.1:9/crm", ["message.read"], name="CRM Sync", secret_key=SECRET_KEY
    )
    log = seed_log(database_url, account, [crm], minutes_back(12))
    reply = await api.call("POST", "/v1/portal-sessions", key, json_body={"read_only": True})
    assert reply.status == 201, reply.body

    await page.goto(reply.body["url"])
    await expect(page.locator("#portal-banner")).to_be_visible()
    view = page.locator("#log-view")
    await page.get_by_role("navigation", name="Views").get_by_role("link", name="Delivery log").click()
    await expect_rows(page, log)
    await view.get_by_label("Outcome").select_option("timeout")
    await view.get_by_role("button", name="Search").click()
    await expect_rows(page, [r for r in log if r.outcome == "timeout"])
    await shot(page, "log-04-portal")


@pytest.fixture
async def api_keeping_2_days(database_url: str, kafka_bootstrap: str, ca_bundle: str) -> AsyncIterator[RunningApi]:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle, retention_days=2)) as running:
        yield running


async def test_older_rows_dropped_by_the_retention_are_said_to_be_past_it(
    api_keeping_2_days: RunningApi, page: Page, database_url: str
) -> None:
    # Given 20 attempts of the last minutes and 10 of three days ago, on an API that keeps two days
    api = api_keeping_2_days
    account, key = api.account("Acme", "acct_acme")
    crm, _ = seed_webhook(
        database_url, account, "https://127.0.0.1:9/crm", ["message.read"], name="CRM Sync", secret_key=SECRET_KEY
    )
    log = seed_log(database_url, account, [crm], minutes_back(20) + [timedelta(days=3, minutes=i) for i in range(10)])
    await page.goto(f"{api.base_url}/settings/webhooks#/deliveries")
    await page.get_by_label("API key").fill(key)
    await page.keyboard.press("Enter")
    view = page.locator("#log-view")
    await expect_rows(page, log[:PAGE_SIZE])

    # When the retention drops the old days before Older is pressed (the recorder prunes hourly)
    await asyncio.to_thread(prune, database_url, 2)
    await view.get_by_role("button", name="Older").click()

    # Then the page says the older log is past the retention, and keeps the rows it shows
    await expect(page.locator("#log-summary")).to_contain_text("Older deliveries are past the retention")
    await expect(page.locator("#log-summary")).to_contain_text("retention of 2 days")
    await expect(view.get_by_role("button", name="Older")).to_be_hidden()
    await expect_rows(page, log[:PAGE_SIZE])
