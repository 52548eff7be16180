"""Pure logic of the API: request models, error mapping, cursors, masking, the OpenAPI document, the catalog
schemas and the CLI's output. No I/O."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs
import pytest
from pydantic import ValidationError

from api import cursor
from api.auth import bearer_token, hash_key, new_api_key
from api.client_cli import build_parser, table
from api.errors import from_validation
from api.event_types import body_schema, catalog_body, sample_event
from api.openapi import document
from api.routes import OPERATIONS
from api.store import WebhookRow
from api.url_check import _blocked
from api.views import mask_secret, webhook_view, webhook_with_secret
from delivery.signing import new_signing_key, public_key
from schemas.api import DeliveryQuery, RecoverRequest, WebhookCreate, WebhookUpdate
from schemas.catalog import CATALOG, OPERATIONAL_CATALOG, EventType
from schemas.models import Event

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def validation_error(model: Any, raw: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(raw)
    return caught.value


# ------------------------------------------------------------------------------------------ request models


def test_create_dedupes_and_sorts_events_and_defaults_to_active() -> None:
    body = WebhookCreate.model_validate_json(
        '{"name": "CRM", "url": "https://crm.example.com/h",'
        ' "events": ["message.read", "contact.created", "message.read"]}'
    )
    assert body.events == [EventType.CONTACT_CREATED, EventType.MESSAGE_READ] and body.active is True


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (
            '{"name": "a", "url": "https://x.example", "events": ["message.read"], "id": "wh_1"}',
            "id",
            "unknown field 'id'",
        ),
        ('{"url": "https://x.example", "events": ["message.read"]}', "name", "name is required"),
        ('{"name": "a\\nb", "url": "https://x.example", "events": ["message.read"]}', "name", "U+000A (LINE FEED)"),
        ('{"name": "a", "url": "https://x.example/a b", "events": ["message.read"]}', "url", "spaces"),
        (
            '{"name": "a", "url": "ftp://x.example", "events": ["message.read"]}',
            "url",
            "url: webhook url must be https",
        ),
        ('{"name": "a", "url": "https://x.example", "events": "message.read"}', "events", "events"),
        ('{"name": 5, "url": "https://x.example", "events": ["message.read"]}', "name", "string"),
    ],
)
def test_invalid_bodies_map_to_422_naming_the_field(raw: str, field: str, message: str) -> None:
    error = from_validation(validation_error(WebhookCreate, raw))
    assert error.status == 422 and error.code == "invalid_field"
    assert error.field == field and message in error.message
    assert "Value error" not in error.message


def test_not_json_is_400_and_not_an_object_is_422() -> None:
    assert from_validation(validation_error(WebhookCreate, "{nope")).status == 400
    array = from_validation(validation_error(WebhookCreate, "[1]"))
    assert array.status == 422 and array.message == "request body must be a JSON object" and array.field is None


def test_update_treats_null_as_no_change_and_recover_takes_an_aware_time() -> None:
    assert WebhookUpdate.model_validate_json('{"name": null, "active": false}').model_dump(exclude_none=True) == {
        "active": False
    }
    since = RecoverRequest.model_validate_json('{"since": "2026-01-01T00:00:00Z"}').since
    assert since == datetime(2026, 1, 1, tzinfo=UTC)
    assert from_validation(validation_error(RecoverRequest, '{"since": "2026-01-01T00:00:00"}')).field == "since"


def test_delivery_query_reads_strings_from_the_url() -> None:
    query = DeliveryQuery.model_validate({"limit": "7", "outcome": "timeout", "since": "2026-01-01T00:00:00+02:00"})
    assert query.limit == 7 and query.outcome == "timeout" and query.since is not None
    for bad in ({"limit": "0"}, {"limit": "101"}, {"cursor": "a b"}, {"extra": "1"}):
        with pytest.raises(ValidationError):
            DeliveryQuery.model_validate(bad)


# ------------------------------------------------------------------------------------------ auth, cursor, masking


def test_bearer_tokens_are_parsed_strictly() -> None:
    key = new_api_key()
    assert key.startswith("hfk_") and bearer_token(f"Bearer {key}") == key and bearer_token(f"bearer  {key} ") == key
    for header in (None, "", key, f"Basic {key}", "Bearer ", "Bearer short", f"Bearer {key}\x00", f"Bearer {key};x"):
        assert bearer_token(header) is None
    assert len(hash_key(key)) == 32 and hash_key(key) != hash_key(new_api_key())


def test_cursor_round_trips_and_rejects_anything_else() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert cursor.decode(cursor.encode(at, "att_01ABC")) == (at, "att_01ABC")
    for bad in ("", "x", "bm90IGpzb24", cursor.encode(at, "a")[:-3], "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwiYSJd"):
        with pytest.raises(ValueError, match="cursor is not one this API returned"):
            cursor.decode(bad)


def test_masked_secrets_keep_only_the_last_four_characters() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAAAAAA="
    assert mask_secret(secret) == "whsec_****AAA="
    assert secret[6:-4] not in mask_secret(secret)


def _row(previous: bytes | None, expires: datetime | None) -> WebhookRow:
    return WebhookRow(
        id="wh_1",
        account_id="acct_a",
        name="CRM",
        url="https://x.example",
        events=["message.read"],
        secret_ciphertext=b"sealed",
        previous_secret_ciphertext=previous,
        previous_secret_expires_at=expires,
        active=True,
        status="healthy",
        status_changed_at=NOW,
        created_at=NOW,
        updated_at=NOW,
    )


def test_the_rotation_overlap_is_shown_only_while_it_lasts() -> None:
    later = NOW + timedelta(hours=1)
    assert webhook_view(_row(b"old", later), "whsec_abcdefgh", NOW).previous_secret_expires_at == later
    assert webhook_view(_row(b"old", later), "whsec_abcdefgh", later).previous_secret_expires_at is None
    assert webhook_view(_row(None, None), "whsec_abcdefgh", NOW).previous_secret_expires_at is None
    assert webhook_view(_row(None, None), "whsec_abcdefgh", NOW).secret == "whsec_****efgh"
    assert webhook_with_secret(_row(None, None), "whsec_abcdefgh", NOW).secret == "whsec_abcdefgh"
    assert "sealed" not in repr(_row(b"old", later))


def test_url_check_treats_non_addresses_as_blocked() -> None:
    assert _blocked("not-an-ip", ()) is True
    assert _blocked("10.0.0.1", ()) is True
    assert _blocked("93.184.215.14", ()) is False


# ------------------------------------------------------------------------------------------ OpenAPI, catalog


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_openapi_document_covers_every_operation_with_its_errors() -> None:
    doc = document(OPERATIONS)
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in _refs(doc))
    for op in OPERATIONS:
        spec = doc["paths"][op.path][op.method.lower()]
        assert spec["operationId"] == op.operation_id
        responses = spec["responses"]
        assert str(op.status) in responses
        if op.public:  # a 401 only from one that checks a credential of its own (a portal link's token)
            assert spec["security"] == [] and ("401" not in responses) == (401 not in op.errors)
        else:
            assert "security" not in spec and "401" in responses and "503" in responses
        if op.request is not None:
            assert {"400", "413", "415", "422"} <= set(responses)
        if op.path_params:
            assert "404" in responses
            assert [p["name"] for p in spec["parameters"] if p["in"] == "path"] == op.path_params
    listing = doc["paths"]["/v1/webhooks/{webhook_id}/deliveries"]["get"]
    query = {p["name"]: p for p in listing["parameters"] if p["in"] == "query"}
    assert set(query) == {"event_type", "outcome", "since", "cursor", "limit"}
    assert all("null" not in json.dumps(p["schema"]) for p in query.values())
    assert doc["security"] == [{"apiKey": []}]
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_the_secret_field_is_documented_as_masked_on_reads_and_full_on_create() -> None:
    doc = document(OPERATIONS)
    created = doc["paths"]["/v1/webhooks"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    shown = doc["paths"]["/v1/webhooks/{webhook_id}"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    schemas = doc["components"]["schemas"]
    full = schemas[created["$ref"].rsplit("/", 1)[1]]["properties"]["secret"]["description"]
    masked = schemas[shown["$ref"].rsplit("/", 1)[1]]["properties"]["secret"]["description"]
    assert "in full" in full and "masked" in masked


def test_every_catalog_sample_is_a_valid_event_and_satisfies_its_published_schema() -> None:
    listing = json.loads(catalog_body())["data"]
    assert [entry["type"] for entry in listing] == [entry.type.value for entry in CATALOG + OPERATIONAL_CATALOG]
    assert {entry["type"] for entry in listing if entry["kind"] == "operational"} == {
        "webhook.failing",
        "webhook.recovered",
        "webhook.disabled",
    }
    assert sum(entry["kind"] == "product" for entry in listing) == 9
    for entry in listing:
        event = Event.model_validate_json(json.dumps(entry["sample"]))
        assert event.type.value == entry["type"]
        jsonschema_rs.Draft202012Validator(entry["json_schema"]).validate(entry["sample"])
    schema = body_schema(EventType.MESSAGE_READ)
    wrong_type = {**sample_event(EventType.MESSAGE_READ).model_dump(mode="json"), "type": "message.sent"}
    with pytest.raises(jsonschema_rs.ValidationError):
        jsonschema_rs.Draft202012Validator(schema).validate(wrong_type)


# ------------------------------------------------------------------------------------------ CLI output


def test_cli_tables_align_columns() -> None:
    assert table(["id", "name"], [("wh_1", "CRM Sync"), ("wh_22", None)]) == "ID     NAME\nwh_1   CRM Sync\nwh_22"


def test_cli_takes_json_after_the_action() -> None:
    opts = build_parser().parse_args(["logs", "wh_X", "--limit", "5", "--json"])
    assert opts.json is True and opts.limit == "5" and opts.action == "logs" and opts.id == "wh_X"
    assert build_parser().parse_args(["list"]).json is False
    assert build_parser().parse_args(["create", "--name", "a", "--url", "b", "--events", "x, y,"]).events == ["x", "y"]


def test_public_keys_only_and_the_previous_one_only_while_its_overlap_lasts() -> None:
    later = NOW + timedelta(hours=1)
    current, previous = new_signing_key(), new_signing_key()
    row = replace(_row(None, None), previous_signing_key_ciphertext=b"old", previous_signing_key_expires_at=later)
    during = webhook_view(row, "whsec_abcdefgh", NOW, keys=(current, previous))
    assert during.asymmetric_signing is True and during.public_key == public_key(current)
    assert during.previous_public_key == public_key(previous) and during.previous_public_key_expires_at == later
    after = webhook_view(row, "whsec_abcdefgh", later, keys=(current, previous))
    assert after.public_key == public_key(current) and after.previous_public_key is None
    assert after.previous_public_key_expires_at is None
    off = webhook_with_secret(_row(None, None), "whsec_abcdefgh", NOW)
    assert off.asymmetric_signing is False and off.public_key is None
    shown = during.model_dump_json()
    assert current not in shown and previous not in shown and current[5:] not in shown
