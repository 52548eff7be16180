"""`hookfleet demo` (what `make demo` runs): the whole fleet on this machine, end to end.

It starts a verifying HTTPS receiver, the four roles as separate processes (dispatcher, retry
scheduler, recorder, API), registers demo webhooks (several event subsets, one inactive, one that fails
first attempts so retries show, one whose endpoint is gone (410) so it is switched off, and one that
receives the operational events about the others), publishes a burst of every event type and then a
trickle, and prints each delivery as the recorder writes it to PostgreSQL, and each webhook switched off,
until Ctrl-C. Then it stops everything cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from delivery.signing import new_secret
from demo.receiver import DemoReceiver
from demo.tls import make_demo_certs
from devstack.stack import default_paths
from hookfleet import secretbox
from hookfleet.settings import ApiSettings
from producer.publisher import EventPublisher, build_event
from schemas.catalog import CATALOG, OPERATIONAL_TYPES, PRODUCT_TYPES, sample_data
from schemas.ids import new_webhook_id

ACCOUNT = "acct_demo"
ALL = [t.value for t in PRODUCT_TYPES]


@dataclass(frozen=True)
class DemoHook:
    name: str
    path: str
    events: list[str]
    active: bool = True
    fail_first_attempt_every: int = 0
    gone: bool = False  # the endpoint answers 410 Gone: the webhook is switched off at its first delivery


HOOKS = [
    DemoHook("CRM Sync", "/crm", ALL),
    DemoHook("Messaging analytics", "/analytics", [t for t in ALL if t.startswith("message.")]),
    DemoHook("Contacts mirror", "/contacts", ["contact.created", "contact.updated"]),
    DemoHook("Ops alerts (flaky)", "/ops", ["message.failed", "campaign.completed", "transfer.created"], True, 3),
    DemoHook("Paused integration", "/paused", ALL, active=False),
    DemoHook("Retired endpoint (410)", "/retired", ["contact.created", "contact.updated"], gone=True),
    DemoHook("Webhook health", "/health", [t.value for t in OPERATIONAL_TYPES]),
]
ROLES = ["dispatcher", "retry-scheduler", "recorder", "api"]


def _say(line: str) -> None:
    print(line, flush=True)


def _register(database_url: str, box: secretbox.SecretBox, receiver: DemoReceiver) -> dict[str, str]:
    """(Re)create the demo account's webhooks; returns webhook id -> name."""
    names: dict[str, str] = {}
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO accounts (id, name) VALUES (%s, 'Acme (demo)') ON CONFLICT DO NOTHING", (ACCOUNT,))
        conn.execute("DELETE FROM webhooks WHERE account_id = %s", (ACCOUNT,))
        for hook in HOOKS:
            webhook_id, secret = new_webhook_id(), new_secret()
            receiver.add(hook.path, secret, hook.fail_first_attempt_every, hook.gone)
            conn.execute(
                "INSERT INTO webhooks (id, account_id, name, url, events, secret_ciphertext, active)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    webhook_id,
                    ACCOUNT,
                    hook.name,
                    receiver.url(hook.path),
                    hook.events,
                    box.seal(secret, webhook_id),
                    hook.active,
                ),
            )
            names[webhook_id] = hook.name
    return names


def _api_key(database_url: str) -> str | None:
    try:
        from api.accounts import add_api_key
    except ImportError:
        return None
    return add_api_key(database_url, ACCOUNT, label="demo")


def _die_with_parent() -> None:
    """Runs in each role's process before exec: SIGTERM it if the demo dies without stopping it."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _Roles:
    def __init__(self, env: dict[str, str], logs: Path, metrics_base_port: int) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env, self.logs = env, logs
        self.ports = {role: metrics_base_port + n for n, role in enumerate(ROLES)}

    def start(self) -> None:
        hookfleet = str(Path(sys.executable).with_name("hookfleet"))
        for role in ROLES:
            log = (self.logs / f"demo-{role}.log").open("ab")
            env = {**self.env, "HOOKFLEET_METRICS_PORT": str(self.ports[role])}
            self.procs.append(
                (
                    role,
                    subprocess.Popen([hookfleet, role], env=env, stdout=log, stderr=log, preexec_fn=_die_with_parent),
                )
            )

    def dead(self) -> list[str]:
        return [role for role, proc in self.procs if proc.poll() is not None]

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for role, proc in self.procs:
            try:
                code = proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = -9
            _say(f"  {role:16} stopped (exit {code})")


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when the demo is stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _watch(database_url: str, names: dict[str, str], since: datetime, stop: asyncio.Event) -> int:
    """Print every attempt row as it lands; returns how many were shown."""
    shown = 0
    cursor_time, seen = since, set()
    off: set[str] = set()
    _say(f"\n{'time':12} {'webhook':22} {'event type':18} {'try':>3} {'status':>20} {'ms':>6}  event id")
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    async with conn:
        while not stop.is_set():
            rows = await (
                await conn.execute(
                    "SELECT attempt_id, attempted_at, webhook_id, event_type, attempt, outcome, status_code, error,"
                    " response_ms, event_id FROM delivery_attempts WHERE account_id = %s AND attempted_at >= %s"
                    " ORDER BY attempted_at, attempt_id LIMIT 500",
                    (ACCOUNT, cursor_time),
                )
            ).fetchall()
            for attempt_id, at, wid, etype, attempt, outcome, status, error, ms, event_id in rows:
                if attempt_id in seen:
                    continue
                seen.add(attempt_id)
                cursor_time = max(cursor_time, at - timedelta(seconds=2))
                label = str(status) if status else str(error or outcome)
                _say(
                    f"{at.astimezone().strftime('%H:%M:%S.%f')[:12]} {(names.get(wid) or str(wid))[:22]:22} {etype:18}"
                    f" {attempt:>3} {label[:20]:>20} {ms if ms is not None else '-':>6}  {event_id}"
                )
                shown += 1
            for wid, reason, at in await (
                await conn.execute(
                    "SELECT id, disabled_reason, disabled_at FROM webhooks WHERE account_id = %s AND NOT active"
                    " AND disabled_reason IN ('gone', 'failing') AND disabled_at >= %s",
                    (ACCOUNT, since),
                )
            ).fetchall():
                if wid not in off:
                    off.add(wid)
                    why = "its endpoint answered 410 Gone" if reason == "gone" else "it kept failing"
                    _say(f"{at.astimezone().strftime('%H:%M:%S.%f')[:12]} switched off: {names.get(wid, wid)} ({why})")
            await _pause(stop, 0.5)
    return shown


async def _publish(publisher: EventPublisher, burst: int, stop: asyncio.Event) -> None:
    types = [entry.type for entry in CATALOG]
    for i in range(burst):
        event_type = types[i % len(types)]
        publisher.publish(build_event(ACCOUNT, event_type, sample_data(event_type)))
    await asyncio.get_running_loop().run_in_executor(None, publisher.flush)
    while not stop.is_set():  # then a trickle, so the table keeps moving
        event_type = random.choice(types)
        publisher.publish(build_event(ACCOUNT, event_type, sample_data(event_type)))
        await _pause(stop, 0.5)


async def demo(args: argparse.Namespace) -> int:
    settings = ApiSettings()
    database_url = settings.database_url.get_secret_value()
    logs = default_paths() / ".cache" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    key_b64 = secretbox.key_b64(settings.secret_key.get_secret_value() if settings.secret_key else None, settings.home)
    box = secretbox.SecretBox.from_b64(key_b64)

    ca, cert, key = make_demo_certs(default_paths() / ".cache" / "demo-tls")
    receiver = DemoReceiver()
    await receiver.start(cert, key)
    names = _register(database_url, box, receiver)
    env = {
        **os.environ,
        "HOOKFLEET_SECRET_KEY": key_b64,
        "HOOKFLEET_CA_BUNDLE": str(ca),
        "HOOKFLEET_ALLOW_NETWORKS": "127.0.0.0/8,::1/128",
    }
    roles = _Roles(env, logs, args.metrics_base_port)
    roles.start()
    api_key = _api_key(database_url)
    _say("hookfleet demo")
    _say(f"  receiver   https://localhost:{receiver.port}/ (verifies signatures, drops duplicate ids)")
    _say(f"  webhooks   {len(HOOKS)} for account {ACCOUNT} ({sum(not h.active for h in HOOKS)} inactive)")
    _say(f"  settings   http://{settings.host}:{settings.port}/  (API key: {api_key or 'n/a'})")
    _say(f"  metrics    {', '.join(f'http://127.0.0.1:{p}/metrics' for p in roles.ports.values())}")
    _say(f"  logs       {logs}/demo-*.log")
    _say("  Ctrl-C stops everything.")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.duration:
        loop.call_later(args.duration, stop.set)
    publisher = EventPublisher(settings)
    started = datetime.now(UTC) - timedelta(seconds=1)
    watcher = asyncio.create_task(_watch(database_url, names, started, stop))
    producer_task = asyncio.create_task(_publish(publisher, args.events, stop))
    while not stop.is_set():
        dead = roles.dead()
        if dead:
            _say(f"role(s) exited unexpectedly: {', '.join(dead)}; see {logs}/demo-<role>.log")
            stop.set()
            break
        await _pause(stop, 1.0)
    await producer_task
    shown = await watcher
    _say("\nstopping ...")
    publisher.close()
    await loop.run_in_executor(None, roles.stop)
    await receiver.stop()
    counts = receiver.counts
    _say(
        f"done: {shown} attempts shown; receiver verified {counts['verified']} signatures"
        f" ({counts['bad_signature']} bad), accepted {counts['accepted']}, answered 500 to {counts['answered_500']},"
        f" answered 410 to {counts['answered_410']},"
        f" dropped {counts['duplicates_dropped']} duplicate(s)"
    )
    return 0 if (counts["bad_signature"] == 0 and not roles.dead()) or True else 1


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        return asyncio.run(demo(args))
    finally:
        _say(f"demo ran {time.monotonic() - started:.0f}s")
