"""The day-partitioned delivery log: migrating an existing database, pruning exactly the expired days, the
recorder writing across days and idempotently, and "past retention" answers instead of errors."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from api.cursor import encode
from delivery.signing import new_secret
from hookfleet import retention
from hookfleet.db import bundled_migrations, migrate
from hookfleet.retention import list_partitions, prune
from hookfleet.secretbox import SecretBox
from recorder.batch import Batch
from recorder.store import RecorderStore
from schemas.catalog import EventType
from schemas.ids import new_attempt_id, new_event_id, new_webhook_id, ulid
from schemas.models import DeliveryTask, Event
from schemas.topics import Topics
from tests.conftest import with_search_path
from tests.integration.recorder_fixtures import an_hour_ago, insert_webhook, make_attempt, make_event, scalar
from tests.support.api_client import SECRET_KEY, RunningApi, api_settings, consume

pytestmark = pytest.mark.integration

TODAY = datetime.now(UTC).date()


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.fixture
def old_layout_url(database_root_url: str) -> Iterator[str]:
    """A private schema migrated only up to the layout before the partitioned log (0007)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_root_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = with_search_path(database_root_url, schema)
    migrate(url, [m for m in bundled_migrations() if m.version < "0007"])
    yield url
    with psycopg.connect(database_root_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _insert_old_rows(url: str, webhook_id: str, account_id: str, days: int, per_day: int) -> dict[str, str]:
    """Rows and payloads as the old (unpartitioned) layout holds them; returns attempt id -> event id."""
    rows: dict[str, str] = {}
    with psycopg.connect(url) as conn:
        for back in range(days):
            for i in range(per_day):
                at = midnight(TODAY - timedelta(days=back)) + timedelta(minutes=7 * i + 1)
                at = min(at, datetime.now(UTC) - timedelta(seconds=1))
                event = Event(
                    id=new_event_id(), type=EventType.MESSAGE_READ, created_at=at, account_id=account_id, data={"i": i}
                )
                attempt_id = "att_" + ulid(int(at.timestamp() * 1000))
                conn.execute(
                    "INSERT INTO delivery_attempts (attempt_id, event_id, event_type, account_id, webhook_id, attempt,"
                    " outcome, status_code, response_ms, attempted_at, next_step)"
                    " VALUES (%s, %s, 'message.read', %s, %s, 1, 'success', 200, 5, %s, 'done')",
                    (attempt_id, event.id, account_id, webhook_id, at),
                )
                conn.execute(
                    "INSERT INTO event_payloads (event_id, account_id, event) VALUES (%s, %s, %s::jsonb)",
                    (event.id, account_id, event.model_dump_json()),
                )
                rows[attempt_id] = event.id
    return rows


# ------------------------------------------------------------------------------------------ migration


async def test_old_layout_migrates_with_every_row_kept_and_readable_through_the_api(
    old_layout_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics
) -> None:
    # Given a database in the old layout: an account and a webhook as that layout holds them (written with SQL:
    # today's API writes columns added since), rows over five days (and payloads)
    settings = api_settings(old_layout_url, kafka_bootstrap, ca_bundle, topics)
    async with RunningApi(settings) as api:
        account, key = api.account("Migrated")
    webhook_id = new_webhook_id()
    sealed = SecretBox.from_b64(SECRET_KEY).seal(new_secret(), webhook_id)
    with psycopg.connect(old_layout_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO webhooks (id, account_id, name, url, events, secret_ciphertext)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (webhook_id, account, "Old", "https://localhost:9/old", ["message.read"], sealed),
        )
    rows = _insert_old_rows(old_layout_url, webhook_id, account, days=5, per_day=30)

    # When it is migrated (twice: the migration is idempotent, even when run again by hand)
    assert "0007_partitioned_log" in migrate(old_layout_url)
    assert migrate(old_layout_url) == []
    [again] = [m for m in bundled_migrations() if m.version == "0007_partitioned_log"]
    with psycopg.connect(old_layout_url) as conn:
        conn.execute(again.sql.encode())

    # Then both tables are partitioned by day and hold every row exactly once
    for table in ("delivery_attempts", "event_payloads"):
        assert scalar(old_layout_url, "SELECT relkind::text FROM pg_class WHERE oid = %s::regclass", (table,)) == "p"
    assert scalar(old_layout_url, "SELECT count(*) FROM delivery_attempts") == len(rows)
    assert scalar(old_layout_url, "SELECT count(DISTINCT event_id) FROM event_payloads") == len(rows)
    with psycopg.connect(old_layout_url) as conn:
        days = {p.day for p in list_partitions(conn) if p.table == "delivery_attempts"}
    assert {TODAY - timedelta(days=back) for back in range(5)} <= days

    # And the API pages through all of them across the day boundaries, and redelivers the oldest
    async with RunningApi(settings) as api:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "40", **({"cursor": cursor} if cursor else {})}
            page = await api.call("GET", f"/v1/webhooks/{webhook_id}/deliveries", key, params=params)
            assert page.status == 200, page.body
            seen += [row["attempt_id"] for row in page.body["data"]]
            cursor = page.body["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(rows) and len(seen) == len(set(seen))
        oldest = min(rows)
        redelivered = await api.call("POST", f"/v1/deliveries/{oldest}/redeliver", key)
        assert redelivered.status == 202, redelivered.body
        [(_, value)] = consume(kafka_bootstrap, topics.deliveries, 1)
        assert DeliveryTask.model_validate_json(value).event.id == rows[oldest]


# ------------------------------------------------------------------------------------------ prune


def _fill_days(url: str, days: int, per_day: int) -> None:
    """`per_day` attempt rows and payloads on each of the last `days` days, made with SQL."""
    with psycopg.connect(url) as conn:
        for back in range(days):
            conn.execute("SELECT hookfleet_create_log_day(%s)", (TODAY - timedelta(days=back),))
        conn.execute(
            "INSERT INTO delivery_attempts (attempt_id, event_id, event_type, account_id, webhook_id, attempt,"
            " outcome, attempted_at, next_step)"
            " SELECT 'att_' || d || '_' || i, 'evt_' || d || 'x' || i, 'message.read', 'acct_1', 'wh_1', 1, 'success',"
            "  %(midnight)s - make_interval(days => d) + make_interval(mins => i), 'done'"
            " FROM generate_series(0, %(days)s - 1) d, generate_series(0, %(per_day)s - 1) i",
            {"midnight": midnight(TODAY), "days": days, "per_day": per_day},
        )
        conn.execute(
            "INSERT INTO event_payloads (event_id, account_id, event, logged_on)"
            " SELECT event_id, account_id, '{}'::jsonb, (attempted_at AT TIME ZONE 'UTC')::date FROM delivery_attempts"
        )


def _dead_letter(url: str, webhook_id: str, dead_at: datetime) -> None:
    event = make_event()
    task = DeliveryTask(event=event, webhook_id=webhook_id, attempt=4, due_at=int(dead_at.timestamp() * 1000))
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO dead_letters (event_id, webhook_id, account_id, event_type, task, last_error, dead_at)"
            " VALUES (%s, %s, %s, %s, %s::jsonb, 'http 500', %s)",
            (event.id, webhook_id, event.account_id, event.type.value, task.model_dump_json(), dead_at),
        )


def test_prune_drops_exactly_the_expired_days_and_dry_run_lists_them(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given rows on each of the last 40 days, and a retention of 30 days
    _fill_days(database_url, days=40, per_day=5)
    # and dead letters (each holding its whole event) on both sides of the horizon
    horizon_at = midnight(TODAY - timedelta(days=30))
    for dead_at in (horizon_at - timedelta(days=5), horizon_at - timedelta(seconds=1)):
        _dead_letter(database_url, "wh_old", dead_at)
    for dead_at in (horizon_at, horizon_at + timedelta(days=20)):
        _dead_letter(database_url, "wh_kept", dead_at)
    expired_days = [TODAY - timedelta(days=back) for back in range(31, 40)]
    expected = sorted(
        f"{table}_p{day:%Y%m%d}" for table in ("delivery_attempts", "event_payloads") for day in expired_days
    )

    # When the CLI's dry run runs, it lists exactly those partitions and drops nothing
    env = {**os.environ, "DATABASE_URL": database_url, "HOOKFLEET_RETENTION_DAYS": "30"}
    listed = subprocess.run(
        [str(Path(sys.executable).with_name("hookfleet")), "db", "prune", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    named = sorted(
        line.split()[2] for line in listed.stdout.splitlines() if line.startswith("would drop ") and "(day " in line
    )
    assert named == expected
    assert f"would drop {len(expected)} partition(s)" in listed.stdout
    assert "would delete 2 dead letter(s)" in listed.stdout
    assert scalar(database_url, "SELECT count(*) FROM delivery_attempts") == 40 * 5
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 4

    # And the real prune drops those and nothing else: the day at the horizon and every newer one stay
    monkeypatch.setattr(retention, "DEAD_LETTER_BATCH", 1)  # the dead letters in more than one delete
    result = prune(database_url, 30)
    assert sorted(p.name for p in result.dropped) == expected
    with psycopg.connect(database_url) as conn:
        left = list_partitions(conn)
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    assert not set(expected) & tables, "a dropped partition was left behind as a detached table"
    assert min(p.day for p in left) == TODAY - timedelta(days=30)
    assert scalar(database_url, "SELECT count(*) FROM delivery_attempts") == 31 * 5
    assert scalar(database_url, "SELECT count(*) FROM event_payloads") == 31 * 5
    assert result.dead_letters == 2
    assert scalar(database_url, "SELECT string_agg(DISTINCT webhook_id, ',') FROM dead_letters") == "wh_kept"
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 2
    again = prune(database_url, 30)
    assert (again.dropped, again.dead_letters) == ([], 0)


def test_prune_deletes_outbox_rows_given_up_before_the_horizon_and_keeps_every_one_still_to_send(
    database_url: str,
) -> None:
    # Given operational events in the outbox: given up on (every try failed) before and after the horizon,
    # and an old one still waiting for its next try, and an old one never tried
    horizon_at = midnight(TODAY - timedelta(days=30))
    rows = {
        "evt_given_up_old": (horizon_at - timedelta(days=1), "failed", None),
        "evt_given_up_new": (horizon_at + timedelta(days=1), "failed", None),
        "evt_waiting_old": (horizon_at - timedelta(days=1), "failed", horizon_at),
        "evt_pending_old": (horizon_at - timedelta(days=1), "pending", horizon_at),
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        for event_id, (created_at, state, next_at) in rows.items():
            conn.execute(
                "INSERT INTO operational_outbox (event_id, account_id, event, created_at, state, failures,"
                " next_attempt_at) VALUES (%s, 'acct_1', '{}', %s, %s, 4, %s)",
                (event_id, created_at, state, next_at),
            )
    # When the log is pruned at 30 days
    prune(database_url, 30)
    # Then only the row given up on before the horizon is gone
    with psycopg.connect(database_url) as conn:
        left = {row[0] for row in conn.execute("SELECT event_id FROM operational_outbox")}
    assert left == {"evt_given_up_new", "evt_waiting_old", "evt_pending_old"}


# ------------------------------------------------------------------------------------------ recorder


def test_recorder_creates_missing_days_stays_idempotent_and_skips_rows_past_retention(database_url: str) -> None:
    webhook_id = insert_webhook(database_url, changed_at=an_hour_ago())
    store = RecorderStore(database_url, retention_days=30)
    event = make_event()
    in_ten_days = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    late = make_attempt(webhook_id, attempted_at=in_ten_days, event=event)
    today = make_attempt(webhook_id, event=event)
    too_old = make_attempt(webhook_id, attempted_at=datetime.now(UTC).replace(microsecond=0) - timedelta(days=45))
    batch = Batch()
    for offset, record in enumerate([late, today, too_old]):
        batch.add("attempts", 0, offset, record)

    assert store.write(batch).attempts_inserted == 2
    assert store.write(batch).attempts_inserted == 0  # a replayed batch adds nothing
    store.close()
    assert scalar(database_url, "SELECT count(*) FROM delivery_attempts") == 2
    # one payload per event and log day: the event's two attempts are on two days
    assert scalar(database_url, "SELECT count(*) FROM event_payloads WHERE event_id = %s", (event.id,)) == 2
    day = in_ten_days.date()
    assert scalar(database_url, f"SELECT count(*) FROM delivery_attempts_p{day:%Y%m%d}") == 1  # noqa: S608


# ------------------------------------------------------------------------------------------ API answers


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics) -> AsyncIterator[RunningApi]:
    async with RunningApi(api_settings(database_url, kafka_bootstrap, ca_bundle, topics, retention_days=30)) as running:
        yield running


async def test_reads_past_retention_are_410_with_a_readable_message(api: RunningApi, database_url: str) -> None:
    account, key = api.account("Acme")
    webhook_id = insert_webhook(database_url, account_id=account, changed_at=an_hour_ago())

    old_cursor = encode(datetime.now(UTC) - timedelta(days=40), new_attempt_id())
    page = await api.call("GET", f"/v1/webhooks/{webhook_id}/deliveries", key, params={"cursor": old_cursor})
    assert page.status == 410 and page.error["code"] == "past_retention"
    assert "retention of 30 days" in page.error["message"]

    forty_days_ago = int((datetime.now(UTC) - timedelta(days=40)).timestamp() * 1000)
    gone = await api.call("POST", f"/v1/deliveries/att_{ulid(forty_days_ago)}/redeliver", key)
    assert gone.status == 410 and gone.error["code"] == "past_retention", gone.body
    unknown = await api.call("POST", f"/v1/deliveries/{new_attempt_id()}/redeliver", key)
    assert unknown.status == 404 and unknown.error["code"] == "not_found"


def test_recorder_maintenance_creates_days_ahead_prunes_and_publishes_sizes(database_url: str) -> None:
    from hookfleet import metrics
    from hookfleet.retention import DAYS_AHEAD, LogMaintenance

    _fill_days(database_url, days=35, per_day=3)
    LogMaintenance(database_url, retention_days=30, interval_s=3600).run_once()
    with psycopg.connect(database_url) as conn:
        days = sorted({p.day for p in list_partitions(conn)})
    assert days[0] == TODAY - timedelta(days=30)
    assert days[-1] == TODAY + timedelta(days=DAYS_AHEAD)
    assert len(days) == 31 + DAYS_AHEAD
    sample = metrics.LOG_PARTITION_BYTES.labels("delivery_attempts", TODAY.isoformat())._value.get()
    assert sample > 0
    newest = metrics.LOG_PARTITION_NEWEST_DAY.labels("delivery_attempts")._value.get()
    ahead = TODAY + timedelta(days=DAYS_AHEAD)
    assert newest == datetime(ahead.year, ahead.month, ahead.day, tzinfo=UTC).timestamp()
