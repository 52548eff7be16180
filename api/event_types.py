"""`GET /v1/event-types`: the catalog, a complete sample delivery body of each type, and its JSON Schema.

The envelope schema comes from the wire model (`schemas.models.Event`); the `data` schema is derived from
the catalog sample, so the documentation cannot disagree with what the Test action sends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from schemas.api import EventTypeInfo, EventTypeList
from schemas.catalog import CATALOG, OPERATIONAL_CATALOG, EventType, sample_data
from schemas.models import Event

SAMPLE_EVENT_ID = "evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W"
SAMPLE_ACCOUNT_ID = "acct_42"
SAMPLE_CREATED_AT = datetime(2026, 11, 27, 10, 15, 3, tzinfo=UTC)


def schema_of_value(value: Any) -> dict[str, Any]:
    """A JSON Schema that the sample satisfies, with every key of every object required."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array", "items": schema_of_value(value[0])} if value else {"type": "array"}
    if isinstance(value, dict):
        return {
            "type": "object",
            "properties": {key: schema_of_value(item) for key, item in value.items()},
            "required": list(value),
        }
    return {"type": "null"}


def sample_event(event_type: EventType) -> Event:
    return Event(
        id=SAMPLE_EVENT_ID,
        type=event_type,
        created_at=SAMPLE_CREATED_AT,
        account_id=SAMPLE_ACCOUNT_ID,
        data=sample_data(event_type),
    )


def body_schema(event_type: EventType) -> dict[str, Any]:
    envelope = Event.model_json_schema(mode="serialization")
    properties = dict(envelope["properties"])
    properties["type"] = {"const": event_type.value, "type": "string"}
    properties["created_at"] = {"type": "string", "format": "date-time"}
    properties["data"] = schema_of_value(sample_data(event_type))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{event_type.value} delivery body",
        "type": "object",
        "properties": properties,
        "required": list(envelope["required"]),
        "additionalProperties": False,
    }


@cache
def catalog_body() -> bytes:
    listing = EventTypeList(
        data=[
            EventTypeInfo(
                type=entry.type,
                kind=entry.kind,
                fires_when=entry.fires_when,
                sample=sample_event(entry.type).model_dump(mode="json"),
                json_schema=body_schema(entry.type),
            )
            for entry in CATALOG + OPERATIONAL_CATALOG
        ]
    )
    return listing.model_dump_json().encode()
