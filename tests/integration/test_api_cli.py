"""`hookfleet accounts create`, `hookfleet webhooks ...` and `hookfleet api` against the real API, database and
a real HTTPS receiver: readable tables by default, JSON with --json, one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api import client_cli
from hookfleet.cli import main as hookfleet_main
from tests.support.api_client import SECRET_KEY, RunningApi
from tests.support.event_log import log_event
from tests.support.fleet import seed_webhook
from tests.support.ports import free_port
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration

HOOKFLEET = str(Path(sys.executable).with_name("hookfleet"))


async def run_cli(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        HOOKFLEET,
        *argv,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class InProcess:
    """`hookfleet webhooks ...` run through the real CLI entry point, in a thread (the API serves on this loop)."""

    def __init__(
        self, api: RunningApi, key: str, capsys: pytest.CaptureFixture[str], command: str = "webhooks"
    ) -> None:
        self.env = {"HOOKFLEET_API_URL": api.base_url, "HOOKFLEET_API_KEY": key}
        self.capsys = capsys
        self.command = command

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            code = await asyncio.to_thread(hookfleet_main, [self.command, *argv])
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    async def json(self, *argv: str) -> Any:
        code, out, err = await self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


async def test_accounts_create_prints_the_account_and_its_key_once(api: RunningApi, database_url: str) -> None:
    code, out, err = await run_cli(
        "accounts", "create", "Acme Inc", "--id", "acct_cli", env={"DATABASE_URL": database_url}
    )
    assert code == 0, err
    key = re.search(r"^api key\s+(hfk_\S+)$", out, re.M)
    assert key is not None and "account  acct_cli" in out
    assert (await api.call("GET", "/v1/webhooks", key.group(1))).status == 200

    again = await run_cli("accounts", "create", "Acme again", "--id", "acct_cli", env={"DATABASE_URL": database_url})
    assert again[0] == 1 and again[2].strip() == "hookfleet: error: account acct_cli already exists; use another --id"
    bad = await run_cli("accounts", "create", "X", "--id", "no spaces allowed", env={"DATABASE_URL": database_url})
    assert bad[0] == 1 and "account id must be" in bad[2] and len(bad[2].strip().splitlines()) == 1


async def test_every_webhooks_action_through_the_cli(
    api: RunningApi, receiver: HttpsReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    _, key = api.account("Acme", "acct_a")
    cli = InProcess(api, key, capsys)

    code, out, _ = await cli(
        "create", "--name", "CRM Sync", "--url", receiver.expect("/cli"), "--events", "message.read"
    )
    assert code == 0
    secret = re.search(r"^secret\s+(whsec_\S+)\s+<- shown only now", out, re.M)
    wid = re.search(r"^id\s+(wh_\w+)$", out, re.M)
    assert secret is not None and wid is not None
    webhook_id = wid.group(1)

    code, out, _ = await cli("list")
    header, row = out.strip().splitlines()
    assert header.split() == ["ID", "NAME", "ACTIVE", "STATUS", "EVENTS", "URL"]
    assert row.startswith(webhook_id) and "CRM Sync" in row and " on " in row and "healthy" in row
    assert secret.group(1) not in out

    shown = await cli.json("show", webhook_id)
    assert shown["secret"] == "whsec_****" + secret.group(1)[-4:]
    assert (await cli.json("disable", webhook_id))["active"] is False
    code, out, _ = await cli("show", webhook_id)
    assert re.search(r"^active\s+no \(switched off by hand, since \d{4}-", out, re.M), out
    assert (await cli.json("enable", webhook_id))["active"] is True
    code, out, _ = await cli("update", webhook_id, "--header", "Authorization: Bearer gw-token-1234567890")
    assert code == 0 and re.search(r"^headers\s+Authorization: \*\*\*\*7890$", out, re.M), out
    assert (await cli.json("update", webhook_id, "--clear-headers"))["headers"] == {}
    code, out, _ = await cli("notify-email", "ops@example.com")
    assert code == 0 and out.strip().startswith("notification e-mail: ops@example.com (unconfirmed: enter the code")
    code, out, err = await cli("notify-email-confirm", "not-the-code")
    assert code != 0 and "not the one mailed" in err, (out, err)
    assert (await cli.json("notify-email"))["notification_email"] == "ops@example.com"
    updated = await cli.json("update", webhook_id, "--name", "CRM v2", "--events", "message.read,contact.created")
    assert updated["name"] == "CRM v2" and updated["events"] == ["contact.created", "message.read"]

    receiver.expect("/cli", secret=secret.group(1))
    code, out, _ = await cli("test", webhook_id, "--event-type", "contact.created")
    assert code == 0 and re.search(r"^result\s+delivered: 200 in \d+ ms$", out, re.M), out
    assert receiver.at("/cli")[0].signature_ok is True

    code, out, _ = await cli("logs", webhook_id)
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["TIME", "TYPE", "EVENT", "ATTEMPT"]
    assert "contact.created (test)" in lines[1] and " 200 " in lines[1]
    assert (await cli.json("logs", webhook_id, "--outcome", "timeout"))["data"] == []

    rotated = await cli.json("rotate-secret", webhook_id)
    assert rotated["secret"] != secret.group(1) and rotated["previous_secret_expires_at"]
    code, out, _ = await cli("delete", webhook_id)
    assert code == 0 and out.strip() == f"deleted {webhook_id}"


async def test_events_show_and_search_through_the_cli(
    api: RunningApi, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account, key = api.account("Acme", "acct_a")
    crm, _ = seed_webhook(database_url, account, "https://127.0.0.1:9/crm", ["message.read"], name="CRM Sync")
    old, _ = seed_webhook(database_url, account, "https://127.0.0.1:9/old", ["message.read"], name="Old ERP")
    event_id = log_event(database_url, account, (crm, old))
    cli = InProcess(api, key, capsys, command="events")

    code, out, err = await cli("show", event_id)
    assert code == 0, err
    assert re.search(rf"^event\s+{event_id} \(message\.read\)$", out, re.M) and re.search(
        r"^payload\s+kept$", out, re.M
    )
    blocks = out.split("\n\n")
    crm_block = next(b for b in blocks if b.startswith(crm))
    old_block = next(b for b in blocks if b.startswith(old))
    assert crm_block.splitlines()[0] == f"{crm}  CRM Sync: delivered"
    assert crm_block.splitlines()[1].split() == ["TIME", "ATTEMPT", "STATUS", "RESPONSE", "THEN"]
    assert [line.split()[1:4] for line in crm_block.splitlines()[2:]] == [["1", "500", "40"], ["2", "200", "41"]]
    assert old_block.splitlines()[0] == f"{old}  Old ERP: dead-lettered (Recover sends it again)"
    assert [line.split()[2] for line in old_block.splitlines()[2:6]] == ["503"] * 4
    assert re.search(r"^dead letter since \S+ \(http 503\)$", old_block, re.M), old_block
    shown = await cli.json("show", event_id)
    assert [w["state"] for w in shown["webhooks"]] == [
        {crm: "delivered", old: "dead_lettered"}[w["webhook_id"]] for w in shown["webhooks"]
    ]

    code, out, _ = await cli("search", "--status", "503", "--limit", "3")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split()[:4] == ["TIME", "WEBHOOK", "TYPE", "EVENT"]
    assert len(lines) == 5 and all(f" {old} " in line and " 503 " in line for line in lines[1:4])
    assert lines[4].startswith("more: --cursor ")
    rest = await cli.json("search", "--status", "503", "--cursor", lines[4].split()[-1])
    assert len(rest["data"]) == 1 and rest["next_cursor"] is None
    assert len((await cli.json("search", "--event", event_id))["data"]) == 6

    code, _, err = await cli("show", "evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W")
    assert code == 1 and err == "hookfleet: error: event evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W not found\n"
    code, _, err = await cli("show", "att_42")
    assert code == 1 and err.startswith("hookfleet: error: event_id must be an event id") and err.count("\n") == 1
    code, _, err = await cli("search", "--status", "999")
    assert code == 1 and err.startswith("hookfleet: error: status: ") and err.count("\n") == 1


async def test_cli_errors_are_one_line(api: RunningApi, capsys: pytest.CaptureFixture[str]) -> None:
    _, key = api.account("Acme", "acct_a")
    cli = InProcess(api, key, capsys)
    code, _, err = await cli("create", "--name", "x", "--url", "http://plain.example", "--events", "message.read")
    assert code == 1 and err == "hookfleet: error: url: webhook url must be https (got http://plain.example)\n"
    code, _, err = await cli("show", "wh_01NOSUCH")
    assert code == 1 and err == "hookfleet: error: webhook wh_01NOSUCH not found\n"
    code, _, err = await cli("update", "wh_01NOSUCH")
    assert code == 1 and "nothing to update" in err

    wrong_key = InProcess(api, "hfk_" + "y" * 43, capsys)
    code, _, err = await wrong_key("list")
    assert code == 1 and err.startswith("hookfleet: error: this API key is not valid") and err.count("\n") == 1

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    nowhere = InProcess(api, key, capsys)
    nowhere.env["HOOKFLEET_API_URL"] = f"http://127.0.0.1:{closed_port}"
    code, _, err = await nowhere("list")
    assert code == 1 and "is not reachable" in err and err.count("\n") == 1

    with pytest.raises(SystemExit) as usage:
        client_cli.build_parser().parse_args(["frobnicate"])
    assert usage.value.code == 2
    code, _, err = await run_cli("webhooks", "list", env={"HOOKFLEET_API_KEY": ""})
    assert (
        code == 1
        and err.strip() == "hookfleet: error: set HOOKFLEET_API_KEY to an API key (from `hookfleet accounts create`)"
    )


async def test_cli_as_a_subprocess_prints_json_for_scripts(api: RunningApi) -> None:
    _, key = api.account("Acme", "acct_a")
    env = {"HOOKFLEET_API_URL": api.base_url, "HOOKFLEET_API_KEY": key}
    code, out, err = await run_cli(
        "webhooks",
        "create",
        "--json",
        "--name",
        "Ops",
        "--url",
        "https://127.0.0.1:9/",
        "--events",
        "message.failed",
        env=env,
    )
    assert code == 0, err
    created = json.loads(out)
    assert created["secret"].startswith("whsec_")
    code, out, _ = await run_cli("webhooks", "list", "--json", env=env)
    assert [w["id"] for w in json.loads(out)["data"]] == [created["id"]]


async def test_hookfleet_api_serves_until_sigterm(database_url: str, kafka_bootstrap: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HOOKFLEET_SECRET_KEY": SECRET_KEY,
        "HOOKFLEET_PORT": str(port),
    }
    proc = await asyncio.create_subprocess_exec(
        HOOKFLEET, "api", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            for _ in range(300):  # the role imports and connects first; a loaded machine can take seconds
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        assert resp.status == 200 and (await resp.json())["status"] == "ok"
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("hookfleet api did not start")
            async with session.get(f"http://127.0.0.1:{port}/v1/webhooks") as resp:
                assert resp.status == 401
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode()
        assert b"event=api_started" in out and b"event=api_stopped" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _status(session: Any, url: str) -> int | None:
    import aiohttp

    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return int(resp.status)
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _wait_status(session: Any, url: str, wanted: int, timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await _status(session, url) == wanted:
            return True
        await asyncio.sleep(0.25)
    return False


async def test_hookfleet_api_with_its_database_down_serves_alive_unready_and_recovers(
    database_url: str, kafka_bootstrap: str
) -> None:
    """A database outage during a rollout must not crash-loop the API: it serves, alive (/livez) and unready
    (/healthz 503), and turns ready by itself when PostgreSQL answers again."""
    import aiohttp

    from tests.support.tcp_proxy import TcpProxy

    info = conninfo_to_dict(database_url)
    with TcpProxy(str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432)))) as proxy:
        proxy.cut()
        port, metrics_port = free_port(), free_port()
        env = {
            "DATABASE_URL": make_conninfo(database_url, host="127.0.0.1", port=proxy.port),
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "HOOKFLEET_SECRET_KEY": SECRET_KEY,
            "HOOKFLEET_PORT": str(port),
            "HOOKFLEET_METRICS_PORT": str(metrics_port),
        }
        proc = await asyncio.create_subprocess_exec(
            HOOKFLEET,
            "api",
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with aiohttp.ClientSession() as session:
                health, livez = f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{metrics_port}/livez"
                assert await _wait_status(session, health, 503, 60), "the API did not serve while its database was down"
                assert await _status(session, livez) == 200
                await asyncio.sleep(3)  # timed scenario: it keeps serving through a 3 s outage
                assert proc.returncode is None, "the API exited while its database was down"
                assert await _status(session, health) == 503 and await _status(session, livez) == 200
                proxy.restore()
                assert await _wait_status(session, health, 200, 90), (
                    "the API did not recover when the database returned"
                )
                assert await _status(session, f"http://127.0.0.1:{port}/v1/webhooks") == 401
            proc.terminate()
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, out.decode()
            assert re.search(rb"event=db_unavailable_at_start database=127\.0\.0\.1:\d+/hookfleet", out), out.decode()
            assert b"Traceback" not in out
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_hookfleet_api_started_during_a_database_outage_still_refuses_a_wrong_key(
    database_url: str, kafka_bootstrap: str
) -> None:
    """The key check waits for the database with the API, but a key that does not open the database's check
    value stops the API with one line once PostgreSQL answers, as it does when the database is up at start."""
    import base64

    import aiohttp

    from hookfleet.secret_keys import verify_against_database
    from hookfleet.secretbox import SecretBox
    from tests.support.tcp_proxy import TcpProxy

    verify_against_database(database_url, SecretBox.from_b64(SECRET_KEY))  # the fleet's key is recorded
    info = conninfo_to_dict(database_url)
    with TcpProxy(str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432)))) as proxy:
        proxy.cut()
        port = free_port()
        env = {
            "DATABASE_URL": make_conninfo(database_url, host="127.0.0.1", port=proxy.port),
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "HOOKFLEET_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),  # not the fleet's key
            "HOOKFLEET_PORT": str(port),
            "HOOKFLEET_METRICS_PORT": "0",
        }
        proc = await asyncio.create_subprocess_exec(
            HOOKFLEET,
            "api",
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with aiohttp.ClientSession() as session:
                health = f"http://127.0.0.1:{port}/healthz"
                assert await _wait_status(session, health, 503, 60), "the API did not serve while its database was down"
                assert proc.returncode is None
                proxy.restore()
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 1, out.decode()
            assert b"event=secret_key_refused" in out, out.decode()
            assert b"Traceback" not in out
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_ed25519_signing_through_the_cli(api: RunningApi, capsys: pytest.CaptureFixture[str]) -> None:
    _, key = api.account("Acme", "acct_a")
    cli = InProcess(api, key, capsys)
    create = ("--name", "Ledger", "--url", "https://localhost:9/ledger", "--events", "message.read")
    code, out, _ = await cli("create", *create, "--asymmetric-signing")
    assert code == 0, out
    public = re.search(r"^public key\s+(whpk_\S+)\s+\(Ed25519: verifies the v1a signatures\)$", out, re.M)
    found = re.search(r"^id\s+(wh_\w+)$", out, re.M)
    assert public is not None and found is not None and "whsk_" not in out
    webhook_id = found.group(1)

    code, out, _ = await cli("rotate-signing-key", webhook_id)
    previous = rf"^previous key\s+{re.escape(public.group(1))}\s+still signs until \d{{4}}-"
    assert code == 0 and re.search(previous, out, re.M), out
    assert (await cli.json("update", webhook_id, "--asymmetric-signing", "off"))["public_key"] is None
    code, out, _ = await cli("show", webhook_id)
    assert code == 0 and "public key" not in out
    switched_on = await cli.json("update", webhook_id, "--asymmetric-signing", "on")
    assert switched_on["public_key"].startswith("whpk_") and switched_on["public_key"] != public.group(1)
