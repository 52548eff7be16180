"""Webhook filters through the API on real PostgreSQL: saved, shown, replaced and removed; refused with the
error and its position; and previewed over the account's stored events."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from api import filter_preview
from tests.integration.test_api_cli import InProcess
from tests.support.api_client import RunningApi, api_settings

pytestmark = pytest.mark.integration

NEW = {"name": "Support desk", "url": "https://localhost:9/hooks", "events": ["message.incoming", "transfer.created"]}


async def _create(api: RunningApi, key: str, **fields: object) -> dict[str, Any]:
    reply = await api.call("POST", "/v1/webhooks", key, {**NEW, **fields})
    assert reply.status == 201, reply.body
    created: dict[str, Any] = reply.body
    return created


async def test_a_filter_is_saved_shown_replaced_and_removed(api: RunningApi, key: str) -> None:
    created = await _create(api, key, filter="data.amount >= 1000")
    assert created["filter"] == "data.amount >= 1000"
    path = f"/v1/webhooks/{created['id']}"
    assert (await api.call("GET", path, key)).body["filter"] == "data.amount >= 1000"
    renamed = await api.call("PATCH", path, key, {"name": "Renamed"})
    assert renamed.status == 200 and renamed.body["filter"] == "data.amount >= 1000", "null leaves it as it is"
    replaced = await api.call("PATCH", path, key, {"filter": 'type == "transfer.created"'})
    assert replaced.status == 200 and replaced.body["filter"] == 'type == "transfer.created"'
    removed = await api.call("PATCH", path, key, {"filter": ""})
    assert removed.status == 200 and removed.body["filter"] is None
    assert (await api.call("GET", path, key)).body["filter"] is None
    assert (await _create(api, key))["filter"] is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("data.amount >", "filter: syntax error: mismatched input '<EOF>'"),
        ("amount > 1000", "filter: unknown name 'amount'"),
    ],
)
async def test_a_bad_filter_is_422_naming_the_field_the_error_and_its_position(
    api: RunningApi, key: str, text: str, says: str
) -> None:
    column = {"data.amount >": 14, "amount > 1000": 1}[text]
    created = await api.call("POST", "/v1/webhooks", key, {**NEW, "filter": text})
    assert created.status == 422, created.body
    assert created.error["field"] == "filter"
    assert created.error["message"].startswith(says), created.error
    assert f"(line 1, column {column})" in created.error["message"]

    webhook = await _create(api, key)
    updated = await api.call("PATCH", f"/v1/webhooks/{webhook['id']}", key, {"filter": text})
    assert updated.status == 422 and updated.error["field"] == "filter"
    assert f"(line 1, column {column})" in updated.error["message"]


async def test_an_overlong_filter_is_refused(api: RunningApi, key: str) -> None:
    reply = await api.call("POST", "/v1/webhooks", key, {**NEW, "filter": "true || " * 130 + "true"})
    assert reply.status == 422 and reply.error["field"] == "filter"
    assert "at most 1000" in reply.error["message"]


# ------------------------------------------------------------------------------------------ preview


def _seed_log(database_url: str, rows: list[tuple[str, int, str, dict[str, Any]]]) -> None:
    """Stored events as the recorder leaves them: (account, days ago, type, data), one payload per row."""
    today = datetime.now(UTC).date()
    with psycopg.connect(database_url) as conn:
        for days_ago in {r[1] for r in rows}:
            conn.execute("SELECT hookfleet_create_log_day(%s)", (today - timedelta(days=days_ago),))
        for n, (account, days_ago, event_type, data) in enumerate(rows):
            day = today - timedelta(days=days_ago)
            event = {
                "id": f"evt_{day:%Y%m%d}{n:06d}",
                "type": event_type,
                "created_at": f"{day}T10:00:00.000Z",
                "account_id": account,
                "data": data,
            }
            conn.execute(
                "INSERT INTO event_payloads (event_id, account_id, event, logged_on) VALUES (%s, %s, %s, %s)",
                (event["id"], account, Jsonb(event), day),
            )


def _log(database_url: str) -> None:
    incoming = "message.incoming"
    _seed_log(
        database_url,
        [("acct_a", 0, incoming, {"channel": "whatsapp"})] * 6
        + [("acct_a", 1, incoming, {"channel": "sms"})] * 4
        + [("acct_a", 1, incoming, {"text": "no channel"})] * 2  # errored: no such key
        + [("acct_a", 5, incoming, {"channel": "whatsapp"})] * 3  # only with days >= 6
        + [("acct_a", 0, "contact.created", {"channel": "whatsapp"})] * 5  # not subscribed
        + [("acct_b", 0, incoming, {"channel": "whatsapp"})] * 7,  # another account
    )


PREVIEW = {"filter": 'data.channel == "whatsapp"', "days": 2}


async def test_preview_counts_matches_no_matches_and_errors_of_the_accounts_subscribed_events(
    api: RunningApi, key: str
) -> None:
    _log(api.settings.database_url.get_secret_value())
    webhook = await _create(api, key)
    reply = await api.call("POST", f"/v1/webhooks/{webhook['id']}/filter-preview", key, PREVIEW)
    assert reply.status == 200, reply.body
    page = reply.body
    assert (page["matched"], page["not_matched"], page["errored"]) == (6, 4, 2)
    assert (page["scanned"], page["other_types"]) == (17, 5)
    assert page["cut_short"] is False and page["next_cursor"] is None
    assert page["since"] == str(datetime.now(UTC).date() - timedelta(days=1))
    assert [len(page["samples"][k]) for k in ("matched", "not_matched", "errored")] == [3, 3, 2]
    assert page["samples"]["errored"][0]["error"] == 'Key not found in map : "channel"'
    assert all(s["event_type"] == "message.incoming" for s in page["samples"]["matched"])

    week = await api.call("POST", f"/v1/webhooks/{webhook['id']}/filter-preview", key, {**PREVIEW, "days": 7})
    assert (week.body["matched"], week.body["not_matched"], week.body["errored"]) == (9, 4, 2)


async def test_preview_pages_add_up_to_the_whole_range(api: RunningApi, key: str) -> None:
    _log(api.settings.database_url.get_secret_value())
    webhook = await _create(api, key)
    totals = {"matched": 0, "not_matched": 0, "errored": 0, "scanned": 0}
    cursor: str | None = None
    pages = 0
    while True:
        body = {**PREVIEW, "limit": 4} | ({"cursor": cursor} if cursor else {})
        reply = await api.call("POST", f"/v1/webhooks/{webhook['id']}/filter-preview", key, body)
        assert reply.status == 200, reply.body
        assert reply.body["scanned"] <= 4
        totals = {k: v + reply.body[k] for k, v in totals.items()}
        pages += 1
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert totals == {"matched": 6, "not_matched": 4, "errored": 2, "scanned": 17}
    assert pages == 5


async def test_a_preview_past_its_time_bound_is_cut_short_and_goes_on_from_there(
    api: RunningApi, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _log(api.settings.database_url.get_secret_value())
    webhook = await _create(api, key)
    monkeypatch.setattr(filter_preview, "PREVIEW_TIME_BOUND_S", 0.0)
    monkeypatch.setattr(filter_preview, "CHUNK", 5)
    path = f"/v1/webhooks/{webhook['id']}/filter-preview"
    first = await api.call("POST", path, key, {**PREVIEW, "limit": 100})
    assert first.body["cut_short"] is True and first.body["scanned"] == 1 and first.body["next_cursor"]
    scanned = first.body["scanned"]
    cursor = first.body["next_cursor"]
    while cursor:
        page = await api.call("POST", path, key, {**PREVIEW, "limit": 100, "cursor": cursor})
        scanned += page.body["scanned"]
        cursor = page.body["next_cursor"]
    assert scanned == 17


async def test_a_bad_preview_is_refused_naming_the_field(api: RunningApi, key: str) -> None:
    webhook = await _create(api, key)
    path = f"/v1/webhooks/{webhook['id']}/filter-preview"
    bad = await api.call("POST", path, key, {"filter": "data.channel ==", "days": 1})
    assert bad.status == 422 and bad.error["field"] == "filter"
    assert "(line 1, column 16)" in bad.error["message"]
    cursor = await api.call("POST", path, key, {**PREVIEW, "cursor": "nope"})
    assert cursor.status == 422 and cursor.error["field"] == "cursor"
    days = await api.call("POST", path, key, {**PREVIEW, "days": 0})
    assert days.status == 422 and days.error["field"] == "days"
    other = await api.call("POST", "/v1/webhooks/wh_01JD8Z6Q3K4M5N6P7R8S9T0V1W/filter-preview", key, PREVIEW)
    assert other.status == 404


# ------------------------------------------------------------------------------------------ CLI


async def test_the_cli_sets_shows_previews_and_removes_a_filter(
    api: RunningApi, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _log(api.settings.database_url.get_secret_value())
    cli = InProcess(api, key, capsys)
    code, out, err = await cli(
        "create", "--name", "Desk", "--url", "https://localhost:9/h", "--events", "message.incoming",
        "--filter", "data.channel ==",
    )  # fmt: skip
    assert code != 0 and "filter: syntax error" in err and "(line 1, column 16)" in err, (out, err)
    code, out, err = await cli(
        "create", "--name", "Desk", "--url", "https://localhost:9/h", "--events", "message.incoming",
        "--filter", 'data.channel == "sms"',
    )  # fmt: skip
    assert code == 0, err
    assert re.search(r'^filter\s+data\.channel == "sms"$', out, re.M), out
    webhook_id = re.search(r"^id\s+(wh_\w+)$", out, re.M).group(1)  # type: ignore[union-attr]

    code, out, err = await cli("filter-preview", webhook_id, 'data.channel == "whatsapp"', "--days", "2")
    assert code == 0, err
    assert "sent: 6   left out: 4   could not be evaluated: 2" in out, out
    assert "e.g. not evaluated: evt_" in out and 'Key not found in map : "channel"' in out
    paged = await cli.json("filter-preview", webhook_id, "true", "--days", "2", "--limit", "5")
    assert paged["scanned"] == 5 and paged["next_cursor"]
    code, out, _ = await cli("filter-preview", webhook_id, "true", "--days", "2", "--limit", "5")
    assert f"more stored events; go on with --cursor {paged['next_cursor']}" in out

    removed = await cli.json("update", webhook_id, "--filter", "")
    assert removed["filter"] is None
    code, out, _ = await cli("show", webhook_id)
    assert re.search(r"^filter\s+none \(every event of its types\)$", out, re.M), out


async def test_preview_pages_per_minute_are_a_quota(database_url: str, kafka_bootstrap: str, ca_bundle: str) -> None:
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, filter_previews_per_minute=2)
    async with RunningApi(settings) as api:
        _, key = api.account("Acme", "acct_a")
        webhook = await _create(api, key)
        path = f"/v1/webhooks/{webhook['id']}/filter-preview"
        for _ in range(2):
            assert (await api.call("POST", path, key, PREVIEW)).status == 200
        refused = await api.call("POST", path, key, PREVIEW)
        assert refused.status == 429 and refused.error["limit"] == "HOOKFLEET_FILTER_PREVIEWS_PER_MINUTE"
        assert int(refused.headers["Retry-After"]) >= 1
        _, other = api.account("Other", "acct_b")
        other_webhook = await _create(api, other)
        assert (
            await api.call("POST", f"/v1/webhooks/{other_webhook['id']}/filter-preview", other, PREVIEW)
        ).status == 200
