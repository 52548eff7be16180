"""Reading delay-topic messages: a DeliveryTask to time, or the reason it is not one.

The scheduler only needs `due_at`, but it validates the whole task: a message that would fail in the
dispatcher is better routed to the invalid topic here, with its reason, than handed back as a delivery.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from schemas.models import DeliveryTask
from schemas.topics import Topics

STAGES = ("10s", "60s", "5m")
"""Metric label of each delay topic, in schedule order (Topics.retries)."""

_REASON_MAX = 200


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
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        kind = "invalid_json" if first["type"] == "json_invalid" else "invalid_task"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        reason = f"not a valid DeliveryTask: {where}: {first['msg']}{more}"
        return Invalid(kind, reason[:_REASON_MAX])


def stage_of(topics: Topics, topic: str) -> str:
    """`webhooks.retry.60s` -> "60s": the stage label comes from the delay topic the task waited in."""
    try:
        return STAGES[topics.retries.index(topic)]
    except ValueError:
        raise ValueError(f"{topic} is not a delay topic (expected one of {', '.join(topics.retries)})") from None
