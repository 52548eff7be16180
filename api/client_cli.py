"""`hookfleet webhooks ...`: the management API from a terminal or a script.

Talks to the API at HOOKFLEET_API_URL with HOOKFLEET_API_KEY, exactly as customer code would (it is a
client of the public `/v1` API, nothing more). Prints readable tables by default and the API's JSON with
`--json`. Every failure is one line on stderr and exit code 1 (2 for a usage mistake).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, NoReturn

from hookfleet.cli import CliError

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT_S = 60.0  # above the delivery timeout, so a Test against a slow receiver still answers


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class ApiClient:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key

    def call(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) URL from settings
        request.add_header("Authorization", f"Bearer {self._key}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise CliError(_describe(exc)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"the API at {self.base_url} is not reachable ({reason}); check HOOKFLEET_API_URL") from None
        return json.loads(raw) if raw else None


def _describe(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
    except (ValueError, KeyError, TypeError):
        return f"the API answered {exc.code} {exc.reason}"
    message = str(error.get("message", f"HTTP {exc.code}"))
    if exc.code == 401:
        return f"{message} (HOOKFLEET_API_KEY)"
    return message


# ------------------------------------------------------------------------------------------ output


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[("" if value is None else str(value)) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name.ljust(width)}  {'' if value is None else value}" for name, value in pairs)


def webhook_fields(webhook: dict[str, Any], secret_note: str = "") -> str:
    rows: list[tuple[str, Any]] = [
        ("id", webhook["id"]),
        ("name", webhook["name"]),
        ("url", webhook["url"]),
        ("events", ", ".join(webhook["events"])),
        ("active", "yes" if webhook["active"] else f"no ({off_reason(webhook)})"),
        ("rate limit", f"{webhook['rate_limit_per_s']}/s" if webhook.get("rate_limit_per_s") else "none"),
        ("ordering", webhook.get("ordering", "unordered")),
        ("filter", webhook.get("filter") or "none (every event of its types)"),
        ("redrive on recovery", "yes" if webhook.get("redrive_on_recovery") else "no"),
        ("status", f"{webhook['status']} since {webhook['status_changed_at']}"),
        ("secret", webhook["secret"] + secret_note),
    ]
    if webhook.get("headers"):
        rows.append(("headers", ", ".join(f"{k}: {v}" for k, v in webhook["headers"].items())))
    if webhook.get("previous_secret_expires_at"):
        rows.append(("previous secret", f"still signs until {webhook['previous_secret_expires_at']}"))
    if webhook.get("public_key"):
        rows.append(("public key", f"{webhook['public_key']}   (Ed25519: verifies the v1a signatures)"))
    if webhook.get("previous_public_key"):
        until = webhook["previous_public_key_expires_at"]
        rows.append(("previous key", f"{webhook['previous_public_key']}   still signs until {until}"))
    rows += [("created", webhook["created_at"]), ("updated", webhook["updated_at"])]
    return fields(rows)


OFF_REASONS = {
    "gone": "its receiver answered 410 Gone",
    "failing": "it kept failing too long",
    "manual": "switched off by hand",
}


def off_reason(webhook: dict[str, Any]) -> str:
    """Why and since when a webhook is off, e.g. `its receiver answered 410 Gone, since 2026-...`."""
    reason = OFF_REASONS.get(webhook.get("disabled_reason") or "", "switched off")
    return f"{reason}, since {webhook['disabled_at']}" if webhook.get("disabled_at") else reason


def _header(value: str) -> tuple[str, str]:
    name, sep, text = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header must be NAME:VALUE (got {value[:40]!r})")
    return name.strip(), text.strip()


def status_of(row: dict[str, Any]) -> str:
    return str(row["status_code"]) if row["status_code"] is not None else str(row["error"] or row["outcome"])


# ------------------------------------------------------------------------------------------ commands


def _events(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hookfleet webhooks", description="Manage webhooks through the API.")
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    sub = parser.add_subparsers(dest="action", required=True, metavar="<action>", parser_class=_Parser)

    create = sub.add_parser("create", parents=[common], help="create a webhook; prints its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--url", required=True, help="https URL of your receiver")
    create.add_argument("--events", required=True, type=_events, help="comma-separated event types")
    create.add_argument("--inactive", action="store_true", help="create it switched off")
    create.add_argument("--rate-limit", type=int, dest="rate_limit_per_s", help="deliveries per second at most")
    create.add_argument(
        "--ordering", choices=["unordered", "fifo"], help="fifo: in publish order; later events wait while one retries"
    )
    header_help = "custom request header NAME:VALUE sent with every delivery (repeatable; stored encrypted)"
    create.add_argument("--header", dest="headers", action="append", type=_header, help=header_help)
    ed25519_help = "also sign every delivery with an Ed25519 key of its own (Standard Webhooks v1a)"
    create.add_argument("--asymmetric-signing", action="store_true", help=ed25519_help + "; prints its public key")
    filter_help = "CEL expression over type, account_id and data, e.g. 'data.channel == \"whatsapp\"'"
    create.add_argument("--filter", help=filter_help + ": only events for which it is true are sent")

    sub.add_parser("list", parents=[common], help="list webhooks")
    for name, text in (
        ("show", "show one webhook"),
        ("enable", "switch sending on"),
        ("disable", "switch sending off (the configuration is kept)"),
        ("delete", "delete a webhook"),
        ("rotate-secret", "new secret; the old one keeps signing during the overlap"),
        ("rotate-signing-key", "new Ed25519 key; the old one keeps signing (v1a) during the overlap"),
    ):
        sub.add_parser(name, parents=[common], help=text).add_argument("id", help="webhook id (wh_...)")

    update = sub.add_parser(
        "update", parents=[common], help="change name, url, events, rate limit, ordering, headers or filter"
    )
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--url")
    update.add_argument("--events", type=_events)
    update.add_argument("--rate-limit", type=int, dest="rate_limit_per_s", help="deliveries per second; 0 removes it")
    update.add_argument("--ordering", choices=["unordered", "fifo"])
    update.add_argument("--header", dest="headers", action="append", type=_header, help=header_help + "; replaces all")
    update.add_argument("--clear-headers", action="store_true", help="remove every custom header")
    update.add_argument(
        "--asymmetric-signing", choices=["on", "off"], help=ed25519_help + "; off deletes the key pair"
    )
    update.add_argument("--filter", help=filter_help + "; '' removes it")

    preview = sub.add_parser(
        "filter-preview", parents=[common], help="try a filter on your stored events first (nothing is saved)"
    )
    preview.add_argument("id")
    preview.add_argument("filter", help=filter_help)
    preview.add_argument("--days", default=7, type=int, help="the last N days of the log (default 7)")
    preview.add_argument("--limit", type=int, help="stored events read at most (default 1,000; at most 10,000)")
    preview.add_argument("--cursor", help="next_cursor of the previous page")

    notify = sub.add_parser("notify-email", parents=[common], help="where failure notifications are mailed")
    notify.add_argument(
        "address", nargs="?", help="e-mail address (mailed a code to confirm it); '' removes it; omit to show it"
    )
    confirm = sub.add_parser("notify-email-confirm", parents=[common], help="confirm the address with the mailed code")
    confirm.add_argument("code")

    test = sub.add_parser("test", parents=[common], help="send a sample event now and show the answer")
    test.add_argument("id")
    test.add_argument("--event-type", help="default: the webhook's first event type")

    logs = sub.add_parser("logs", parents=[common], help="recent deliveries, newest first")
    logs.add_argument("id")
    logs.add_argument("--event-type")
    logs.add_argument("--outcome", help="success, http_error, timeout, connection_error, tls_error, blocked")
    logs.add_argument("--since", help="RFC 3339 time, e.g. 2026-01-31T12:00:00Z")
    logs.add_argument("--limit", default="20")
    logs.add_argument("--cursor", help="next_cursor of the previous page")

    redeliver = sub.add_parser("redeliver", parents=[common], help="deliver a logged event again")
    redeliver.add_argument("attempt_id", help="attempt id from `logs` (att_...)")

    recover = sub.add_parser("recover", parents=[common], help="redrive the webhook's dead letters")
    recover.add_argument("id")
    recover.add_argument("--since", help="only dead letters from this RFC 3339 time on")

    replay = sub.add_parser(
        "replay", parents=[common], help="send the events of a time range again (--dry-run counts them first)"
    )
    replay.add_argument("id")
    replay.add_argument("--since", required=True, help="RFC 3339 time, e.g. 2026-01-31T12:00:00Z")
    replay.add_argument("--until", help="RFC 3339 time; default: now")
    replay.add_argument("--event-types", type=_events, help="comma-separated event types; default: all")
    replay.add_argument("--only-failed", action="store_true", help="only events not yet received with a 2xx")
    replay.add_argument("--dry-run", action="store_true", help="only count what would be sent")

    replay_status = sub.add_parser("replay-status", parents=[common], help="progress of a replay")
    replay_status.add_argument("id")
    replay_status.add_argument("replay_id", help="replay id from `replay` (rpl_...)")
    return parser


def run(opts: argparse.Namespace, client: ApiClient) -> str:
    """Perform one action; returns what to print."""
    action = opts.action
    wid = getattr(opts, "id", "")
    path = f"/v1/webhooks/{urllib.parse.quote(wid, safe='')}"
    once = "   <- shown only now: store it"
    if action == "create":
        body = {"name": opts.name, "url": opts.url, "events": opts.events, "active": not opts.inactive}
        body |= {
            k: getattr(opts, k) for k in ("rate_limit_per_s", "ordering", "filter") if getattr(opts, k) is not None
        }
        if opts.headers:
            body["headers"] = dict(opts.headers)
        if opts.asymmetric_signing:
            body["asymmetric_signing"] = True
        created = client.call("POST", "/v1/webhooks", body)
        return _out(opts, created, lambda: webhook_fields(created, once))
    if action == "list":
        listed = client.call("GET", "/v1/webhooks")
        hooks = [
            (
                w["id"],
                w["name"],
                "on" if w["active"] else f"off ({w.get('disabled_reason') or 'manual'})",
                w["status"],
                ",".join(w["events"]),
                w["url"],
            )
            for w in listed["data"]
        ]
        return _out(opts, listed, lambda: table(["id", "name", "active", "status", "events", "url"], hooks))
    if action == "show":
        shown = client.call("GET", path)
        return _out(opts, shown, lambda: webhook_fields(shown))
    if action in ("enable", "disable", "update"):
        if action == "update":
            names = ("name", "url", "events", "rate_limit_per_s", "ordering", "filter")
            changes = {k: getattr(opts, k) for k in names if getattr(opts, k) is not None}
            if opts.headers or opts.clear_headers:
                changes["headers"] = dict(opts.headers or [])
            if opts.asymmetric_signing is not None:
                changes["asymmetric_signing"] = opts.asymmetric_signing == "on"
            if not changes:
                raise CliError(
                    "nothing to update: give --name, --url, --events, --rate-limit, --ordering, --header,"
                    " --clear-headers, --asymmetric-signing or --filter"
                )
        else:
            changes = {"active": action == "enable"}
        updated = client.call("PATCH", path, changes)
        return _out(opts, updated, lambda: webhook_fields(updated))
    if action == "filter-preview":
        body = {"filter": opts.filter, "days": opts.days}
        body |= {k: getattr(opts, k) for k in ("limit", "cursor") if getattr(opts, k) is not None}
        answer = client.call("POST", f"{path}/filter-preview", body)
        return _out(opts, answer, lambda: filter_preview_text(answer))
    if action == "notify-email":
        account = (
            client.call("GET", "/v1/account")
            if opts.address is None
            else client.call("PATCH", "/v1/account", {"notification_email": opts.address})
        )
        return _out(opts, account, lambda: _notify_line(account))
    if action == "notify-email-confirm":
        account = client.call("POST", "/v1/account/notification-email/confirm", {"code": opts.code})
        return _out(opts, account, lambda: _notify_line(account))
    if action == "delete":
        client.call("DELETE", path)
        return json.dumps({"deleted": wid}) if opts.json else f"deleted {wid}"
    if action == "rotate-secret":
        rotated = client.call("POST", f"{path}/rotate-secret")
        return _out(opts, rotated, lambda: webhook_fields(rotated, once))
    if action == "rotate-signing-key":
        rekeyed = client.call("POST", f"{path}/rotate-signing-key")
        return _out(opts, rekeyed, lambda: webhook_fields(rekeyed))
    if action == "test":
        result = client.call("POST", f"{path}/test", {"event_type": opts.event_type} if opts.event_type else {})
        verdict = "delivered" if result["ok"] else "failed"
        return _out(
            opts,
            result,
            lambda: fields(
                [
                    ("result", f"{verdict}: {status_of(result)} in {result['response_ms']} ms"),
                    ("event", f"{result['event_id']} ({result['event_type']})"),
                    ("attempt", result["attempt_id"]),
                    ("response", result["response_excerpt"][:200]),
                ]
            ),
        )
    if action == "logs":
        query = {"limit": opts.limit}
        for name in ("event_type", "outcome", "since", "cursor"):
            if getattr(opts, name):
                query[name] = getattr(opts, name)
        page = client.call("GET", f"{path}/deliveries", query=query)
        rows = [
            (
                r["attempted_at"],
                r["event_type"] + (" (test)" if r["test"] else ""),
                r["event_id"],
                r["attempt"],
                status_of(r),
                "" if r["response_ms"] is None else f"{r['response_ms']} ms",
                r["attempt_id"],
            )
            for r in page["data"]
        ]
        headers = ["time", "type", "event", "attempt", "status", "response", "attempt id"]

        def render() -> str:
            text = table(headers, rows) if rows else "no deliveries"
            return text + (f"\nmore: --cursor {page['next_cursor']}" if page["next_cursor"] else "")

        return _out(opts, page, render)
    if action == "redeliver":
        queued = client.call("POST", f"/v1/deliveries/{urllib.parse.quote(opts.attempt_id, safe='')}/redeliver")
        return _out(opts, queued, lambda: f"queued event {queued['event_id']} for {queued['webhook_id']}")
    if action == "recover":
        recovered = client.call("POST", f"{path}/recover", {"since": opts.since} if opts.since else {})
        return _out(opts, recovered, lambda: f"queued {recovered['redriven']} dead letter(s) of {wid} again")
    if action == "replay":
        wanted: dict[str, Any] = {"since": opts.since, "only_failed": opts.only_failed, "dry_run": opts.dry_run}
        if opts.until:
            wanted["until"] = opts.until
        if opts.event_types:
            wanted["event_types"] = opts.event_types
        answer = client.call("POST", f"{path}/replay", wanted)
        if opts.dry_run:
            return _out(opts, answer, lambda: _preview_text(answer))
        return _out(opts, answer, lambda: _replay_text(answer))
    if action == "replay-status":
        shown = client.call("GET", f"{path}/replays/{urllib.parse.quote(opts.replay_id, safe='')}")
        return _out(opts, shown, lambda: _replay_text(shown))
    raise CliError(f"unknown action {action}")  # pragma: no cover - argparse restricts the choices


def filter_preview_text(page: dict[str, Any]) -> str:
    """The counts, a sample of each kind, and how to go on when the page did not reach the range's end."""
    lines = [
        f"since {page['since']}: read {page['scanned']} stored events ({page['other_types']} of other types)",
        f"  sent: {page['matched']}   left out: {page['not_matched']}   could not be evaluated: {page['errored']}",
    ]
    for kind, label in (("matched", "sent"), ("not_matched", "left out"), ("errored", "not evaluated")):
        for sample in page["samples"][kind][:1]:
            why = f": {sample['error']}" if sample.get("error") else ""
            lines.append(f"  e.g. {label}: {sample['event_id']} ({sample['event_type']}){why}")
    if page["cut_short"]:
        lines.append("  the scan stopped at its time limit; go on with --cursor " + page["next_cursor"])
    elif page["next_cursor"]:
        lines.append("  more stored events; go on with --cursor " + page["next_cursor"])
    return "\n".join(lines)


def _preview_text(preview: dict[str, Any]) -> str:
    lines = [f"would replay {preview['count']} event(s) from {preview['since']} until {preview['until']}"]
    for end in ("first", "last"):
        if preview[end]:
            ref = preview[end]
            lines.append(f"{end}: {ref['event_id']} ({ref['event_type']}) at {ref['first_attempted_at']}")
    return "\n".join(lines)


def _replay_text(replay: dict[str, Any]) -> str:
    return fields(
        [
            ("replay", f"{replay['id']} ({replay['state']})"),
            ("range", f"{replay['since']} .. {replay['until']}"),
            (
                "progress",
                f"{replay['queued']}/{replay['total']} queued, {replay['delivered']} delivered, "
                f"{replay['failed']} failed ({replay['dead']} dead-lettered)",
            ),
        ]
    )


def _out(opts: argparse.Namespace, data: Any, render: Any) -> str:
    return json.dumps(data, indent=2) if opts.json else str(render())


def main(args: argparse.Namespace) -> int:
    """`hookfleet webhooks ...`."""
    return _serve(build_parser().parse_args(args.rest), run)


def events_main(args: argparse.Namespace) -> int:
    """`hookfleet events ...`."""
    return _serve(build_events_parser().parse_args(args.rest), run_events)


def _serve(opts: argparse.Namespace, action: Any) -> int:
    key = os.environ.get("HOOKFLEET_API_KEY", "")
    if not key:
        raise CliError("set HOOKFLEET_API_KEY to an API key (from `hookfleet accounts create`)")
    client = ApiClient(os.environ.get("HOOKFLEET_API_URL", DEFAULT_URL), key)
    print(action(opts, client))
    sys.stdout.flush()
    return 0


# ------------------------------------------------------------------------------------------ events


def build_events_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hookfleet events", description="Where events went, through the API.")
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    sub = parser.add_subparsers(dest="action", required=True, metavar="<action>", parser_class=_Parser)
    show = sub.add_parser("show", parents=[common], help="an event and every webhook it went to, attempt by attempt")
    show.add_argument("event_id", help="event id (evt_...)")
    search = sub.add_parser("search", parents=[common], help="the delivery log of every webhook, newest first")
    search.add_argument("--event", dest="event_id", help="only this event (evt_...)")
    search.add_argument("--event-type")
    search.add_argument("--outcome", help="success, http_error, timeout, connection_error, tls_error, blocked")
    search.add_argument("--status", help="HTTP status, e.g. 503")
    search.add_argument("--since", help="RFC 3339 time, e.g. 2026-01-31T12:00:00Z")
    search.add_argument("--until", help="RFC 3339 time: only attempts before it")
    search.add_argument("--limit", default="20")
    search.add_argument("--cursor", help="next_cursor of the previous page")
    return parser


STATES = {
    "delivered": "delivered",
    "pending": "pending: a retry, redrive or replay is coming",
    "dead_lettered": "dead-lettered (Recover sends it again)",
    "disabled": "the receiver answered 410 Gone: webhook switched off",
    "dropped": "dropped: the webhook was off, deleted or unsubscribed",
    "failed": "failed",
}


def run_events(opts: argparse.Namespace, client: ApiClient) -> str:
    if opts.action == "show":
        shown = client.call("GET", f"/v1/events/{urllib.parse.quote(opts.event_id, safe='')}")
        return _out(opts, shown, lambda: event_text(shown))
    query = {"limit": opts.limit}
    for name in ("event_id", "event_type", "outcome", "status", "since", "until", "cursor"):
        if getattr(opts, name):
            query[name] = getattr(opts, name)
    page = client.call("GET", "/v1/deliveries", query=query)
    rows = [
        (
            r["attempted_at"],
            r["webhook_id"],
            r["event_type"],
            r["event_id"],
            r["attempt"],
            status_of(r),
            "" if r["response_ms"] is None else f"{r['response_ms']} ms",
        )
        for r in page["data"]
    ]

    def render() -> str:
        text = table(["time", "webhook", "type", "event", "attempt", "status", "response"], rows) if rows else "none"
        return text + (f"\nmore: --cursor {page['next_cursor']}" if page["next_cursor"] else "")

    return _out(opts, page, render)


def event_text(event: dict[str, Any]) -> str:
    """The event, then per webhook what became of it and its attempts, oldest first."""
    payload = "kept" if event["payload"] is not None else "past the retention (no longer stored)"
    lines = [
        fields(
            [
                ("event", f"{event['event_id']} ({event['event_type']})"),
                ("created", event["created_at"] or "unknown"),
                ("payload", payload),
                ("webhooks", len(event["webhooks"])),
            ]
        )
    ]
    for hook in event["webhooks"]:
        name = hook["webhook_name"] or "(deleted)"
        lines.append(f"\n{hook['webhook_id']}  {name}: {STATES.get(hook['state'], hook['state'])}")
        rows = [
            (
                a["attempted_at"],
                a["attempt"],
                status_of(a),
                "" if a["response_ms"] is None else f"{a['response_ms']} ms",
                a["next_step"] + (f" (replay {a['replay']})" if a["replay"] else "") + (" (test)" if a["test"] else ""),
            )
            for a in hook["attempts"]
        ]
        if rows:
            lines.append(table(["time", "attempt", "status", "response", "then"], rows))
        if hook["dead_letter"]:
            letter = hook["dead_letter"]
            redriven = f", redriven {letter['redriven_at']}" if letter["redriven_at"] else ""
            lines.append(f"dead letter since {letter['dead_at']} ({letter['last_error'] or 'failed'}){redriven}")
        for replay in hook["replays"]:
            lines.append(f"replay {replay['replay_id']}: queued {replay['queued_at'] or 'not yet'}")
    if event["truncated"]:
        lines.append("\n(more attempts than shown: use `hookfleet events search --event ID`)")
    return "\n".join(lines)


def _notify_line(account: dict[str, Any]) -> str:
    address = account["notification_email"]
    if address is None:
        return "notification e-mail: (none)"
    if account.get("notification_email_confirmed"):
        return f"notification e-mail: {address}"
    return (
        f"notification e-mail: {address} (unconfirmed: enter the code mailed to it with"
        " `hookfleet webhooks notify-email-confirm CODE`)"
    )
