"""Replay, Redeliver and Recover are bounded per account, and replays per server, through the real API:
a 429 with Retry-After whose body names the quota reached (`error.limit`), and nothing is started or
recorded past it. Real API, real broker, real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from api.resources import RESOURCES
from schemas.catalog import EventType
from schemas.models import Outcome
from schemas.topics import Topics
from tests.integration.test_replay import SINCE, UNTIL, record, write_log
from tests.support.api_client import RunningApi, api_settings
from tests.support.fleet import TEST_SECRET_KEY, seed_webhook

pytestmark = pytest.mark.integration


def _api(database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics, **limits: Any) -> RunningApi:
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, topics, secret_key=TEST_SECRET_KEY, **limits)
    return RunningApi(settings)


def _logged(database_url: str, account: str, events: int) -> tuple[str, list[str]]:
    """A webhook of `account` whose log holds `events` attempts in [SINCE, UNTIL); (its id, attempt ids)."""
    webhook_id, _ = seed_webhook(database_url, account, "https://example.com/hook", ["message.read"])
    records = [
        record(webhook_id, account, SINCE + timedelta(minutes=i + 1), EventType.MESSAGE_READ, Outcome.SUCCESS)
        for i in range(events)
    ]
    write_log(database_url, records)
    return webhook_id, [r.attempt_id for r in records]


async def _replay(api: RunningApi, key: str, webhook_id: str, **fields: Any) -> Any:
    body = {"since": SINCE.isoformat(), "until": UNTIL.isoformat(), **fields}
    return await api.call("POST", f"/v1/webhooks/{webhook_id}/replay", key, body)


def _refused(reply: Any, limit: str) -> None:
    assert reply.status == 429, reply.body
    assert reply.error["code"] == "quota_exceeded" and reply.error["limit"] == limit, reply.body
    assert int(reply.headers["Retry-After"]) >= 1


def _replays(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM replays").fetchone()
    return int(row[0]) if row else 0


async def test_replays_running_are_bounded_per_account_and_per_server_on_a_small_pool(
    database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics
) -> None:
    # 1 event/s: each replay of 20 events runs for 20 s, long enough to be refused beside it
    limits = {"replay_rate_per_s": 1.0, "replays_per_account": 1, "max_replays_running": 2}
    async with _api(database_url, kafka_bootstrap, ca_bundle, topics, **limits) as api:
        accounts = [api.account(name, f"acct_{name}") for name in ("a", "b", "c")]
        webhooks = [_logged(database_url, account, 20)[0] for account, _ in accounts]
        (_, key_a), (_, key_b), (_, key_c) = accounts

        assert (await _replay(api, key_a, webhooks[0])).status == 202
        # A second replay of the same account waits for the first
        _refused(await _replay(api, key_a, webhooks[0]), "HOOKFLEET_REPLAYS_PER_ACCOUNT")
        # Another account still gets its own
        assert (await _replay(api, key_b, webhooks[1])).status == 202
        # A third account meets the server's cap
        _refused(await _replay(api, key_c, webhooks[2]), "HOOKFLEET_MAX_REPLAYS_RUNNING")
        # A dry run starts nothing and is not refused
        assert (await _replay(api, key_c, webhooks[2], dry_run=True)).body["count"] == 20
        assert _replays(database_url) == 2

        # Every replay query goes through one pool of max_replays_running + 2 connections
        pool = api.server.app[RESOURCES].replays.pool
        assert pool.max_size == 4 and pool.get_stats()["pool_size"] <= 4


async def test_events_replayed_per_day_are_bounded_per_account_and_nothing_is_recorded_past_it(
    database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics
) -> None:
    limits = {"replay_rate_per_s": 1000.0, "replays_per_account": 5, "replay_events_per_day": 30}
    async with _api(database_url, kafka_bootstrap, ca_bundle, topics, **limits) as api:
        account, key = api.account("Acme", "acct_a")
        webhook_id, _ = _logged(database_url, account, 24)
        assert (await _replay(api, key, webhook_id)).status == 202  # 24 of 30
        refused = await _replay(api, key, webhook_id)  # 24 more: past the day's 30
        _refused(refused, "HOOKFLEET_REPLAY_EVENTS_PER_DAY")
        assert "24" in refused.error["message"] and "30" in refused.error["message"]
        assert _replays(database_url) == 1
        # A narrower replay that fits the rest of the day's budget is allowed
        narrow = await _replay(api, key, webhook_id, until=(SINCE + timedelta(minutes=6, seconds=30)).isoformat())
        assert narrow.status == 202 and narrow.body["total"] == 6, narrow.body
        _refused(
            await _replay(api, key, webhook_id, until=(SINCE + timedelta(minutes=2)).isoformat()),
            "HOOKFLEET_REPLAY_EVENTS_PER_DAY",
        )


async def test_redeliveries_and_recovers_are_bounded_per_account_per_minute(
    database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics
) -> None:
    limits = {"redeliveries_per_minute": 2, "recovers_per_minute": 1}
    async with _api(database_url, kafka_bootstrap, ca_bundle, topics, **limits) as api:
        account, key = api.account("Acme", "acct_a")
        webhook_id, attempts = _logged(database_url, account, 3)
        _, other_key = api.account("Other", "acct_b")
        other_webhook, other_attempts = _logged(database_url, "acct_b", 1)

        for attempt_id in attempts[:2]:
            assert (await api.call("POST", f"/v1/deliveries/{attempt_id}/redeliver", key)).status == 202
        _refused(
            await api.call("POST", f"/v1/deliveries/{attempts[2]}/redeliver", key), "HOOKFLEET_REDELIVERIES_PER_MINUTE"
        )
        assert (await api.call("POST", f"/v1/deliveries/{other_attempts[0]}/redeliver", other_key)).status == 202

        assert (await api.call("POST", f"/v1/webhooks/{webhook_id}/recover", key, {})).status == 202
        _refused(await api.call("POST", f"/v1/webhooks/{webhook_id}/recover", key, {}), "HOOKFLEET_RECOVERS_PER_MINUTE")
        assert (await api.call("POST", f"/v1/webhooks/{other_webhook}/recover", other_key, {})).status == 202
