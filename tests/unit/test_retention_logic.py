"""Pure rules of retention and replay: the horizon, which days are expired, the replay's chunk per rate,
the time inside an id."""

from __future__ import annotations

from datetime import UTC, date, datetime

from api.replay import chunk_size
from hookfleet.retention import Partition, expired_partitions, horizon, is_expired
from schemas.ids import ulid, ulid_time_ms

NOW = datetime(2026, 11, 29, 21, 30, tzinfo=UTC)


def test_horizon_is_midnight_utc_retention_days_before_today() -> None:
    assert horizon(30, NOW) == datetime(2026, 10, 30, tzinfo=UTC)
    assert horizon(1, datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC)) == datetime(2026, 2, 28, tzinfo=UTC)


def test_a_day_expires_only_when_all_its_rows_are_past_the_horizon() -> None:
    assert is_expired(date(2026, 10, 29), 30, NOW)
    assert not is_expired(date(2026, 10, 30), 30, NOW)  # the horizon's own day is kept
    days = [date(2026, 10, d) for d in (28, 29, 30, 31)]
    partitions = [Partition(f"delivery_attempts_p{d:%Y%m%d}", "delivery_attempts", d, 10, 8192) for d in days]
    assert [p.day for p in expired_partitions(partitions, 30, NOW)] == days[:2]


def test_replay_chunk_is_at_most_a_tenth_of_a_second_of_the_rate() -> None:
    assert chunk_size(0.5) == 1
    assert chunk_size(10) == 1
    assert chunk_size(50) == 5
    assert chunk_size(100_000) == 200


def test_ulid_time_is_read_back_from_a_prefixed_id() -> None:
    ms = int(NOW.timestamp() * 1000)
    assert ulid_time_ms("att_" + ulid(ms, 12345)) == ms
    assert ulid_time_ms("att_short") is None
    assert ulid_time_ms("att_" + "!" * 26) is None
