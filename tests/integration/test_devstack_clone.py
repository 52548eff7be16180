"""First run anywhere: the local stack's PostgreSQL starts from a checkout inside a 0700 directory the
`postgres` user cannot enter (as `mktemp -d` makes), and a failed start shows pg_ctl's own words.

A second PostgreSQL on a free port, from a copy of deploy/local in such a directory: the shared stack is
left alone."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import stack as devstack
from devstack.stack import DevStackError, Paths
from tests.support.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) or not shutil.which("runuser"),
        reason="needs root and Debian's postgresql (the case is root running from an unreachable directory)",
    ),
]

LOCAL = Path(devstack.__file__).resolve().parent.parent / "deploy" / "local"


@pytest.fixture
def unreachable_clone() -> Iterator[Paths]:
    root = Path(tempfile.mkdtemp(prefix="hookfleet-clone-"))  # 0700, owned by root
    local = root / "checkout" / "deploy" / "local"
    shutil.copytree(LOCAL, local, ignore=shutil.ignore_patterns(".cache"))
    paths = Paths(local)
    blocked = subprocess.call(["runuser", "-u", "postgres", "--", "test", "-x", str(local)], cwd="/")
    assert blocked != 0, "the postgres user must not be able to enter the clone"
    data = devstack.pg_data_dir(paths)
    try:
        yield paths
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(data.parent, ignore_errors=True)


def test_postgres_starts_from_a_clone_in_a_0700_directory(unreachable_clone: Paths) -> None:
    paths = unreachable_clone
    data = devstack.pg_data_dir(paths)
    log = devstack.pg_log_path(paths, data)
    assert not data.is_relative_to(paths.local) and log.parent == data.parent

    # A port taken by something else: pg_ctl's own message is shown, not an empty log tail.
    with socket.create_server(("127.0.0.1", 0)) as busy:
        taken = busy.getsockname()[1]
        with pytest.raises(DevStackError) as failed:
            devstack.postgres_up(paths, port=taken)
    message = str(failed.value)
    assert "pg_ctl said:" in message and "could not start server" in message, message
    assert f"log: {log}" in message and "(no log at" not in message

    port = free_port()
    try:
        devstack.postgres_up(paths, port=port)
        answer = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "hookfleet", "-d", "hookfleet", "-tAc", "SELECT 42"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert answer.stdout.strip() == "42", answer.stderr
        assert log.stat().st_size > 0  # the server could write its log
    finally:
        devstack.postgres_down(paths, port=port)
    assert subprocess.call(["pg_isready", "-h", "127.0.0.1", "-p", str(port), "-q"]) != 0
