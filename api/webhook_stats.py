"""A webhook's health for the detail view: attempts per hour by outcome, response times, success rate and
dead letters over the last 24 hours or 7 days. PostgreSQL aggregates; this module only frames the window and
fills the hours without attempts, so the chart always has one bar per hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from api.auth import account_of
from api.errors import not_found
from api.operation import json_response, path_id, read_query
from api.resources import resources_of
from api.store import StatsRow
from schemas.api import StatsBucket, StatsQuery, StatsSummary, StatsWindow, WebhookStats

HOURS: dict[StatsWindow, int] = {"24h": 24, "7d": 7 * 24}


def window_bounds(window: StatsWindow, now: datetime) -> tuple[datetime, datetime]:
    """[since, until): whole hours, the last one being the current (partial) hour."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour - timedelta(hours=HOURS[window] - 1), now


def build_stats(
    webhook_id: str, window: StatsWindow, since: datetime, until: datetime, rows: list[StatsRow], dead_letters: int
) -> WebhookStats:
    by_hour = {row.hour.astimezone(UTC): row for row in rows if row.hour is not None}
    total = next((row for row in rows if row.hour is None), None)
    buckets = []
    for i in range(HOURS[window]):
        start = since + timedelta(hours=i)
        row = by_hour.get(start)
        buckets.append(
            StatsBucket(
                start=start,
                success=row.success if row else 0,
                http_error=row.http_error if row else 0,
                timeout=row.timeout if row else 0,
                connection_error=row.connection_error if row else 0,
                p50_ms=row.p50_ms if row else None,
                p95_ms=row.p95_ms if row else None,
            )
        )
    attempts = (total.success + total.http_error + total.timeout + total.connection_error) if total else 0
    successes = total.success if total else 0
    summary = StatsSummary(
        attempts=attempts,
        deliveries=total.first_attempts if total else 0,
        successes=successes,
        failures=attempts - successes,
        success_rate=successes / attempts if attempts else None,
        p50_ms=total.p50_ms if total else None,
        p95_ms=total.p95_ms if total else None,
        dead_letters=dead_letters,
    )
    return WebhookStats(
        webhook_id=webhook_id, window=window, since=since, until=until, summary=summary, buckets=buckets
    )


async def webhook_stats(request: web.Request) -> web.StreamResponse:
    resources = resources_of(request)
    account = account_of(request)
    webhook_id = path_id(request, "webhook_id", "webhook")
    query = read_query(request, StatsQuery)
    if await resources.store.get_webhook(account, webhook_id) is None:
        raise not_found("webhook", webhook_id)
    since, until = window_bounds(query.window, datetime.now(UTC))
    rows, dead = await resources.store.webhook_stats(account, webhook_id, since, until)
    return json_response(build_stats(webhook_id, query.window, since, until, rows, dead))
