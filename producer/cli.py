"""`hookfleet publish`: one event from flags, or many from an NDJSON file.

A file is validated whole before anything is sent (JSON, fields, event type, size up to MAX_EVENT_BYTES);
each bad line is reported by number on stderr, the good ones are published, and the last line is the
summary `sent N, rejected M`. The exit code is 1 if any line was rejected or not acknowledged."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

from pydantic import ValidationError

from hookfleet import tracing
from hookfleet.cli import CliError
from hookfleet.kafka import KafkaError, Message, check_broker
from hookfleet.settings import CommonSettings
from producer.publisher import EventPublisher, build_event, event_body, first_publish, idempotency_headers
from schemas.models import Event
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
    tracing.setup("producer")
    if args.file:
        if args.idempotency_key:
            raise CliError("--idempotency-key applies to one event (--account, --type), not to --file")
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
        event_body(event)
        idempotency_headers(args.idempotency_key)
    except ValueError as exc:  # ValidationError, an unknown EventType and EventTooLarge all land here
        reason = first_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise CliError(f"invalid event: {reason}") from None
    check_broker(settings.kafka_bootstrap_servers)
    with EventPublisher(settings) as publisher:
        message = publisher.publish_and_wait(event, idempotency_key=args.idempotency_key)
    print(f"published {event.id} ({event.type.value}) to {message.topic()} partition {message.partition()}")
    return 0


def _read_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line; a file that cannot be read is one CliError line."""
    try:
        stream: IO[str] = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        for number, raw in enumerate(stream, start=1):
            if raw.strip():
                yield number, raw
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    finally:
        if stream is not sys.stdin:
            stream.close()


def _event_of(raw: str) -> tuple[Event, bytes]:
    """A validated event and its body; ValueError with the reason for a bad line."""
    fields = _parse_line(raw)
    try:
        event = build_event(
            fields.get("account_id", ""),
            fields.get("type", ""),
            fields.get("data", {}),
            event_id=fields.get("id"),
            created_at=fields.get("created_at"),
        )
    except ValidationError as exc:
        raise ValueError(first_error(exc)) from None
    return event, event_body(event)


def _publish_file(settings: CommonSettings, path: str) -> int:
    """Validate every line first (JSON, fields, type, size), then publish the good ones: a bad line never
    leaves the file half-sent, and each one is reported by number."""
    events: list[Event] = []
    rejected: list[tuple[int, str]] = []
    for number, raw in _read_lines(path):
        try:
            events.append(_event_of(raw)[0])
        except ValueError as exc:
            rejected.append((number, str(exc)))
    for number, reason in rejected[:50]:
        print(f"line {number}: {reason}", file=sys.stderr)
    if len(rejected) > 50:
        print(f"... and {len(rejected) - 50} more rejected line(s)", file=sys.stderr)
    failed: list[str] = []
    acked = 0
    if events:
        check_broker(settings.kafka_bootstrap_servers)
        lock = threading.Lock()

        def on_ack(error: KafkaError | None, _message: Message) -> None:
            nonlocal acked
            with lock:
                if error is None:
                    acked += 1
                else:
                    failed.append(error.str())

        publisher = EventPublisher(settings)
        try:
            for queued, event in enumerate(events, start=1):
                publisher.publish(event, on_delivery=on_ack)
                if queued % 1000 == 0:
                    print(f"\rqueued {queued}, acknowledged {acked}", end="", file=sys.stderr)
        finally:
            publisher.close()
    unacked = len(events) - acked
    summary = f"sent {acked}, rejected {len(rejected)}"
    print("\r" + summary + (f", not acknowledged {unacked} ({failed[0] if failed else 'timeout'})" if unacked else ""))
    return 0 if not rejected and not unacked else 1


def idempotency_key(args: argparse.Namespace) -> int:
    """`hookfleet idempotency-key --account A KEY`: the first publish of KEY, as JSON; exit 1 when none."""
    try:
        sight = first_publish(args.account, args.key)
    except ValueError as exc:  # InvalidIdempotencyKey
        raise CliError(str(exc)) from None
    if sight is None:
        print(
            f"no publish with idempotency-key {args.key!r} for account {args.account} within the window",
            file=sys.stderr,
        )
        return 1
    print(sight.to_json().decode())
    return 0
