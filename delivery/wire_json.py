"""The JSON the delivery path writes, built around the event's bytes instead of re-serialising the event.

Every delivery task and every attempt record carries the whole event (a task to deliver it, a record so a
log row can be redelivered later). Serialising the event model again for each of them was the largest
single cost of a delivery after the HTTP client (bench.hot_path). The event's canonical bytes are made
once, by fan-out, and from then on they are only copied: into each webhook's task, out of a consumed task
(`event_bytes`, which is also the body that is signed and sent), into the attempt record and into the
retry task.

What comes out is exactly what the pydantic models of schemas/models.py read (unit tests check each
builder against its model, field by field); every consumer still validates with those models.
"""

from __future__ import annotations

import json
from datetime import datetime

from schemas.models import AttemptRecord, DeliveryTask, Event, NextStep, Outcome, format_rfc3339

_EVENT_FIELD = b'{"event":'
_WEBHOOK_FIELD = b',"webhook_id":"'
_ERROR_MAX = AttemptRecord.model_fields["error"].metadata[0].max_length
_EXCERPT_MAX = AttemptRecord.model_fields["response_excerpt"].metadata[0].max_length
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def task_json(
    event_body: bytes,
    webhook_id: str,
    attempt: int,
    due_at_ms: int,
    *,
    parked: bool = False,
    last_error: str | None = None,
    replay_id: str | None = None,
) -> bytes:
    """The JSON of `DeliveryTask(event, webhook_id, attempt, due_at, ...)`, the event spliced in as bytes.

    Webhook ids match `wh_[0-9A-Za-z]+` and replay ids `rpl_[0-9A-Za-z]+` (schemas), so they need no JSON
    escaping; the error text is escaped. Fields at their default are left out, as the model reads them.
    """
    parts = [_EVENT_FIELD, event_body, _WEBHOOK_FIELD, webhook_id.encode(), b'","attempt":', str(attempt).encode(),
             b',"due_at":', str(due_at_ms).encode()]  # fmt: skip
    if parked:
        parts.append(b',"parked":true')
    if last_error is not None:
        parts += (b',"last_error":', _dumps(last_error[:_ERROR_MAX]).encode())
    if replay_id is not None:
        parts += (b',"replay_id":"', replay_id.encode(), b'"')
    parts.append(b"}")
    return b"".join(parts)


def event_bytes(raw_task: bytes, task: DeliveryTask) -> bytes:
    """The event's bytes inside a consumed task (validated as `task`): the body to sign and send.

    Every task hookfleet writes starts with the event and has `webhook_id` right after it (`task_json`,
    and the model's own field order). The last `,"webhook_id":"` is the task's own field: a string value
    cannot hold an unescaped quote, and any other field between the event and it would end the slice in
    something other than `}` (only the event is an object). A task laid out any other way, e.g. written
    by hand with spaces, is re-serialised from the model instead.
    """
    if raw_task.startswith(_EVENT_FIELD):
        end = raw_task.rfind(_WEBHOOK_FIELD)
        if end > len(_EVENT_FIELD) and raw_task[end - 1 : end] == b"}":
            return raw_task[len(_EVENT_FIELD) : end]
    return task.event.body()


def attempt_json(
    event_body: bytes,
    event: Event,
    webhook_id: str,
    attempt: int,
    *,
    attempt_id: str,
    outcome: Outcome,
    status_code: int | None,
    error: str | None,
    response_ms: int | None,
    excerpt: str,
    attempted_at: datetime,
    next_step: NextStep,
    test: bool = False,
    replay_id: str | None = None,
) -> bytes:
    """The JSON of one `AttemptRecord`, with `event_body` (the bytes that were sent) as its event.

    Text the receiver or the network chose (error, excerpt) is cut to the model's limits here, so a
    record is never refused downstream for its length.
    """
    head = _dumps(
        {
            "attempt_id": attempt_id,
            "event_id": event.id,
            "event_type": event.type.value,
            "account_id": event.account_id,
            "webhook_id": webhook_id,
            "attempt": attempt,
            "outcome": outcome.value,
            "status_code": status_code,
            "error": None if error is None else error[:_ERROR_MAX],
            "response_ms": response_ms,
            "response_excerpt": excerpt[:_EXCERPT_MAX],
            "attempted_at": format_rfc3339(attempted_at),
            "next_step": next_step,
            "test": test,
            "replay_id": replay_id,
        }
    )
    return b"".join((head[:-1].encode(), b',"event":', event_body, b"}"))
