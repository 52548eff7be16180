"""The committed JSON Schema of `webhooks.events` values is what the Event model validates: publishers in
other languages read the file, so it must change when the model does."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema_rs

from producer.publisher import build_event
from schemas.models import EVENT_SCHEMA_PATH, published_event_schema

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_event_schema_is_current() -> None:
    committed = json.loads((ROOT / EVENT_SCHEMA_PATH).read_text())
    assert committed == published_event_schema(), (
        f"{EVENT_SCHEMA_PATH} is stale: regenerate it with"
        " `python -c 'import json; from schemas.models import published_event_schema as s;"
        f" print(json.dumps(s(), indent=2))' > {EVENT_SCHEMA_PATH}`"
    )


def test_an_event_as_published_is_valid_against_the_committed_schema_and_a_bad_one_is_not() -> None:
    schema = json.loads((ROOT / EVENT_SCHEMA_PATH).read_text())
    event = json.loads(build_event("acct_42", "message.read", {"message_id": "msg_1"}).body())
    validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
    validator.validate(event)
    missing_data = {k: v for k, v in event.items() if k != "data"}
    for bad in ({**event, "extra": 1}, {**event, "id": "42"}, {**event, "created_at": "yesterday"}, missing_data):
        assert not validator.is_valid(bad), bad
