"""A webhook's health beyond healthy/failing: when it is switched off, and what its account is told. Pure.

- `410 Gone` (an attempt record with next step "disabled"): switched off with reason "gone", unless the
  webhook was switched on again after that attempt.
- Auto-disable: a webhook failing (no success since its first dead letter) for `disable_after` while
  deliveries keep failing is switched off with reason "failing". Time is the records' own time (when the
  attempt was made), never the recorder's clock, so replays decide the same and tests control the clock
  through the records they publish. Switching a webhook on again restarts the period.
- Each state change (healthy -> failing, failing -> healthy, on -> off) becomes one operational event
  (schemas/catalog.py) for the webhook's account, written in the transaction that makes the change.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from schemas.catalog import EventType
from schemas.free_text import one_line
from schemas.models import AttemptRecord, Outcome

DisabledReason = Literal["gone", "failing", "manual"]

NOT_A_FAILURE = frozenset({Outcome.SUCCESS, Outcome.DROPPED})


def gone_at(attempts: list[AttemptRecord]) -> dict[str, datetime]:
    """Per webhook, the earliest real (non-test) attempt answered 410 Gone in the batch."""
    gone: dict[str, datetime] = {}
    for record in attempts:
        if record.next_step == "disabled" and not record.test:
            at = gone.get(record.webhook_id)
            gone[record.webhook_id] = record.attempted_at if at is None else min(at, record.attempted_at)
    return gone


def latest_failure(attempts: list[AttemptRecord]) -> dict[str, tuple[datetime, str | None]]:
    """Per webhook, the latest real failed attempt of the batch and its error: "deliveries kept failing"."""
    latest: dict[str, tuple[datetime, str | None]] = {}
    for record in attempts:
        if record.outcome in NOT_A_FAILURE or record.test:
            continue
        seen = latest.get(record.webhook_id)
        if seen is None or record.attempted_at > seen[0]:
            latest[record.webhook_id] = (record.attempted_at, record.error)
    return latest


def should_auto_disable(
    failing_since: datetime | None, enabled_at: datetime | None, failed_at: datetime, disable_after: timedelta
) -> bool:
    """True when a failure at `failed_at` comes `disable_after` or more after the webhook became failing
    (or was last switched on, if later)."""
    if failing_since is None:
        return False
    start = max(failing_since, enabled_at) if enabled_at is not None else failing_since
    return failed_at - start >= disable_after


SUBJECTS: dict[EventType, str] = {
    EventType.WEBHOOK_FAILING: "Webhook failing: {name}",
    EventType.WEBHOOK_RECOVERED: "Webhook recovered: {name}",
    EventType.WEBHOOK_DISABLED: "Webhook disabled: {name}",
}


def mail_text(event_type: EventType, data: dict[str, Any]) -> tuple[str, str]:
    """(subject, plain-text body) of the notification mail for one state change."""
    subject = SUBJECTS[event_type].format(name=one_line(data["name"]))  # a header: one line, whatever is stored
    lines = [
        f'{event_type.value}: your webhook "{data["name"]}" ({data["webhook_id"]})',
        f"URL: {data['url']}",
        f"Status: {data['status']}, {'active' if data['active'] else 'switched off'} (reason: {data['reason']})",
        f"Since: {data['since']}",
    ]
    if data.get("last_error"):
        lines.append(f"Last error: {data['last_error']}")
    lines.append(f"Dead-lettered deliveries waiting: {data['dead_letters']}")
    if data.get("redriven"):
        lines.append(f"Dead-lettered deliveries sent again now that it is healthy: {data['redriven']}")
    if not data["active"]:
        lines.append("Fix the receiver, then switch the webhook on again; dead letters can be redelivered.")
    return subject, "\n".join(lines) + "\n"
