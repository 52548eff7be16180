"""Replay by time range end to end: the API selects from the day-partitioned log, re-enqueues through the
acknowledged producer path at a bounded rate, a real dispatcher delivers to a real HTTPS receiver, the
recorder logs it, and the progress reads it back. The log's history is written as the recorder writes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from api.replay import chunk_size
from recorder.batch import Batch
from recorder.store import RecorderStore
from schemas.catalog import EventType, sample_data
from schemas.ids import new_attempt_id, new_event_id
from schemas.models import AttemptRecord, Event, Outcome
from schemas.topics import Topics
from tests.support.api_client import RunningApi, api_settings
from tests.support.fleet import TEST_SECRET_KEY, Fleet, seed_webhook
from tests.support.group_offsets import fleet_idle
from tests.support.lateness import EARLY_SLACK_S, RETRY_LATE_S
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

RATE_PER_S = 10.0
NOW = datetime.now(UTC).replace(microsecond=0)
SINCE = NOW - timedelta(hours=3)
UNTIL = NOW - timedelta(hours=1)


def record(
    webhook_id: str, account_id: str, at: datetime, event_type: EventType, outcome: Outcome, event: Event | None = None
) -> AttemptRecord:
    event = event or Event(
        id=new_event_id(), type=event_type, created_at=at, account_id=account_id, data=sample_data(event_type)
    )
    ok = outcome is Outcome.SUCCESS
    return AttemptRecord(
        attempt_id=new_attempt_id(),
        event_id=event.id,
        event_type=event.type,
        account_id=account_id,
        webhook_id=webhook_id,
        attempt=1,
        outcome=outcome,
        status_code=200 if ok else 500,
        response_ms=9,
        attempted_at=at,
        next_step="done" if ok else "retry",
        event=event,
    )


def write_log(database_url: str, records: list[AttemptRecord]) -> None:
    batch = Batch()
    for offset, item in enumerate(records):
        batch.add("attempts", 0, offset, item)
    store = RecorderStore(database_url)
    store.write(batch)
    store.close()


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics) -> AsyncIterator[RunningApi]:
    settings = api_settings(
        database_url, kafka_bootstrap, ca_bundle, topics, secret_key=TEST_SECRET_KEY, replay_rate_per_s=RATE_PER_S
    )
    async with RunningApi(settings) as running:
        yield running


def start_fleet(fleet: Fleet, delays: tuple[float, float, float] = (1.0, 2.0, 3.0)) -> None:
    extra = {"HOOKFLEET_RETRY_DELAYS_S": f"[{delays[0]}, {delays[1]}, {delays[2]}]"}
    fleet.start_dispatcher(**extra)
    fleet.start("retry-scheduler", **extra)
    fleet.start("recorder", **extra)


async def replay(api: RunningApi, key: str, webhook_id: str, **fields: Any) -> Any:
    body = {"since": SINCE.isoformat(), "until": UNTIL.isoformat(), **fields}
    return await api.call("POST", f"/v1/webhooks/{webhook_id}/replay", key, body)


async def progress_until(
    api: RunningApi, key: str, webhook_id: str, replay_id: str, done: Any, timeout_s: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        reply = await api.call("GET", f"/v1/webhooks/{webhook_id}/replays/{replay_id}", key)
        assert reply.status == 200, reply.body
        if done(reply.body) or time.monotonic() > deadline:
            return dict(reply.body)
        await asyncio.sleep(0.5)


def history(database_url: str, account: str, webhook_id: str, other_webhook: str) -> dict[str, list[str]]:
    """The log of the last hours: per kind, the event ids it holds for `webhook_id` in [SINCE, UNTIL)."""
    kinds: dict[str, list[str]] = {"ok": [], "failed": [], "contact": [], "outside": []}
    records = []
    for i in range(24):
        at = SINCE + timedelta(minutes=5 * i + 1)
        failed = i % 3 == 0
        event_type = EventType.CONTACT_CREATED if i % 4 == 1 else EventType.MESSAGE_READ
        first = record(webhook_id, account, at, event_type, Outcome.HTTP_ERROR if failed else Outcome.SUCCESS)
        records.append(first)
        kinds["failed" if failed else "ok"].append(first.event_id)
        if event_type is EventType.CONTACT_CREATED:
            kinds["contact"].append(first.event_id)
        if failed and i % 2 == 0:  # some failures were retried into a success later: not "failed" any more
            assert first.event is not None
            records.append(
                record(webhook_id, account, at + timedelta(seconds=70), event_type, Outcome.SUCCESS, first.event)
            )
            kinds["failed"].remove(first.event_id)
            kinds["ok"].append(first.event_id)
    for at in (SINCE - timedelta(minutes=1), UNTIL + timedelta(minutes=1)):
        outside = record(webhook_id, account, at, EventType.MESSAGE_READ, Outcome.HTTP_ERROR)
        records.append(outside)
        kinds["outside"].append(outside.event_id)
    records.append(
        record(other_webhook, account, SINCE + timedelta(minutes=3), EventType.MESSAGE_READ, Outcome.SUCCESS)
    )
    write_log(database_url, records)
    return kinds


async def test_replay_sends_what_the_dry_run_counted_at_the_bounded_rate_to_that_webhook_only(
    api: RunningApi, fleet: Fleet, receiver: HttpsReceiver, database_url: str
) -> None:
    # Given a webhook whose log holds 24 events in the range (and some outside it), and a bystander webhook
    account, key = api.account("Acme")
    events = [t.value for t in EventType]
    webhook_id, secret = seed_webhook(database_url, account, receiver.url("/replayed"), events)
    other_id, other_secret = seed_webhook(database_url, account, receiver.url("/other"), events)
    receiver.expect("/replayed", secret=secret)
    receiver.expect("/other", secret=other_secret)
    kinds = history(database_url, account, webhook_id, other_id)
    start_fleet(fleet)

    # When the dry run counts, then the replay runs
    dry = await replay(api, key, webhook_id, dry_run=True)
    assert dry.status == 200, dry.body
    assert dry.body["count"] == 24
    assert dry.body["first"]["first_attempted_at"] == (SINCE + timedelta(minutes=1)).isoformat().replace(
        "+00:00", ".000Z"
    )
    assert dry.body["last"]["first_attempted_at"] == (SINCE + timedelta(minutes=116)).isoformat().replace(
        "+00:00", ".000Z"
    )
    assert receiver.count() == 0, "a dry run sent something"
    asked_at = time.time()
    started = await replay(api, key, webhook_id)
    assert started.status == 202, started.body
    replay_id = started.body["id"]
    assert started.headers["Location"] == f"/v1/webhooks/{webhook_id}/replays/{replay_id}"
    assert started.body["total"] == dry.body["count"]

    # Then exactly those events arrive, once each, as attempt 1, and only at that webhook
    expected = set(kinds["ok"]) | set(kinds["failed"])
    assert receiver.wait_for(lambda: len(receiver.at("/replayed")) >= len(expected), timeout_s=60)
    got = receiver.at("/replayed")
    assert {r.event_id for r in got} == expected and len(got) == len(expected)
    assert {r.attempt for r in got} == {1} and all(r.signature_ok for r in got)
    assert receiver.at("/other") == []

    # And the rate bound held: when each event was queued (one chunk = a tenth of a second's worth at most),
    # and at the receiver, which cannot have had them sooner than the rate allows
    chunk = chunk_size(RATE_PER_S)

    def queued_times() -> list[float | None]:  # a chunk is marked queued just after the broker acknowledges it
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT queued_at FROM replay_events WHERE replay_id = %s ORDER BY seq", (replay_id,)
            ).fetchall()
        return [None if row[0] is None else row[0].timestamp() for row in rows]

    assert receiver.wait_for(lambda: None not in queued_times(), timeout_s=10), queued_times()
    queued = [t for t in queued_times() if t is not None]
    worst_second = max(sum(1 for t in queued if start <= t < start + 1.0) for start in queued)
    assert worst_second <= RATE_PER_S + chunk, worst_second
    assert queued[-1] - queued[0] >= (len(queued) - chunk) / RATE_PER_S - 0.05
    arrivals = sorted(r.at for r in got)
    overall = len(arrivals) / (arrivals[-1] - asked_at)
    print(f"replay of {len(arrivals)} events at {RATE_PER_S:g}/s: worst second queued {worst_second}, {overall:.2f}/s")
    assert arrivals[-1] - asked_at >= (len(arrivals) - chunk) / RATE_PER_S - 0.05

    # And the progress shows every event queued and delivered (read from the log the recorder wrote)
    final = await progress_until(
        api, key, webhook_id, replay_id, lambda p: p["delivered"] == len(expected) and p["state"] == "done"
    )
    assert final["state"] == "done" and final["queued"] == final["total"] == final["delivered"] == 24
    assert final["failed"] == 0


async def test_only_failed_and_event_type_filter_select_exactly_those_events(
    api: RunningApi, fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    account, key = api.account("Acme")
    events = [t.value for t in EventType]
    webhook_id, secret = seed_webhook(database_url, account, receiver.url("/failed-only"), events)
    other_id, _ = seed_webhook(database_url, account, receiver.url("/other"), events)
    receiver.expect("/failed-only", secret=secret)
    kinds = history(database_url, account, webhook_id, other_id)

    only_failed = await replay(api, key, webhook_id, dry_run=True, only_failed=True)
    assert only_failed.body["count"] == len(kinds["failed"]) == 4
    contacts = await replay(api, key, webhook_id, dry_run=True, event_types=["contact.created"])
    assert contacts.body["count"] == len(kinds["contact"]) == 6
    both = set(kinds["failed"]) & set(kinds["contact"])
    narrowed = await replay(api, key, webhook_id, dry_run=True, event_types=["contact.created"], only_failed=True)
    assert narrowed.body["count"] == len(both)

    start_fleet(fleet)
    started = await replay(api, key, webhook_id, only_failed=True)
    assert started.status == 202 and started.body["total"] == 4
    assert receiver.wait_for(lambda: len(receiver.at("/failed-only")) >= 4, timeout_s=60)
    await wait_until_async(lambda: fleet_idle(kafka_bootstrap, topics), 60, "the fleet to finish")  # extras arrived
    assert sorted(r.event_id for r in receiver.at("/failed-only")) == sorted(kinds["failed"])


async def test_replay_to_a_failing_receiver_follows_the_retry_schedule(
    api: RunningApi, fleet: Fleet, receiver: HttpsReceiver, database_url: str
) -> None:
    account, key = api.account("Acme")
    webhook_id, secret = seed_webhook(database_url, account, receiver.url("/flaky"), ["message.read"])
    receiver.expect("/flaky", secret=secret, statuses=[500, 500, 200])
    write_log(
        database_url,
        [record(webhook_id, account, SINCE + timedelta(minutes=5), EventType.MESSAGE_READ, Outcome.SUCCESS)],
    )
    delays = (1.0, 2.0, 3.0)
    start_fleet(fleet, delays)

    started = await replay(api, key, webhook_id)
    assert started.status == 202 and started.body["total"] == 1
    failing = await progress_until(api, key, webhook_id, started.body["id"], lambda p: p["failed"] == 1, 30)
    assert failing["failed"] == 1 and failing["delivered"] == 0
    assert receiver.wait_for(lambda: len(receiver.at("/flaky")) >= 3, timeout_s=30)
    got = receiver.at("/flaky")
    assert [r.attempt for r in got] == [1, 2, 3] and len({r.event_id for r in got}) == 1
    for i in (1, 2):
        gap = got[i].at - got[i - 1].at
        assert delays[i - 1] - EARLY_SLACK_S <= gap <= delays[i - 1] + RETRY_LATE_S, (i, gap)
    final = await progress_until(api, key, webhook_id, started.body["id"], lambda p: p["delivered"] == 1, 30)
    assert final["delivered"] == 1 and final["failed"] == 0


async def test_replay_refusals_other_account_disabled_past_retention_and_bad_range(
    api: RunningApi, database_url: str
) -> None:
    account, key = api.account("Acme")
    _, other_key = api.account("Globex")
    webhook_id, _ = seed_webhook(database_url, account, "https://localhost:9/x", ["message.read"])

    for path in (f"/v1/webhooks/{webhook_id}/replay",):
        foreign = await api.call("POST", path, other_key, {"since": SINCE.isoformat(), "dry_run": True})
        assert foreign.status == 404 and foreign.error["code"] == "not_found"
    ok = await replay(api, key, webhook_id)
    assert ok.status == 202
    peek = await api.call("GET", f"/v1/webhooks/{webhook_id}/replays/{ok.body['id']}", other_key)
    assert peek.status == 404

    gone = await api.call(
        "POST",
        f"/v1/webhooks/{webhook_id}/replay",
        key,
        {"since": (NOW - timedelta(days=50)).isoformat(), "until": (NOW - timedelta(days=40)).isoformat()},
    )
    assert gone.status == 410 and gone.error["code"] == "past_retention"
    backwards = await replay(api, key, webhook_id, since=UNTIL.isoformat(), until=SINCE.isoformat())
    assert backwards.status == 422 and backwards.error["field"] == "until"

    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE webhooks SET active = false WHERE id = %s", (webhook_id,))
    disabled = await replay(api, key, webhook_id)
    assert disabled.status == 409 and disabled.error["code"] == "webhook_disabled"
    assert "enable it" in disabled.error["message"]


async def test_replayed_attempts_carry_the_replay_id_into_the_log(api: RunningApi, database_url: str) -> None:
    """The `replay` field of the log, from the record the dispatcher builds with `attempt_record(..., replay_id)`."""
    from delivery.deliverer import DeliveryResult, attempt_record

    account, key = api.account("Acme")
    webhook_id, _ = seed_webhook(database_url, account, "https://localhost:9/x", ["message.read"])
    event = Event(id=new_event_id(), type=EventType.MESSAGE_READ, created_at=NOW, account_id=account, data={"m": 1})
    result = DeliveryResult(Outcome.SUCCESS, 200, None, 5, "ok", NOW)
    write_log(
        database_url,
        [
            attempt_record(event, webhook_id, 1, result, "done", replay_id="rpl_01JD8Z6Q3K4M5N6P7R8S9T0V1W"),
            attempt_record(event, webhook_id, 1, result, "done"),
        ],
    )
    page = await api.call("GET", f"/v1/webhooks/{webhook_id}/deliveries", key)
    assert sorted(str(row["replay"]) for row in page.body["data"]) == ["None", "rpl_01JD8Z6Q3K4M5N6P7R8S9T0V1W"]


async def test_cli_replay_dry_run_then_replay_then_status(
    api: RunningApi, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.test_api_cli import InProcess

    account, key = api.account("Acme")
    webhook_id, _ = seed_webhook(database_url, account, "https://localhost:9/x", ["message.read"])
    at = SINCE + timedelta(minutes=10)
    write_log(
        database_url, [record(webhook_id, account, at, EventType.MESSAGE_READ, Outcome.SUCCESS) for _ in range(3)]
    )
    cli = InProcess(api, key, capsys)
    window = ("--since", SINCE.isoformat(), "--until", UNTIL.isoformat())

    code, out, err = await cli("replay", webhook_id, *window, "--dry-run")
    assert code == 0, err
    assert out.startswith("would replay 3 event(s) from ") and "first: evt_" in out and "last: evt_" in out

    started = await cli.json("replay", webhook_id, *window)
    assert started["total"] == 3 and started["id"].startswith("rpl_")
    code, out, err = await cli("replay-status", webhook_id, started["id"])
    assert code == 0, err
    assert f"replay    {started['id']}" in out and "/3 queued" in out

    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE webhooks SET active = false WHERE id = %s", (webhook_id,))
    code, out, err = await cli("replay", webhook_id, *window)
    assert code == 1 and f"webhook {webhook_id} is disabled" in err and "enable it, then replay" in err
