"""Webhook filters through the API on real PostgreSQL: saved, shown, replaced and removed; refused with the
error and its position; and previewed over the account's stored events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api_client import RunningApi

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
