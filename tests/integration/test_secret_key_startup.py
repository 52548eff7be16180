"""`hookfleet api` and `hookfleet dispatcher` refuse to start without a key outside the local stack, and
with a key that is not the one the database's secrets are sealed with (real processes, real PostgreSQL)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from hookfleet.secret_keys import verify_against_database
from hookfleet.secretbox import SecretBox, SecretKeyError
from tests.support.fleet import seed_account, seed_webhook
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

HOOKFLEET = str(Path(sys.executable).with_name("hookfleet"))
KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()


def run_role(role: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run a role that is expected to refuse to start; a role that does start is stopped after 20 s."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("HOOKFLEET_")}
    full.update({"HOOKFLEET_HOME": str(tmp_path / "home"), "HOOKFLEET_PORT": str(free_port()), **env})
    return subprocess.run([HOOKFLEET, role], env=full, capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("role", ["api", "dispatcher"])
@pytest.mark.parametrize("key", [None, ""])
def test_without_a_key_outside_the_local_stack_a_role_exits_with_one_line(
    role: str, key: str | None, kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": f"postgresql://hookfleet@127.0.0.1:{free_port()}/hookfleet",  # not the local stack's port
    }
    if key is not None:
        env["HOOKFLEET_SECRET_KEY"] = key
    result = run_role(role, env, tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("hookfleet: error: HOOKFLEET_SECRET_KEY is not set"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "secret.key").exists()


def test_the_first_key_is_recorded_and_another_is_refused(database_url: str) -> None:
    verify_against_database(database_url, SecretBox.from_b64(KEY_A))
    verify_against_database(database_url, SecretBox.from_b64(KEY_A))  # the same key, again: fine
    with pytest.raises(SecretKeyError, match="is not the key this database's webhook secrets are sealed with"):
        verify_against_database(database_url, SecretBox.from_b64(KEY_B))
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM secret_key_check").fetchone() == (1,)


def test_a_database_with_secrets_but_no_check_value_accepts_only_their_key(database_url: str) -> None:
    seed_account(database_url, "acct_1")
    for _ in range(3):
        seed_webhook(database_url, "acct_1", "https://example.com/", ["message.read"], secret_key=KEY_A)
    with pytest.raises(SecretKeyError, match="opens none of the 3 newest webhook secrets"):
        verify_against_database(database_url, SecretBox.from_b64(KEY_B))
    verify_against_database(database_url, SecretBox.from_b64(KEY_A))
    with pytest.raises(SecretKeyError):
        verify_against_database(database_url, SecretBox.from_b64(KEY_B))


@pytest.mark.parametrize("role", ["api", "dispatcher"])
def test_a_role_with_the_wrong_key_exits_at_startup(
    role: str, database_url: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    verify_against_database(database_url, SecretBox.from_b64(KEY_A))  # the fleet's key
    result = run_role(role, {**fleet_env, "HOOKFLEET_SECRET_KEY": KEY_B}, tmp_path)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("hookfleet: error: HOOKFLEET_SECRET_KEY is not the key this database's"), result.stderr
    assert "Traceback" not in result.stderr
