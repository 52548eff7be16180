"""`hookfleet publish`: one event from flags, or many from an NDJSON file with progress and a summary of
rejected lines (line number + reason). Rejected lines are reported, never silently skipped."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import IO, Any

from pydantic import ValidationError

from hookfleet.cli import CliError
from hookfleet.kafka import KafkaError, Message, check_broker
from hookfleet.settings import CommonSettings
from producer.publisher import EventPublisher, build_event
from schemas.validation import first_error


def _parse_line(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise ValueError("each line must be a JSON object")
    unknown = set(value) - {"account_id", "type", "data", "id", "created_at"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    return value


def publish(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    if args.file:
        return _publish_file(settings, args.file)
    missing = [flag for flag, value in (("--account", args.account), ("--type", args.event_type)) if not value]
    if missing:
        raise CliError(f"{' and '.join(missing)} required (or --file events.ndjson)")
    try:
        data = json.loads(args.data or "{}")
    except json.JSONDecodeError as exc:
        raise CliError(f"--data is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(data, dict):
        raise CliError("--data must be a JSON object")
    try:
        event = build_event(args.account, args.event_type, data)
    except ValueError as exc:  # ValidationError and an unknown EventType both land here
        reason = first_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise CliError(f"invalid event: {reason}") from None
    check_broker(settings.kafka_bootstrap_servers)
    with EventPublisher(settings) as publisher:
        message = publisher.publish_and_wait(event)
    print(f"published {event.id} ({event.type.value}) to {message.topic()} partition {message.partition()}")
    return 0


def _publish_file(settings: CommonSettings, path: str) -> int:
    check_broker(settings.kafka_bootstrap_servers)
    rejected: list[tuple[int, str]] = []
    failed: list[str] = []
    acked = 0
    lock = threading.Lock()

    def on_ack(error: KafkaError | None, _message: Message) -> None:
        nonlocal acked
        with lock:
            if error is None:
                acked += 1
            else:
                failed.append(error.str())

    stream: IO[str] = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    publisher = EventPublisher(settings)
    queued = 0
    try:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                fields = _parse_line(raw)
                event = build_event(
                    fields.get("account_id", ""),
                    fields.get("type", ""),
                    fields.get("data", {}),
                    event_id=fields.get("id"),
                    created_at=fields.get("created_at"),
                )
            except ValidationError as exc:
                rejected.append((number, first_error(exc)))
                continue
            except ValueError as exc:
                rejected.append((number, str(exc)))
                continue
            publisher.publish(event, on_delivery=on_ack)
            queued += 1
            if queued % 1000 == 0:
                print(f"\rqueued {queued}, acknowledged {acked}, rejected {len(rejected)}", end="", file=sys.stderr)
    finally:
        if stream is not sys.stdin:
            stream.close()
        publisher.close()
    print(f"\rpublished {acked} event(s); {len(rejected)} line(s) rejected; {len(failed)} not acknowledged")
    for number, reason in rejected[:50]:
        print(f"  line {number}: {reason}")
    if len(rejected) > 50:
        print(f"  ... and {len(rejected) - 50} more")
    return 0 if not rejected and not failed else 1
