"""Replay by time range (POST .../replay) and its progress (GET .../replays/{id}); the work is in
api/replay.py, which runs on threads because it shares the redrive's acknowledged producer path."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web

from api import replay
from api.auth import account_of
from api.errors import ApiError, not_found, past_retention
from api.operation import json_response, path_id, read_body
from api.quotas import too_many
from api.resources import resources_of
from hookfleet.retention import horizon
from schemas.api import ReplayEventRef, ReplayPreview, ReplayRequest, ReplayView
from schemas.catalog import EventType
from schemas.ids import new_replay_id
from schemas.models import format_rfc3339

log = logging.getLogger(__name__)


def _ref(ref: replay.EventRef | None) -> ReplayEventRef | None:
    if ref is None:
        return None
    return ReplayEventRef(
        event_id=ref.event_id, event_type=EventType(ref.event_type), first_attempted_at=ref.first_attempted_at
    )


async def start_replay(request: web.Request) -> web.StreamResponse:
    resources = resources_of(request)
    account = account_of(request)
    webhook_id = path_id(request, "webhook_id", "webhook")
    body = await read_body(request, ReplayRequest)
    row = await resources.store.get_webhook(account, webhook_id)
    if row is None:
        raise not_found("webhook", webhook_id)
    if not row.active:
        raise ApiError(
            409,
            "webhook_disabled",
            f"webhook {row.id} is disabled, so its deliveries would be dropped; enable it, then replay",
        )
    until = body.until or datetime.now(UTC)
    if until <= body.since:
        raise ApiError(422, "invalid_field", "until must be after since", "until")
    oldest = horizon(resources.settings.retention_days)
    if until <= oldest:
        raise past_retention(f"the range before {format_rfc3339(oldest)}", resources.settings.retention_days)
    selection = replay.Selection(
        account_id=account,
        webhook_id=row.id,
        since=max(body.since, oldest),
        until=until,
        event_types=[t.value for t in body.event_types] if body.event_types else None,
        only_failed=body.only_failed,
    )
    if body.dry_run:
        found = await asyncio.to_thread(replay.preview, resources.replays.pool, selection)
        return json_response(
            ReplayPreview(
                webhook_id=row.id,
                count=found.count,
                since=selection.since,
                until=until,
                first=_ref(found.first),
                last=_ref(found.last),
            )
        )
    replay_id = new_replay_id()
    runner = resources.replays
    try:
        runner.admit(replay_id, account)
        try:
            events_per_day = resources.settings.replay_events_per_day
            await asyncio.to_thread(replay.create, runner.pool, replay_id, selection, events_per_day)
        except BaseException:
            runner.withdraw(replay_id)
            raise
    except replay.ReplayLimit as exc:
        log.info("event=replay_refused account_id=%s webhook_id=%s limit=%s", account, row.id, exc.limit)
        raise too_many(exc.message, exc.retry_after_s, exc.limit) from None
    runner.start(replay_id, account, row.id)
    view = await _view(request, account, row.id, replay_id)
    response = json_response(view, 202)
    response.headers["Location"] = f"/v1/webhooks/{row.id}/replays/{replay_id}"
    return response


async def get_replay(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    webhook_id = path_id(request, "webhook_id", "webhook")
    replay_id = path_id(request, "replay_id", "replay")
    return json_response(await _view(request, account, webhook_id, replay_id))


async def _view(request: web.Request, account: str, webhook_id: str, replay_id: str) -> ReplayView:
    resources = resources_of(request)
    found = await asyncio.to_thread(replay.progress, resources.replays.pool, account, webhook_id, replay_id)
    if found is None:
        raise not_found("replay", replay_id)
    return ReplayView.model_validate(found)
