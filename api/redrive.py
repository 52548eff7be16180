"""Redrive: re-publish a webhook's dead-lettered deliveries as a fresh attempt 1.

Used by `hookfleet dead-letters redrive` and by the API. Rows are claimed with `FOR UPDATE SKIP LOCKED`
so two redrives at once do not publish the same dead letter twice, and marked `redriven_at` only after
the broker acknowledged every task of the chunk: a failure part-way marks nothing, and a retry publishes
again (at-least-once, like every delivery; receivers dedupe on the event id).
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime

from hookfleet.cli import CliError
from hookfleet.db import connect
from hookfleet.kafka import KafkaProducer, check_broker
from hookfleet.stream.sender import Outgoing, send_all
from schemas.models import DeliveryTask
from schemas.redrive import fresh_attempt
from schemas.topics import Topics

log = logging.getLogger(__name__)

CHUNK = 500
"""Dead letters per transaction: bounds memory and the time a chunk's rows stay locked."""

_CLAIM = (
    "SELECT event_id, task::text FROM dead_letters "
    "WHERE webhook_id = %(webhook_id)s AND redriven_at IS NULL "
    "AND (%(since)s::timestamptz IS NULL OR dead_at >= %(since)s) "
    "AND (%(account_id)s::text IS NULL OR account_id = %(account_id)s) "
    "ORDER BY dead_at, event_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)

_MARK = "UPDATE dead_letters SET redriven_at = %s WHERE webhook_id = %s AND event_id = ANY(%s)"


def redrive(
    database_url: str,
    producer: KafkaProducer,
    topics: Topics,
    webhook_id: str,
    since: datetime | None,
    account_id: str | None = None,
) -> int:
    """Publish the webhook's not-yet-redriven dead letters (dead at or after `since`) to the deliveries topic.

    `account_id` restricts the redrive to that account's webhook (tenant isolation in the API).
    Returns how many were re-published.
    """
    total = 0
    with connect(database_url) as conn:
        while True:
            with conn.transaction():
                rows = conn.execute(
                    _CLAIM, {"webhook_id": webhook_id, "since": since, "account_id": account_id, "limit": CHUNK}
                ).fetchall()
                if not rows:
                    break
                now = datetime.now(UTC)
                tasks = [fresh_attempt(DeliveryTask.model_validate_json(str(task)), _epoch_ms(now)) for _, task in rows]
                publish_acked(producer, topics.deliveries, tasks)
                conn.execute(_MARK, (now, webhook_id, [str(event_id) for event_id, _ in rows]))
            total += len(rows)
            if len(rows) < CHUNK:
                break
    log.info("event=dead_letters_redriven webhook_id=%s count=%d", webhook_id, total)
    return total


def _epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def publish_acked(producer: KafkaProducer, topic: str, tasks: list[DeliveryTask]) -> None:
    """Produce every task, keyed by its webhook, and return only once the broker acknowledged all of them."""
    send_all(producer, [Outgoing(topic, task.model_dump_json().encode(), task.webhook_id) for task in tasks])


def parse_since(value: str | None) -> datetime | None:
    """`--since` as an aware datetime; the error names the value and the expected shape."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"--since must be an RFC 3339 time such as 2025-01-31T12:00:00Z (got {value[:60]!r})") from None
    if parsed.tzinfo is None:
        raise CliError(f"--since needs a time zone, e.g. 2025-01-31T12:00:00Z (got {value[:60]!r})")
    return parsed


def cli(args: argparse.Namespace) -> int:
    """`hookfleet dead-letters redrive --webhook ID [--since TIME]`."""
    from hookfleet.settings import CommonSettings

    since = parse_since(args.since)
    settings = CommonSettings()
    check_broker(settings.kafka_bootstrap_servers)
    producer = KafkaProducer(settings.kafka_bootstrap_servers)
    try:
        count = redrive(settings.database_url.get_secret_value(), producer, settings.topics, args.webhook, since)
    finally:
        producer.close()
    print(f"redriven {count} dead letter(s) of {args.webhook}")
    return 0
