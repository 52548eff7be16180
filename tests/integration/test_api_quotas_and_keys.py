"""Per-account quotas (429 with Retry-After), registration DNS in its own bounded pool, and API keys
(create, list with last use, revoke) through the API, the CLI, and across two real `hookfleet api`
processes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from api.accounts import create_account
from tests.support.api_client import SECRET_KEY, RunningApi, api_settings
from tests.support.ports import free_port
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

HOOKFLEET = str(Path(sys.executable).with_name("hookfleet"))
NEW = {"name": "CRM Sync", "url": "https://localhost:9/hooks", "events": ["message.read"]}


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str, ca_bundle: str) -> AsyncIterator[RunningApi]:
    settings = api_settings(
        database_url,
        kafka_bootstrap,
        ca_bundle,
        creates_per_minute=4,
        tests_per_minute=2,
        max_webhooks_per_account=3,
        max_api_keys_per_account=3,
        dns_workers=2,
    )
    async with RunningApi(settings) as running:
        yield running


def _retry_after(reply: Any) -> int:
    value = int(reply.headers["Retry-After"])
    assert 1 <= value <= 60
    return value


# ------------------------------------------------------------------------------------------ quotas


async def test_webhooks_per_account_then_creates_per_minute_are_429(api: RunningApi, key: str) -> None:
    for _ in range(3):
        assert (await api.call("POST", "/v1/webhooks", key, NEW)).status == 201
    full = await api.call("POST", "/v1/webhooks", key, NEW)  # the 4th create: over the webhook count
    assert full.status == 429 and full.error["code"] == "quota_exceeded", full.body
    assert "the limit is 3" in full.error["message"]
    _retry_after(full)
    other_key = api.account("Other", "acct_b")[1]  # another account is not affected
    assert (await api.call("POST", "/v1/webhooks", other_key, NEW)).status == 201
    webhook_id = (await api.call("GET", "/v1/webhooks", key)).body["data"][0]["id"]
    assert (await api.call("DELETE", f"/v1/webhooks/{webhook_id}", key)).status == 204
    rate = await api.call("POST", "/v1/webhooks", key, NEW)  # room again, but this is the 5th create this minute
    assert rate.status == 429 and "creates per minute" in rate.error["message"], rate.body
    _retry_after(rate)


async def test_test_deliveries_per_minute_are_429(api: RunningApi, key: str, receiver: HttpsReceiver) -> None:
    created = await api.call("POST", "/v1/webhooks", key, {**NEW, "url": receiver.expect("/q")})
    path = f"/v1/webhooks/{created.body['id']}/test"
    assert (await api.call("POST", path, key)).status == 200
    assert (await api.call("POST", path, key)).status == 200
    third = await api.call("POST", path, key)
    assert third.status == 429 and "Test deliveries per minute" in third.error["message"]
    _retry_after(third)
    assert len(receiver.received) == 2


async def test_slow_dns_at_registration_does_not_stall_other_requests(
    api: RunningApi, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo
    slow_started: list[float] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example":
            slow_started.append(time.monotonic())
            time.sleep(3.0)  # the slow resolver is the scenario
            raise socket.gaierror(socket.EAI_NONAME, "no such host")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    created = await api.call("POST", "/v1/webhooks", key, NEW)
    assert created.status == 201
    slow = {**NEW, "url": "https://slow.example/x"}
    other_key = api.account("Other", "acct_b")[1]
    keys = [key, other_key, api.account("Third", "acct_c")[1], api.account("Fourth", "acct_d")[1]]
    registrations = [asyncio.create_task(api.call("POST", "/v1/webhooks", k, slow)) for k in keys * 2]
    await wait_until_async(lambda: len(slow_started) >= 2, 10, "two slow lookups running")
    # While 2 lookups run and 6 wait, requests that use the loop's default executor answer at once.
    started = time.monotonic()
    recovered = await api.call("POST", f"/v1/webhooks/{created.body['id']}/recover", key)
    listed = await api.call("GET", "/v1/webhooks", key)
    elapsed = time.monotonic() - started
    assert recovered.status == 202 and listed.status == 200
    assert elapsed < 2.0, f"other requests waited {elapsed:.1f}s behind slow DNS (a lookup takes 3 s)"
    replies = await asyncio.gather(*registrations)
    statuses = sorted(reply.status for reply in replies)
    assert set(statuses) <= {422, 503} and 422 in statuses, statuses
    for reply in replies:
        if reply.status == 503:
            assert reply.error["code"] == "busy" and reply.headers["Retry-After"] == "5"


# ------------------------------------------------------------------------------------------ API keys


async def test_keys_are_created_listed_with_last_use_and_revoked(api: RunningApi, key: str) -> None:
    assert (await api.call("GET", "/v1/webhooks", key)).status == 200  # a use of the first key
    created = await api.call("POST", "/v1/api-keys", key, {"label": "ci"})
    assert created.status == 201, created.body
    second = created.body["key"]
    assert second.startswith("hfk_") and created.headers["Location"] == f"/v1/api-keys/{created.body['id']}"
    assert (await api.call("GET", "/v1/webhooks", second)).status == 200
    listed = (await api.call("GET", "/v1/api-keys", second)).body["data"]
    assert [k["label"] for k in listed] == ["default", "ci"]
    assert all(k["last_used_at"] is not None and k["revoked_at"] is None for k in listed)
    assert listed[1]["key"] == f"hfk_****{second[-4:]}" and second not in json.dumps(listed)
    first_id = listed[0]["id"]
    assert (await api.call("DELETE", f"/v1/api-keys/{first_id}", second)).status == 204
    refused = await api.call("GET", "/v1/webhooks", key)
    assert refused.status == 401
    after = (await api.call("GET", "/v1/api-keys", second)).body["data"]
    assert after[0]["revoked_at"] is not None
    last = await api.call("DELETE", f"/v1/api-keys/{created.body['id']}", second)
    assert last.status == 409 and last.error["code"] == "last_api_key"
    assert (await api.call("DELETE", "/v1/api-keys/key_nosuch", second)).status == 404
    other_key = api.account("Other", "acct_b")[1]  # another account's key id is not found
    assert (await api.call("DELETE", f"/v1/api-keys/{created.body['id']}", other_key)).status == 404
    assert (await api.call("POST", "/v1/api-keys", second, {"label": "x\ny"})).status == 422


async def test_active_keys_per_account_are_a_quota(api: RunningApi, key: str) -> None:
    for _ in range(2):
        assert (await api.call("POST", "/v1/api-keys", key)).status == 201
    over = await api.call("POST", "/v1/api-keys", key)
    assert over.status == 429 and "active API keys" in over.error["message"]


def _cli(*argv: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([HOOKFLEET, *argv], env=env, capture_output=True, text=True, timeout=60)


def test_accounts_keys_cli_creates_lists_and_revokes(database_url: str) -> None:
    create_account(database_url, "Acme", "acct_cli")
    made = _cli("accounts", "keys", "create", "acct_cli", "--label", "ci", database_url=database_url)
    assert made.returncode == 0, made.stderr
    key_id = made.stdout.split("key id", 1)[1].split()[0]
    api_key = made.stdout.split("api key", 1)[1].split()[0]
    assert key_id.startswith("key_") and api_key.startswith("hfk_")
    listed = _cli("accounts", "keys", "list", "acct_cli", database_url=database_url)
    assert listed.returncode == 0 and key_id in listed.stdout and f"hfk_****{api_key[-4:]}" in listed.stdout
    assert api_key not in listed.stdout and "never" in listed.stdout
    revoked = _cli("accounts", "keys", "revoke", key_id, database_url=database_url)
    assert revoked.returncode == 0 and f"revoked {key_id} of acct_cli" in revoked.stdout
    again = _cli("accounts", "keys", "list", "acct_cli", database_url=database_url)
    line = next(row for row in again.stdout.splitlines() if row.startswith(key_id))
    assert line.rstrip().endswith("Z")  # the revocation time
    missing = _cli("accounts", "keys", "revoke", "key_nosuch", database_url=database_url)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("hookfleet: error: api key key_nosuch not found")
    unknown = _cli("accounts", "keys", "list", "acct_nosuch", database_url=database_url)
    assert unknown.returncode == 1 and "account acct_nosuch not found" in unknown.stderr


def _status(port: int, method: str, path: str, key: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def two_apis(database_url: str, kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[int, int]]:
    ports = (free_port(), free_port())
    procs = []
    for n, port in enumerate(ports):
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "HOOKFLEET_SECRET_KEY": SECRET_KEY,
            "HOOKFLEET_PORT": str(port),
        }
        log = (tmp_path / f"api{n}.log").open("wb")
        procs.append(subprocess.Popen([HOOKFLEET, "api"], env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for port in ports:
            deadline = time.monotonic() + 30
            while not (_listening(port) and _status(port, "GET", "/healthz", "") == 200):
                assert time.monotonic() < deadline, "hookfleet api did not start"
                time.sleep(0.1)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_revoked_key_is_refused_at_once_by_every_api_process(database_url: str, two_apis: tuple[int, int]) -> None:
    a, b = two_apis
    create_account(database_url, "Acme", "acct_two")
    made = _cli("accounts", "keys", "create", "acct_two", database_url=database_url)
    api_key = made.stdout.split("api key", 1)[1].split()[0]
    key_id = made.stdout.split("key id", 1)[1].split()[0]
    assert _status(a, "GET", "/v1/webhooks", api_key) == 200
    assert _status(b, "GET", "/v1/webhooks", api_key) == 200
    # Revoked through process A's API (with the account's other key) ...
    other = _cli("accounts", "keys", "create", "acct_two", database_url=database_url)
    other_key = other.stdout.split("api key", 1)[1].split()[0]
    assert _status(a, "DELETE", f"/v1/api-keys/{key_id}", other_key) == 204
    # ... process B refuses it on the very next request, and so does A.
    assert _status(b, "GET", "/v1/webhooks", api_key) == 401
    assert _status(a, "GET", "/v1/webhooks", api_key) == 401
    # Revoked by an operator with the CLI: both refuse at once too.
    other_id = other.stdout.split("key id", 1)[1].split()[0]
    assert _cli("accounts", "keys", "revoke", other_id, database_url=database_url).returncode == 0
    assert _status(a, "GET", "/v1/webhooks", other_key) == 401
    assert _status(b, "GET", "/v1/webhooks", other_key) == 401


# ------------------------------------------------------------------------------------------ fairness


async def _until(condition: Any, timeout_s: float) -> None:
    """Wait for `condition` with a deadline; past it, return and let the caller's assertion say what is wrong."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def test_one_account_behind_hanging_dns_cannot_starve_another_accounts_registration(
    database_url: str, kafka_bootstrap: str, ca_bundle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an account whose hosts' DNS hangs (until released), and the default 4 lookup threads
    release, entered, lock = threading.Event(), [0], threading.Lock()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hang.example":
            with lock:
                entered[0] += 1
            release.wait(20)
            raise socket.gaierror(socket.EAI_NONAME, "no such host")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, dns_workers=4)
    async with RunningApi(settings) as api:
        key_a, key_b = api.account("Slow DNS", "acct_a")[1], api.account("Bystander", "acct_b")[1]
        try:
            # When it registers 4 such hosts at once
            hanging = {"name": "Hanging", "url": "https://hang.example/x", "events": ["message.read"]}
            tasks = [asyncio.create_task(api.call("POST", "/v1/webhooks", key_a, hanging)) for _ in range(4)]
            # Then it holds 2 lookups, its other 2 registrations are a 429 at once naming the limit
            await _until(lambda: sum(t.done() for t in tasks) >= 2 and entered[0] >= 2, timeout_s=4.0)
            finished = [t.result() for t in tasks if t.done()]
            assert len(finished) == 2 and entered[0] == 2, [r.body for r in finished]
            for reply in finished:
                assert reply.status == 429 and reply.error["limit"] == "HOOKFLEET_DNS_LOOKUPS_PER_ACCOUNT", reply.body
                assert reply.headers["Retry-After"] == "5"
            # And another account's normal host still registers, without waiting for a slot
            started = time.monotonic()
            created = await api.call("POST", "/v1/webhooks", key_b, NEW)
            assert created.status == 201, created.body
            assert time.monotonic() - started < 2.0
        finally:
            release.set()
        rest = await asyncio.gather(*tasks)
        assert sorted(r.status for r in rest) == [422, 422, 429, 429]


async def test_url_changes_per_minute_are_429_and_other_changes_are_not(
    database_url: str, kafka_bootstrap: str, ca_bundle: str
) -> None:
    settings = api_settings(database_url, kafka_bootstrap, ca_bundle, url_changes_per_minute=3)
    async with RunningApi(settings) as api:
        key = api.account("Acme", "acct_a")[1]
        created = await api.call("POST", "/v1/webhooks", key, NEW)
        assert created.status == 201
        path = f"/v1/webhooks/{created.body['id']}"
        for n in (1, 2):
            assert (await api.call("PATCH", path, key, {"url": f"https://localhost:9/v{n}"})).status == 200
        refused = await api.call("PATCH", path, key, {"url": "https://localhost:9/v3"})
        assert refused.status == 429 and refused.error["limit"] == "HOOKFLEET_URL_CHANGES_PER_MINUTE"
        assert 1 <= _retry_after(refused) <= 60
        assert (await api.call("PATCH", path, key, {"name": "Renamed"})).status == 200
        assert (await api.call("POST", "/v1/webhooks", key, NEW)).status == 429  # a create sets a URL too
        other = api.account("Other", "acct_b")[1]
        assert (await api.call("POST", "/v1/webhooks", other, NEW)).status == 201
