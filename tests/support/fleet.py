"""Run hookfleet roles as real subprocesses (`hookfleet <role>`) against the test's topics and schema,
and seed accounts and webhooks the way the API stores them (sealed secrets)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import psycopg

from delivery.signing import new_secret
from hookfleet.secretbox import SecretBox, seal_headers
from schemas.ids import new_webhook_id

TEST_SECRET_KEY = base64.b64encode(b"k" * 32).decode()
HOOKFLEET = str(Path(sys.executable).with_name("hookfleet"))


class Role:
    """One role process; its combined output goes to a log file printed when a test fails."""

    def __init__(
        self, role: str, env: dict[str, str], log_dir: Path, name: str | None = None, args: Sequence[str] = ()
    ) -> None:
        self.role = role
        self.name = name or role
        self.log_path = log_dir / f"{self.name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [HOOKFLEET, role, *args], env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def terminate(self, timeout_s: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


class Fleet:
    """Starts roles with one shared environment and stops whatever is left at teardown."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.roles: list[Role] = []

    def start(self, role: str, name: str | None = None, args: Sequence[str] = (), **extra_env: str) -> Role:
        started = Role(role, {**self.env, **extra_env}, self.log_dir, name, args)
        self.roles.append(started)
        return started

    def start_dispatcher(self, name: str = "dispatcher", **extra_env: str) -> Role:
        role = self.start("dispatcher", name, **extra_env)
        assert role.wait_log("event=partitions_assigned"), role.log_text()[-3000:]
        return role

    def stop_all(self) -> None:
        for role in self.roles:
            if role.proc.poll() is None:
                role.proc.send_signal(signal.SIGTERM)
        for role in self.roles:
            try:
                role.proc.wait(40)
            except subprocess.TimeoutExpired:
                role.proc.kill()
            role._log.close()

    def logs(self) -> str:
        return "\n".join(f"===== {r.name} =====\n{r.log_text()[-4000:]}" for r in self.roles)


def seed_account(database_url: str, account_id: str, name: str = "Test account") -> str:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO accounts (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (account_id, name))
    return account_id


def seed_webhook(
    database_url: str,
    account_id: str,
    url: str,
    events: Iterable[str],
    active: bool = True,
    name: str = "CRM Sync",
    secret_key: str = TEST_SECRET_KEY,
    rate_limit_per_s: int | None = None,
    ordering: str = "unordered",
    headers: dict[str, str] | None = None,
) -> tuple[str, str]:
    """Insert a webhook the way the API stores it; returns (webhook id, plaintext secret)."""
    webhook_id, secret = new_webhook_id(), new_secret()
    box = SecretBox.from_b64(secret_key)
    sealed = box.seal(secret, webhook_id)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO webhooks (id, account_id, name, url, events, secret_ciphertext, active, rate_limit_per_s,"
            " ordering, headers_ciphertext) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                webhook_id, account_id, name, url, list(events), sealed, active, rate_limit_per_s, ordering,
                seal_headers(box, webhook_id, headers or {}),
            ),
        )  # fmt: skip
    return webhook_id, secret


def set_active(database_url: str, webhook_id: str, active: bool) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE webhooks SET active = %s, updated_at = now() WHERE id = %s", (active, webhook_id))
