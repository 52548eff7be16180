"""A webhook's health for the detail view: attempts per hour by outcome, response times, success rate and
dead letters over the last 24 hours or 7 days. PostgreSQL keeps the hourly rollup (`webhook_stats_hourly`,
written with the log); this module frames the window, fills the hours without attempts (one bar per hour)
and reads the percentiles off the merged response-time histograms."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from aiohttp import web

from api.auth import account_of
from api.errors import not_found
from api.operation import json_response, path_id, read_query
from api.resources import resources_of
from api.store import StatsRow
from hookfleet.attempt_rows import LATENCY_BOUNDS_MS
from schemas.api import StatsBucket, StatsQuery, StatsSummary, StatsWindow, WebhookStats

HOURS: dict[StatsWindow, int] = {"24h": 24, "7d": 7 * 24}


def window_bounds(window: StatsWindow, now: datetime) -> tuple[datetime, datetime]:
    """[since, until): whole hours, the last one being the current (partial) hour."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour - timedelta(hours=HOURS[window] - 1), now


def percentile(histogram: Sequence[int], q: float) -> int | None:
    """The upper bound of the bucket holding the q-quantile (the last bucket, 10 s and more, reads as its
    lower bound): exact to the bucket, at most ~25% above the true value. None for an empty histogram."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = max(1, -(-int(q * total * 1000) // 1000))  # ceil(q * total) without float noise
    seen = 0
    for i, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return LATENCY_BOUNDS_MS[min(i, len(LATENCY_BOUNDS_MS) - 1)]
    return LATENCY_BOUNDS_MS[-1]


def merged(histograms: Sequence[Sequence[int]]) -> list[int]:
    return [sum(counts) for counts in zip(*histograms, strict=True)] if histograms else []


def build_stats(
    webhook_id: str, window: StatsWindow, since: datetime, until: datetime, rows: list[StatsRow], dead_letters: int
) -> WebhookStats:
    by_hour = {row.hour.astimezone(UTC): row for row in rows}
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
                p50_ms=percentile(row.latency, 0.5) if row else None,
                p95_ms=percentile(row.latency, 0.95) if row else None,
            )
        )
    successes = sum(row.success for row in rows)
    attempts = successes + sum(row.http_error + row.timeout + row.connection_error for row in rows)
    latency = merged([row.latency for row in rows])
    summary = StatsSummary(
        attempts=attempts,
        deliveries=sum(row.first_attempts for row in rows),
        successes=successes,
        failures=attempts - successes,
        success_rate=successes / attempts if attempts else None,
        p50_ms=percentile(latency, 0.5),
        p95_ms=percentile(latency, 0.95),
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
