"""The health stats' pure parts: percentiles read off the response-time histogram, the window's hours, and
the migration's backfill being the very statement the log's writers run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from api.store import StatsRow
from api.webhook_stats import build_stats, percentile, window_bounds
from hookfleet.attempt_rows import LATENCY_BOUNDS_MS, rollup_sql

BUCKETS = len(LATENCY_BOUNDS_MS) + 1


def histogram(*times_ms: int) -> list[int]:
    counts = [0] * BUCKETS
    for ms in times_ms:
        counts[sum(1 for bound in LATENCY_BOUNDS_MS if bound <= ms)] += 1  # what width_bucket computes
    return counts


def test_a_percentile_is_the_upper_bound_of_its_bucket() -> None:
    times = histogram(10, 20, 30, 40, 50)
    assert percentile(times, 0.5) == 40  # 30 is in [30, 40)
    assert percentile(times, 0.95) == 60  # 50 is in [50, 60)
    assert percentile(histogram(0), 0.5) == 1
    assert percentile(histogram(10_000, 60_000), 0.95) == 10_000  # the open last bucket reads as its lower bound
    assert percentile([0] * BUCKETS, 0.5) is None


def test_percentiles_take_the_nearest_rank() -> None:
    times = histogram(*([5] * 95), *([900] * 5))
    assert percentile(times, 0.95) == 6 and percentile(times, 0.96) == 1000


def test_every_hour_of_the_window_is_a_bucket_oldest_first() -> None:
    now = datetime(2026, 11, 30, 10, 25, tzinfo=UTC)
    since, until = window_bounds("24h", now)
    assert since == datetime(2026, 11, 29, 11, tzinfo=UTC) and until == now
    row = StatsRow(datetime(2026, 11, 30, 9, tzinfo=UTC), 3, 1, 0, 2, 5, histogram(10, 10, 10, 100, 200, 5000))
    stats = build_stats("wh_1", "24h", since, until, [row], 1)
    assert len(stats.buckets) == 24 and stats.buckets[0].start == since
    assert stats.buckets[-2].success == 3 and stats.buckets[-2].connection_error == 2
    assert stats.buckets[-1].success == 0 and stats.buckets[-1].p50_ms is None
    assert stats.summary.attempts == 6 and stats.summary.failures == 3 and stats.summary.success_rate == 0.5
    assert stats.summary.deliveries == 5 and stats.summary.dead_letters == 1
    assert len(build_stats("wh_1", "7d", *window_bounds("7d", now), [], 0).buckets) == 168
    assert build_stats("wh_1", "7d", since - timedelta(days=6), until, [], 0).summary.success_rate is None


def test_the_migration_backfilled_with_the_writers_own_statement() -> None:
    migration = Path(__file__).resolve().parents[2] / "hookfleet" / "migrations" / "0008_webhook_health.sql"
    assert rollup_sql("delivery_attempts") in migration.read_text()
