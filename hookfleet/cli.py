"""`hookfleet <command>`: one CLI for every role and tool.

Roles are imported only when their subcommand runs, so the runtime never depends on them. Every
expected failure (broker or database down, bad settings, bad input) ends as one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

from schemas.validation import first_error

if TYPE_CHECKING:
    from hookfleet.kafka import TopicSpec
    from hookfleet.settings import TopicSettings

EXIT_USAGE = 2
EXIT_FAILURE = 1


class CliError(Exception):
    """A failure the user can fix; printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _lazy(target: str) -> Callable[[argparse.Namespace], int | None]:
    """`"module:function"` resolved at call time, so `hookfleet --help` imports no role."""

    def run(args: argparse.Namespace) -> int | None:
        module, _, name = target.partition(":")
        handler: Callable[[argparse.Namespace], int | None] = getattr(importlib.import_module(module), name)
        return handler(args)

    return run


# ------------------------------------------------------------------------------------ runtime commands


def _dev(args: argparse.Namespace) -> int:
    from devstack import stack as devstack

    if args.action == "up":
        devstack.up(brokers=args.brokers)
    elif args.action == "down":
        devstack.down()
    else:
        return 0 if devstack.status() else EXIT_FAILURE
    return 0


def _topics_list(args: argparse.Namespace) -> int:
    from hookfleet.kafka import topic_overview
    from hookfleet.settings import DispatcherSettings, RecorderSettings, RetrySchedulerSettings, TopicSettings

    settings = TopicSettings()
    groups = [cls().group_id for cls in (DispatcherSettings, RetrySchedulerSettings, RecorderSettings)]
    rows = topic_overview(settings.kafka_bootstrap_servers, settings.topics.all(), groups)
    width = max(len(row.name) for row in rows)
    print(f"{'TOPIC':{width}}  PARTITIONS  END OFFSETS    MESSAGES  CONSUMER LAG")
    for row in rows:
        if not row.partitions:
            print(f"{row.name:{width}}  missing (run `hookfleet topics ensure`)")
            continue
        lag = ", ".join(f"{group}={n}" for group, n in row.lag.items()) or "-"
        print(f"{row.name:{width}}  {row.partitions:10}  {row.end_offsets:11}  {row.messages:10}  {lag}")
    return 0


def _topics_ensure(args: argparse.Namespace) -> int:
    from hookfleet.kafka import check_broker, ensure_topics
    from hookfleet.settings import TopicSettings

    settings = TopicSettings()
    specs = topic_specs(settings, check_broker(settings.kafka_bootstrap_servers))
    created = ensure_topics(settings.kafka_bootstrap_servers, specs)
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        print(
            f"{spec.name:32} {state:8} partitions={spec.partitions} replication={spec.replication_factor}"
            f" min.insync.replicas={spec.config['min.insync.replicas']}"
        )
    return 0


def topic_specs(settings: TopicSettings, brokers: int) -> list[TopicSpec]:
    """Every hookfleet topic as `topics ensure` creates it on a cluster of `brokers`."""
    from hookfleet.kafka import TopicSpec

    replication, min_isr = settings.durability(brokers)
    config = {"retention.ms": str(settings.retention_ms), "min.insync.replicas": str(min_isr)}
    specs = [TopicSpec(name, settings.partitions, replication, config) for name in settings.topics.all()]
    return [idempotency_spec(spec, settings) if spec.name == settings.topics.idempotency else spec for spec in specs]


def idempotency_spec(spec: TopicSpec, settings: TopicSettings) -> TopicSpec:
    """The fan-out's changelog of idempotency keys: compacted (one record per key) and deleted after the
    window, in segments of a twenty-fourth of it, so a record outlives its window by at most ~4 % and a
    restore reads little more than the keys still in their window."""
    from hookfleet.kafka import TopicSpec

    window_ms = settings.idempotency_window_s * 1000
    config = {
        **spec.config,
        "cleanup.policy": "compact,delete",
        "retention.ms": str(window_ms),
        "segment.ms": str(max(60_000, window_ms // 24)),
    }
    return TopicSpec(spec.name, spec.partitions, spec.replication_factor, config)


def _db_migrate(args: argparse.Namespace) -> int:
    from hookfleet.db import describe, migrate
    from hookfleet.settings import CommonSettings

    url = CommonSettings().database_url.get_secret_value()
    applied = migrate(url)
    print(f"applied {len(applied)} migration(s) to {describe(url)}: {', '.join(applied) or 'up to date'}")
    return 0


def _schemas_export(args: argparse.Namespace) -> int:
    from schemas.models import AttemptRecord, DeliveryTask, Event, Webhook

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    for model in (Event, DeliveryTask, AttemptRecord, Webhook):
        path = out / f"{model.__name__}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(mode="serialization"), indent=2) + "\n")
        print(path)
    return 0


def _settings_show(args: argparse.Namespace) -> int:
    module = importlib.import_module("hookfleet.settings")
    cls = getattr(module, args.role_class)
    print(cls())  # SecretStr fields print as '**********'
    return 0


_SETTINGS_CLASSES = {
    "dispatcher": "DispatcherSettings",
    "retry-scheduler": "RetrySchedulerSettings",
    "recorder": "RecorderSettings",
    "api": "ApiSettings",
    "topics": "TopicSettings",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hookfleet", description="Outbound webhook delivery fleet on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>", parser_class=_Parser)

    dev = sub.add_parser("dev", help="local stack without Docker: Kafka (KRaft) + PostgreSQL")
    dev_sub = dev.add_subparsers(dest="action", required=True, metavar="<action>", parser_class=_Parser)
    for action, text in (
        ("up", "start Kafka and PostgreSQL (idempotent; waits until both answer)"),
        ("down", "stop both cleanly"),
        ("status", "show whether each is up and where the logs are"),
    ):
        action_parser = dev_sub.add_parser(action, help=text, description=text)
        action_parser.set_defaults(handler=_dev)
        if action == "up":
            action_parser.add_argument(
                "--brokers",
                type=int,
                choices=(1, 3),
                default=1,
                help="3: a 3-node KRaft cluster on 127.0.0.1:29092-29094 instead of the single broker on 19092",
            )

    topics = sub.add_parser("topics", help="Kafka topics: create them, show their offsets and lag")
    topics_sub = topics.add_subparsers(dest="action", required=True, metavar="<action>", parser_class=_Parser)
    ensure = (
        "create every hookfleet topic that is missing (HOOKFLEET_PARTITIONS; replication 3 and"
        " min.insync.replicas 2 on 3+ brokers, else 1: HOOKFLEET_REPLICATION_FACTOR, HOOKFLEET_MIN_INSYNC_REPLICAS)"
    )
    topics_sub.add_parser("ensure", help=ensure, description=ensure).set_defaults(handler=_topics_ensure)
    listing = "every hookfleet topic: partitions, end offsets, messages held, and each role's consumer lag"
    topics_sub.add_parser("list", help=listing, description=listing).set_defaults(handler=_topics_list)

    db = sub.add_parser("db", help="PostgreSQL schema")
    db_sub = db.add_subparsers(dest="action", required=True, metavar="<action>", parser_class=_Parser)
    migrate = "apply pending migrations (idempotent; safe while roles run)"
    db_sub.add_parser("migrate", help=migrate, description=migrate).set_defaults(handler=_db_migrate)
    prune_text = "drop the delivery log's day partitions older than HOOKFLEET_RETENTION_DAYS (never a DELETE)"
    prune = db_sub.add_parser("prune", help=prune_text, description=prune_text)
    prune.add_argument("--dry-run", action="store_true", help="only list the partitions that would be dropped")
    prune.set_defaults(handler=_lazy("hookfleet.retention:cli"))

    schemas = sub.add_parser("schemas", help="wire schemas")
    schemas_sub = schemas.add_subparsers(dest="action", required=True, parser_class=_Parser)
    export = schemas_sub.add_parser("export", help="write the JSON Schema of every message to DIR")
    export.add_argument("dir")
    export.set_defaults(handler=_schemas_export)

    show = sub.add_parser("settings", help="print a role's effective settings (secrets masked)")
    show.add_argument("role", choices=sorted(_SETTINGS_CLASSES))
    show.set_defaults(handler=lambda a: _settings_show(argparse.Namespace(role_class=_SETTINGS_CLASSES[a.role])))

    _add_role_commands(sub)
    return parser


def _add_role_commands(sub: Any) -> None:
    """Subcommands whose code lives in a role package (imported only when run)."""
    for name, target, help_text in (
        ("dispatcher", "dispatcher.main:run", "run a dispatcher: consume events and due retries, deliver"),
        ("retry-scheduler", "retry_scheduler.main:run", "run a retry scheduler: hand due tasks back"),
        ("recorder", "recorder.main:run", "run a recorder: attempt log and dead letters into PostgreSQL"),
        ("api", "api.main:run", "run the webhook management API and settings page"),
    ):
        role = sub.add_parser(name, help=help_text)
        role.set_defaults(handler=_lazy(target))
        if name == "dispatcher":
            role.add_argument("--processes", default="1", metavar="N|auto", help="processes (auto: 1 per core)")

    publish = sub.add_parser(
        "publish",
        help="publish events to webhooks.events",
        description="Publish one event (--account, --type, --data) or many (--file). An event is at most"
        " 256 KiB as JSON. A file is checked whole first: bad lines are reported by number, the good ones"
        " are sent, and the exit code is 1 if any line was rejected.",
    )
    publish.add_argument("--account", help="account id the event belongs to")
    publish.add_argument("--type", dest="event_type", help="event type from the catalog")
    publish.add_argument(
        "--data", help="JSON object: the event's data (large data: use --file, a shell argument is limited)"
    )
    publish.add_argument("--file", help="NDJSON file, one {account_id, type, data} object per line ('-' = stdin)")
    publish.add_argument(
        "--idempotency-key",
        help="with --account: publishing again with this key within the window delivers nothing more",
    )
    publish.set_defaults(handler=_lazy("producer.cli:publish"))

    lookup_text = (
        "which event an idempotency key became: the fan-out's record of its first publish for the account"
        " (event id, events offset, first seen), read from webhooks.idempotency; exit 1 when there is none"
    )
    lookup = sub.add_parser("idempotency-key", help=lookup_text, description=lookup_text)
    lookup.add_argument("--account", required=True, help="account id the events were published for")
    lookup.add_argument("key", help="the idempotency-key header's value")
    lookup.set_defaults(handler=_lazy("producer.cli:idempotency_key"))

    dead = sub.add_parser("dead-letters", help="dead-lettered deliveries")
    dead_sub = dead.add_subparsers(dest="action", required=True, parser_class=_Parser)
    redrive = dead_sub.add_parser("redrive", help="re-publish a webhook's dead letters as a fresh attempt 1")
    redrive.add_argument("--webhook", required=True, help="webhook id")
    redrive.add_argument("--since", help="only dead letters from this RFC 3339 time on")
    redrive.set_defaults(handler=_lazy("api.redrive:cli"))

    accounts = sub.add_parser("accounts", help="customer accounts and API keys")
    accounts_sub = accounts.add_subparsers(dest="action", required=True, parser_class=_Parser)
    create = accounts_sub.add_parser("create", help="create an account and print its API key (shown once)")
    create.add_argument("name")
    create.add_argument("--id", dest="account_id", help="account id (default: generated)")
    create.set_defaults(handler=_lazy("api.accounts:cli_create"))
    keys = accounts_sub.add_parser("keys", help="an account's API keys: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_action", required=True, metavar="<action>", parser_class=_Parser)
    key_create = keys_sub.add_parser("create", help="another API key for ACCOUNT (shown once)")
    key_create.add_argument("account", help="account id (acct_...)")
    key_create.add_argument("--label", default="", help="what the key is for, e.g. 'ci' or 'crm-sync'")
    key_list = keys_sub.add_parser("list", help="ACCOUNT's keys with their last use and revocation")
    key_list.add_argument("account", help="account id (acct_...)")
    key_revoke = keys_sub.add_parser("revoke", help="revoke a key now, on every API replica")
    key_revoke.add_argument("key_id", help="key id from `keys list` (key_...)")
    keys.set_defaults(handler=_lazy("api.accounts:cli_keys"))

    # `hookfleet webhooks --help` is answered by the client's own parser, which describes every action.
    webhooks = sub.add_parser(
        "webhooks", help="manage webhooks through the API (HOOKFLEET_API_URL, HOOKFLEET_API_KEY)", add_help=False
    )
    webhooks.add_argument("rest", nargs=argparse.REMAINDER)
    webhooks.set_defaults(handler=_lazy("api.client_cli:main"))
    events = sub.add_parser(
        "events",
        help="where events went, and the delivery log of every webhook, through the API (show EVT, search)",
        add_help=False,
    )
    events.add_argument("rest", nargs=argparse.REMAINDER)
    events.set_defaults(handler=_lazy("api.client_cli:events_main"))

    demo = sub.add_parser("demo", help="run the whole fleet locally with a demo receiver and a live table")
    demo.add_argument("--events", type=int, default=200, help="events in the opening burst")
    demo.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0 = until Ctrl-C)")
    demo.add_argument("--metrics-base-port", type=int, default=9101, help="roles serve /metrics from this port up")
    demo.set_defaults(handler=_lazy("demo.run:main"))


def _known_errors() -> tuple[type[BaseException], ...]:
    from devstack.stack import DevStackError
    from hookfleet.db import DatabaseUnavailable, SchemaNotMigrated
    from hookfleet.kafka import KafkaDeliveryError, KafkaUnavailable
    from hookfleet.metrics import MetricsPortUnavailable
    from hookfleet.secretbox import SecretKeyError

    return (
        CliError,
        KafkaUnavailable,
        KafkaDeliveryError,
        DatabaseUnavailable,
        SchemaNotMigrated,
        DevStackError,
        SecretKeyError,
        MetricsPortUnavailable,
    )


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return f"invalid {first_error(exc)}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # only the API clients take options of their own (their parsers, --help included)
        if getattr(args, "command", None) not in ("webhooks", "events"):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.rest = [*unknown, *args.rest]
    if not logging.getLogger().handlers:
        # Tools print their own results; only real trouble from libraries should reach the terminal.
        from hookfleet import logs

        logs.setup("ERROR", role="cli")
    try:
        rc = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except ValidationError as exc:
        print(f"hookfleet: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except _known_errors() as exc:
        print(f"hookfleet: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
