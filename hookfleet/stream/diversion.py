"""The poison-message rule of every consumer: a message that is not what its topic carries, or whose
handling raises, is moved aside to `webhooks.invalid` with its reason, counted, logged once, and its
partition moves on; it never crashes the role (docs/architecture.md#invalid-messages).

One vocabulary for every role (`Kind`, the metric's `reason` label, with the role in `role`), one reader
(`read_as`: a wire model, or why not), and one shape of the diverted message:

- value: the original bytes, unchanged (empty when the original had no value);
- key: the original key, so the message lands beside its peers;
- headers, all UTF-8 text:
  `reason` (what is wrong, `schemas.validation.first_error`'s line: names the field, never the payload),
  `source_topic`, `source_partition`, `source_offset` (where it was read, to find or replay it),
  `role` (which role moved it: dispatcher, retry-scheduler or recorder).

The original headers are not carried over, so these names always mean exactly this.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError

from hookfleet.kafka import Headers, PartitionKey
from hookfleet.metrics import INVALID_EVENTS
from hookfleet.stream.sender import Outgoing
from schemas.validation import REASON_MAX, first_error

log = logging.getLogger(__name__)

Role = Literal["dispatcher", "retry-scheduler", "recorder"]
Kind = Literal["empty", "invalid_json", "invalid_value", "account_mismatch", "handler_error"]
"""Why a message was diverted: nothing in it, not JSON, not the topic's model, a task whose event belongs to
another account than its webhook, or its handling raised (a bug, or input nobody foresaw)."""

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Invalid:
    kind: Kind
    reason: str
    """What is wrong, for the `reason` header: names the field, never echoes the payload."""


def read_as(model: type[M], value: bytes | None) -> M | Invalid:
    """The message's value as `model`, or why it is not one."""
    if not value:
        return Invalid("empty", f"empty message value: expected a {model.__name__} JSON object")
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        kind: Kind = "invalid_json" if exc.errors()[0]["type"] == "json_invalid" else "invalid_value"
        return Invalid(kind, first_error(exc))


def handler_error(exc: BaseException) -> Invalid:
    """A message whose handling raised: named by the exception's type and where it was raised, never by its
    text (which may quote the payload)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return Invalid("handler_error", f"handling failed: {type(exc).__name__}{where}")


def divert(
    invalid: Invalid,
    value: bytes | None,
    key: bytes | None,
    source: PartitionKey,
    offset: int,
    role: Role,
    invalid_topic: str,
) -> Outgoing:
    """Count and log the message at `offset` of `source` once, and return its `webhooks.invalid` message."""
    INVALID_EVENTS.labels(role, invalid.kind).inc()
    log.warning(
        "event=message_diverted role=%s topic=%s partition=%d offset=%d kind=%s reason=%r",
        role,
        source[0],
        source[1],
        offset,
        invalid.kind,
        invalid.reason,
    )
    body, key, headers = invalid_message(value, key, invalid.reason, source, offset, role)
    return Outgoing(invalid_topic, body, key, headers)


def invalid_message(
    value: bytes | None, key: bytes | None, reason: str, source: PartitionKey, offset: int, role: Role
) -> tuple[bytes, bytes | None, Headers]:
    """The invalid-topic message for the message at `offset` of `source` that could not be used."""
    topic, partition = source
    headers: Headers = [
        ("reason", reason[:REASON_MAX].encode()),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
        ("role", role.encode()),
    ]
    return value or b"", key, headers
