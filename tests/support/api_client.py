"""The management API under test: the real aiohttp app on a real 127.0.0.1 port (aiohttp's TestServer),
bound to the test's own PostgreSQL schema and topics, with accounts created the way
`hookfleet accounts create` creates them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from aiohttp.test_utils import TestClient, TestServer

from api.accounts import create_account
from api.app import build_app
from hookfleet.attempt_rows import rollup_sql
from hookfleet.kafka import new_consumer
from hookfleet.settings import ApiSettings
from schemas.catalog import EventType, sample_data
from schemas.ids import new_attempt_id, new_event_id
from schemas.models import Event
from schemas.topics import Topics

SECRET_KEY = base64.b64encode(b"api-test-key-32-bytes-long......").decode()


def api_settings(
    database_url: str,
    kafka_bootstrap: str,
    ca_bundle: str,
    topics: Topics | None = None,
    **overrides: Any,
) -> ApiSettings:
    prefix = topics.events.removesuffix("webhooks.events") if topics else f"t{uuid.uuid4().hex[:10]}."
    values: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": kafka_bootstrap,
        "topic_prefix": prefix,
        "secret_key": SECRET_KEY,
        "allow_networks": ["127.0.0.0/8"],
        "ca_bundle": ca_bundle,
        "delivery_timeout_s": 5.0,
        "secret_rotation_overlap_s": 3600,
        **overrides,
    }
    return ApiSettings(**values)


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict) and "error" in self.body, self.body
        detail: dict[str, Any] = self.body["error"]
        return detail


class RunningApi:
    """`async with RunningApi(settings) as api:` serves the app; `api.call(...)` talks to it."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.server = TestServer(build_app(settings), host="127.0.0.1")
        self.client = TestClient(self.server)

    async def __aenter__(self) -> RunningApi:
        await self.client.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def account(self, name: str, account_id: str | None = None) -> tuple[str, str]:
        """(account id, API key) of a new account."""
        return create_account(self.settings.database_url.get_secret_value(), name, account_id)

    async def call(
        self,
        method: str,
        path: str,
        key: str | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        async with self.client.request(method, path, data=data, headers=sent, params=params) as resp:
            raw = await resp.read()
            body = json.loads(raw) if raw and resp.content_type == "application/json" else raw
            return Reply(resp.status, body, dict(resp.headers))


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list[tuple[bytes, bytes]]:
    """(key, value) of the first `expected` messages of `topic`, or fewer if the time runs out."""
    consumer = new_consumer(bootstrap, f"api-test-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for message in consumer.consume(10, timeout=0.5):
                if message.error() is None:
                    got.append((message.key() or b"", message.value() or b""))
    finally:
        consumer.close()
    return got


def insert_attempt(
    database_url: str,
    webhook_id: str,
    at: datetime,
    event_type: str = "message.read",
    outcome: str = "success",
    status_code: int | None = 200,
    account_id: str = "acct_a",
    with_payload: bool = True,
) -> tuple[str, str]:
    """A log row as the recorder writes it (and the event's payload); returns (attempt id, event id)."""
    event = Event(
        id=new_event_id(),
        type=EventType(event_type),
        created_at=at,
        account_id=account_id,
        data=sample_data(EventType(event_type)),
    )
    attempt_id = new_attempt_id()
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT hookfleet_create_log_day(%s)", (at.astimezone(UTC).date(),))
        conn.execute(
            "INSERT INTO delivery_attempts (attempt_id, event_id, event_type, account_id, webhook_id, attempt,"
            " outcome, status_code, error, response_ms, response_excerpt, attempted_at, next_step)"
            " VALUES (%s, %s, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s, 'done')",
            (
                attempt_id,
                event.id,
                event_type,
                account_id,
                webhook_id,
                outcome,
                status_code,
                None if outcome == "success" else "timeout",
                12 if outcome == "success" else 10_000,
                "ok" if outcome == "success" else "",
                at,
            ),
        )
        conn.execute(  # the hourly stats, as every writer of the log keeps them
            rollup_sql("(SELECT * FROM delivery_attempts WHERE attempt_id = %s) AS one"), (attempt_id,)
        )
        if with_payload:
            conn.execute(
                "INSERT INTO event_payloads (event_id, account_id, event, logged_on) VALUES (%s, %s, %s::jsonb, %s)",
                (event.id, account_id, event.model_dump_json(), at.astimezone(UTC).date()),
            )
    return attempt_id, event.id
