"""A private hookfleet fleet for one benchmark: its own prefixed topics, its own PostgreSQL schema, role
processes started with `hookfleet <role>`, and everything removed afterwards.

Webhooks are seeded the way the API stores them (secrets sealed with the fleet's key), in one batch:
the fan-out benchmark needs 1,100 of them and one connection per row would take longer than the run.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, TopicPartition

from delivery.signing import new_secret
from hookfleet.db import migrate
from hookfleet.kafka import TopicSpec, delete_topics, ensure_topics
from hookfleet.secretbox import SecretBox
from schemas.catalog import EventType
from schemas.ids import new_webhook_id
from schemas.topics import Topics

PARTITIONS = 6
"""What `hookfleet topics ensure` creates by default (TopicSettings.partitions)."""
HOOKFLEET = str(Path(sys.executable).with_name("hookfleet"))
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process, in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process (librdkafka names its threads `rdk:...`)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended meanwhile
        kind = name.split(":")[0] + ":" + name.split(":")[1].split("/")[0] if name.startswith("rdk:") else name
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return out


class RoleProcess:
    """One `hookfleet <role>` process; output goes to a log file kept for the report."""

    def __init__(self, role: str, env: dict[str, str], log_dir: Path, name: str, prefix: Sequence[str] = ()) -> None:
        self.role = role
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self._terminated = False
        command = [*prefix, "-m", "hookfleet.cli", role] if prefix else [HOOKFLEET, role]
        self.proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not log {needle!r} within {timeout_s:g}s; log: {self.log_path}")

    def terminate(self) -> None:
        """Ask for a graceful stop, once: a second SIGTERM makes a role exit at once."""
        if self.proc.poll() is None and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout_s: float = 60.0) -> int:
        self.terminate()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            self._log.close()


@dataclass
class BenchStack:
    """Topics + schema + role processes of one benchmark scenario. Use as a context manager."""

    bootstrap: str
    database_root_url: str
    ca_bundle: Path
    log_dir: Path
    name: str
    extra_env: dict[str, str] = field(default_factory=dict)
    prefix: str = ""
    schema: str = ""
    roles: list[RoleProcess] = field(default_factory=list)
    secret_key: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())

    def __enter__(self) -> BenchStack:
        token = uuid.uuid4().hex[:8]
        self.prefix = f"bench{token}."
        self.schema = f"bench_{token}"
        ensure_topics(self.bootstrap, [TopicSpec(n, PARTITIONS, 1, {}) for n in self.topics.all()])
        with psycopg.connect(self.database_root_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.schema}")
        migrate(self.database_url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_roles()
        delete_topics(self.bootstrap, self.topics.all())
        with psycopg.connect(self.database_root_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.prefix)

    @property
    def database_url(self) -> str:
        return psycopg.conninfo.make_conninfo(self.database_root_url, options=f"-c search_path={self.schema}")

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "DATABASE_URL": self.database_url,
            "HOOKFLEET_TOPIC_PREFIX": self.prefix,
            "HOOKFLEET_SECRET_KEY": self.secret_key,
            "HOOKFLEET_ALLOW_NETWORKS": "127.0.0.0/8",
            "HOOKFLEET_CA_BUNDLE": str(self.ca_bundle),
            "HOOKFLEET_LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    def start(self, role: str, name: str | None = None, prefix: Sequence[str] = (), **env: str) -> RoleProcess:
        started = RoleProcess(role, {**self.env(), **env}, self.log_dir, f"{self.name}-{name or role}", prefix)
        self.roles.append(started)
        started.wait_log("event=partitions_assigned")
        return started

    def stop_roles(self) -> dict[str, int]:
        codes = {}
        for role in self.roles:
            role.terminate()
        for role in self.roles:
            codes[role.name] = role.stop()
        self.roles = []
        return codes

    # -------------------------------------------------------------------------------- seeding

    def seed(self, webhooks: Iterable[tuple[str, str, Iterable[EventType]]]) -> list[str]:
        """Insert accounts and webhooks (account id, url, event types); returns the webhook ids in order."""
        box = SecretBox.from_b64(self.secret_key)
        rows = []
        accounts = set()
        for account_id, url, events in webhooks:
            webhook_id = new_webhook_id()
            rows.append(
                (webhook_id, account_id, "bench", url, [e.value for e in events], box.seal(new_secret(), webhook_id))
            )
            accounts.add(account_id)
        with psycopg.connect(self.database_url) as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO accounts (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(a, "bench") for a in sorted(accounts)],
            )
            cursor.executemany(
                "INSERT INTO webhooks (id, account_id, name, url, events, secret_ciphertext, active)"
                " VALUES (%s, %s, %s, %s, %s, %s, true)",
                rows,
            )
        return [row[0] for row in rows]

    def topic_messages(self, topic: str) -> int:
        """How many messages a topic holds (sum of its partitions' high watermarks)."""
        probe = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"{self.prefix}probe"})
        try:
            return sum(probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS))
        finally:
            probe.close()

    def attempt_rows(self) -> int:
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM delivery_attempts").fetchone()
        return int(row[0]) if row else 0
