"""Reading delay-topic messages: a DeliveryTask to time, or the reason it is not one.

The scheduler only needs `due_at`, but it validates the whole task: a message that would fail in the
dispatcher is better routed to the invalid topic here, with its reason, than handed back as a delivery.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from schemas.models import DeliveryTask
from schemas.validation import first_error


@dataclass(frozen=True, slots=True)
class Invalid:
    kind: str
    """Low-cardinality metric label: empty, invalid_json, invalid_task."""
    reason: str
    """What is wrong, for the `reason` header: names the field, never echoes the payload."""


def read_task(value: bytes | None) -> DeliveryTask | Invalid:
    if not value:
        return Invalid("empty", "empty message value: expected a DeliveryTask JSON object")
    try:
        return DeliveryTask.model_validate_json(value)
    except ValidationError as exc:
        kind = "invalid_json" if exc.errors()[0]["type"] == "json_invalid" else "invalid_task"
        return Invalid(kind, first_error(exc))
