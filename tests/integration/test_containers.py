"""The container path for real: the Dockerfile's image and deploy/docker-compose.yml, run by podman-compose.

deploy/podman/containers.sh builds every image the compose file names (stand-ins where no registry can be
reached; cached by content hash, so a second run only checks hashes), then the fleet from the compose file
users run comes up beside the local stack (host ports moved through the file's variables) and is driven
from outside: an account made with the CLI in the API container, a webhook through the API, events through
Kafka's published port, deliveries to an HTTPS receiver on this host. Grafana has no stand-in (Debian does
not package it): every other service runs. Skipped only when containers cannot be had on this host.

The override file adds only what the test's receiver needs and users' receivers do not: its private CA, and
the compose network's gateway (this host) opened in the SSRF guard.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from hookfleet.kafka import client_config
from schemas.catalog import EventType, sample_data
from tests.support.ports import free_port
from tests.support.receiver import HttpsReceiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "podman" / "containers.sh"
OVERRIDE = Path(__file__).with_name("compose.podman-test.yml")
PROJECT = "hookfleet-ctest"
NETWORK = f"{PROJECT}_default"
SERVICES = ["kafka", "postgres", "setup", "dispatcher", "retry-scheduler", "recorder", "api", "prometheus"]
ROLES = ["dispatcher", "retry-scheduler", "recorder", "api"]
PARTITIONS = 6  # HOOKFLEET_PARTITIONS of the compose file's setup service
UNAVAILABLE = 3  # containers.sh: containers cannot be had on this host


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"
    env["CONTAINERS_CONF"] = str(ROOT / "deploy" / "podman" / "containers.conf")
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):  # the suite's, not the compose fleet's
        env.pop(name, None)
    return env


def _run(*args: str, env: dict[str, str], timeout: float = 300, check: bool = True) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


def _http(url: str, timeout_s: float = 3.0, **kwargs: Any) -> tuple[int, Any]:
    request = urllib.request.Request(url, **kwargs)  # noqa: S310 (http://127.0.0.1 only)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            raw = response.read()
            return response.status, json.loads(raw) if raw[:1] in (b"{", b"[") else raw
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait(what: str, check: Any, timeout_s: float, interval_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, AssertionError, ValueError, KafkaException) as error:
            last = error
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


class Fleet:
    """podman-compose on the compose file users run (+ the test override), under its own project name."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def compose(self, *args: str, timeout: float = 300) -> str:
        return _run(
            "podman-compose",
            "-p",
            PROJECT,
            "-f",
            str(ROOT / "deploy" / "docker-compose.yml"),
            "-f",
            str(OVERRIDE),
            *args,
            env=self.env,
            timeout=timeout,
        )

    def containers(self, service: str | None = None, *, running_only: bool = True) -> list[str]:
        filters = ["--filter", f"label=io.podman.compose.project={PROJECT}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        listed = _run(
            "podman", "ps", *([] if running_only else ["-a"]), *filters, "--format", "{{.Names}}", env=self.env
        )
        return sorted(listed.split())

    def exec(self, container: str, *args: str, timeout: float = 60) -> str:
        return _run("podman", "exec", container, *args, env=self.env, timeout=timeout)

    def logs(self) -> str:
        out = []
        for name in self.containers(running_only=False):
            done = subprocess.run(
                ["podman", "logs", "--tail", "30", name], env=self.env, capture_output=True, text=True
            )
            out.append(f"--- {name}\n{done.stdout[-2500:]}{done.stderr[-2500:]}")
        return "\n".join(out)

    def restarts(self, container: str) -> int:
        return int(_run("podman", "inspect", "--format", "{{.RestartCount}}", container, env=self.env).strip())

    def metrics(self, container: str) -> str:
        return self.exec(
            container,
            "python",
            "-c",
            "import urllib.request as r; print(r.urlopen('http://127.0.0.1:9100/metrics', timeout=5).read().decode())",
        )

    def ready(self, container: str) -> bool:
        code = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/readyz', timeout=3)"
        done = subprocess.run(["podman", "exec", container, "python", "-c", code], env=self.env, capture_output=True)
        return done.returncode == 0


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    if shutil.which("bash") is None:
        pytest.skip("bash is needed for deploy/podman/containers.sh")
    env = _env()
    start = time.monotonic()
    done = subprocess.run([str(SCRIPT), "images"], env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if done.returncode == UNAVAILABLE:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr[-4000:]
    print(f"\ncontainers: images ready in {time.monotonic() - start:.1f} s\n{done.stderr.strip()}")
    env.update(
        HOOKFLEET_KAFKA_PORT=str(free_port()),
        HOOKFLEET_POSTGRES_PORT=str(free_port()),
        HOOKFLEET_API_PORT=str(free_port()),
        HOOKFLEET_PROMETHEUS_PORT=str(free_port()),
    )
    return env


@pytest.fixture(scope="module")
def compose_fleet(
    podman_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Fleet, HttpsReceiver, str]]:
    env = podman_env
    fleet = Fleet(env)
    started = time.monotonic()
    fleet.compose("down", "-v", "--remove-orphans", timeout=180)  # leftovers of an interrupted run
    subprocess.run(["podman", "network", "rm", "-f", NETWORK], env=env, capture_output=True)
    # The compose network first (podman-compose uses it as it finds it): its gateway is this host, where the
    # receiver listens, and the override's settings must not change between `up`s (a change recreates
    # every container).
    _run("podman", "network", "create", "--label", f"io.podman.compose.project={PROJECT}", NETWORK, env=env)
    network = json.loads(_run("podman", "network", "inspect", NETWORK, env=env))[0]
    gateway = network["subnets"][0]["gateway"]
    ca = trustme.CA()
    ca_dir = tmp_path_factory.mktemp("ctest-ca")
    ca.cert_pem.write_to_path(str(ca_dir / "ca.pem"))
    ca_dir.chmod(0o755)  # the roles run as uid 10001
    (ca_dir / "ca.pem").chmod(0o644)
    env.update(HOOKFLEET_TEST_CA_DIR=str(ca_dir), HOOKFLEET_TEST_ALLOW_NETWORK=f"{gateway}/32")
    receiver: HttpsReceiver | None = None
    try:
        fleet.compose("up", "-d", "kafka", "postgres")
        receiver = HttpsReceiver(ca, names=(gateway,), host=gateway).start()  # the gateway exists from now on
        # podman 4.3 neither runs healthchecks nor honours depends_on conditions: poll, run setup, then the rest.
        _wait(
            "postgres ready",
            lambda: "accepting" in fleet.exec(fleet.containers("postgres")[0], "pg_isready", "-U", "hookfleet"),
            90,
        )
        _wait("kafka answers", lambda: _kafka_answers(env), 120)
        fleet.compose("up", "-d", "setup")
        [setup] = fleet.containers("setup", running_only=False)
        exit_code = _run("podman", "wait", setup, env=env, timeout=180).strip()
        assert exit_code == "0", f"setup exited {exit_code}"
        # --no-deps: podman 4.3 cannot start a container whose dependencies have dependencies ("depends on
        # container ... not found in input list"); the order is kept here instead.
        fleet.compose("up", "-d", "--no-deps", *[s for s in SERVICES if s not in ("kafka", "postgres", "setup")])
        try:
            _wait("every role ready", lambda: all(fleet.ready(c) for r in ROLES for c in fleet.containers(r)), 180, 2)
        except AssertionError as exc:
            unready = [c for r in ROLES for c in fleet.containers(r) if not fleet.ready(c)]
            raise AssertionError(f"{exc}; unready: {unready}\n{fleet.logs()}") from None
        _wait("api /healthz", lambda: _http(f"http://127.0.0.1:{env['HOOKFLEET_API_PORT']}/healthz")[0] == 200, 30)
        restarted = {c: fleet.restarts(c) for r in ROLES for c in fleet.containers(r)}
        print(f"containers: restarts while starting {restarted}")
        for container, count in restarted.items():
            if count:
                logs = subprocess.run(["podman", "logs", container], env=env, capture_output=True, text=True)
                print(f"--- {container} (restarted)\n{(logs.stdout + logs.stderr)[-6000:]}")
        # A role that restarted was not just slow: it crashed (a librdkafka abort in the broker-lag reader
        # once did this to the recorder at every start; the restart policy hid it).
        assert not any(restarted.values()), f"roles restarted while starting: {restarted}"
        print(f"containers: fleet up and ready in {time.monotonic() - started:.1f} s")
        yield fleet, receiver, gateway
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        if receiver is not None:
            receiver.stop()
        fleet.compose("down", "-v", "--remove-orphans", timeout=300)


def _kafka_answers(env: dict[str, str]) -> bool:
    admin = AdminClient(client_config(f"127.0.0.1:{env['HOOKFLEET_KAFKA_PORT']}"))
    admin.list_topics(timeout=3)
    return True


def test_the_compose_fleet_delivers_retries_scales_and_goes_away(
    podman_env: dict[str, str], compose_fleet: tuple[Fleet, HttpsReceiver, str]
) -> None:
    env = podman_env
    compose, receiver, gateway = compose_fleet
    try:
        _deliver_retry_scale(env, compose, receiver, gateway)
    except BaseException:
        print(compose.logs())
        raise


def _deliver_retry_scale(env: dict[str, str], compose: Fleet, receiver: HttpsReceiver, gateway: str) -> None:
    api = f"http://127.0.0.1:{env['HOOKFLEET_API_PORT']}"
    started = time.monotonic()

    # An account, made the way an operator makes one: the CLI inside the API's container.
    account_id = f"acct_{uuid.uuid4().hex[:8]}"
    out = compose.exec(compose.containers("api")[0], "hookfleet", "accounts", "create", "Acme", "--id", account_id)
    key = next(line.split()[-1] for line in out.splitlines() if line.startswith("api key"))
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def webhook(path: str, statuses: list[int]) -> dict[str, Any]:
        body = {"name": path, "url": f"https://{gateway}:{receiver.port}{path}", "events": ["contact.created"]}
        status, created = _http(f"{api}/v1/webhooks", data=json.dumps(body).encode(), headers=auth, method="POST")
        assert status == 201, created
        receiver.expect(path, secret=created["secret"], statuses=statuses)
        return dict(created)

    ok = webhook("/ok", [200])
    flaky = webhook("/flaky", [500, 200])

    # Events through Kafka's published port, with the host's CLI: the broker advertises that port.
    events = 3
    lines = "".join(
        json.dumps(
            {"account_id": account_id, "type": "contact.created", "data": sample_data(EventType.CONTACT_CREATED)}
        )
        + "\n"
        for _ in range(events)
    )
    published = subprocess.run(
        ["hookfleet", "publish", "--file", "-"],
        input=lines,
        env={**env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{env['HOOKFLEET_KAFKA_PORT']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert published.returncode == 0, published.stderr

    # Signed deliveries to both webhooks; /flaky answered 500 once, so one event comes again as attempt 2.
    _wait("every event at /ok", lambda: len(receiver.at("/ok")) >= events, 60, 0.2)
    _wait("a retry at /flaky", lambda: any(r.attempt == 2 for r in receiver.at("/flaky")), 60, 0.5)
    for got in receiver.at("/ok") + receiver.at("/flaky"):
        assert got.signature_ok is True, got.headers
    assert len({r.event_id for r in receiver.at("/ok")}) == events
    retried = next(r for r in receiver.at("/flaky") if r.attempt == 2)
    first = next(r for r in receiver.at("/flaky") if r.attempt == 1 and r.event_id == retried.event_id)
    assert retried.at - first.at >= 9, "the retry came through the 10 s delay topic"
    print(f"containers: deliveries and one retry in {time.monotonic() - started:.1f} s")

    # The recorder's attempt log, through the API: the 500 and the success after it.
    def attempts() -> list[dict[str, Any]]:
        status, body = _http(f"{api}/v1/webhooks/{flaky['id']}/deliveries", headers=auth)
        assert status == 200, body
        rows: list[dict[str, Any]] = body["data"]
        return rows if len(rows) >= events + 1 else []

    rows = _wait("attempts of /flaky in the API", attempts, 60)
    retried_rows = sorted((r for r in rows if r["event_id"] == retried.event_id), key=lambda r: r["attempt"])
    assert [(r["attempt"], r["status_code"]) for r in retried_rows] == [(1, 500), (2, 200)], retried_rows
    status, body = _http(f"{api}/v1/webhooks/{ok['id']}/deliveries", headers=auth)
    assert status == 200 and len(body["data"]) == events, body

    # Every role's /metrics answers, in its container and as Prometheus scrapes it over the compose network.
    for role in ROLES:
        [container] = compose.containers(role)
        assert "hookfleet_" in compose.metrics(container), role
    prometheus = f"http://127.0.0.1:{env['HOOKFLEET_PROMETHEUS_PORT']}"
    assert _http(f"{prometheus}/-/ready")[0] == 200

    def targets_up() -> bool:
        _, body = _http(f"{prometheus}/api/v1/targets")
        up = {t["labels"]["job"] for t in body["data"]["activeTargets"] if t["health"] == "up"}
        return up >= {f"hookfleet-{role}" for role in ROLES}

    _wait("prometheus scrapes every role", targets_up, 60, 2)

    # A second dispatcher: both get partitions of the events and deliveries topics.
    compose.compose("up", "-d", "--no-deps", "--scale", "dispatcher=2", "dispatcher")
    dispatchers = _wait("two dispatchers", lambda: len(compose.containers("dispatcher")) == 2, 60)
    assert dispatchers
    _wait("both dispatchers ready", lambda: all(compose.ready(c) for c in compose.containers("dispatcher")), 120, 2)
    admin = AdminClient(client_config(f"127.0.0.1:{env['HOOKFLEET_KAFKA_PORT']}"))

    def split() -> dict[str, set[tuple[str, int]]]:
        group = admin.describe_consumer_groups(["hookfleet-dispatcher"])["hookfleet-dispatcher"].result(timeout=10)
        by_host: dict[str, set[tuple[str, int]]] = {}
        for member in group.members:
            owned = {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions}
            by_host.setdefault(member.host, set()).update(owned)
        wanted = {(t, p) for t in ("webhooks.events", "webhooks.deliveries") for p in range(PARTITIONS)}
        owned_all = set().union(*by_host.values()) if by_host else set()
        return by_host if len(by_host) == 2 and all(by_host.values()) and owned_all == wanted else {}

    assignment = _wait("partitions split over two dispatchers", split, 90, 1)
    print(f"containers: dispatcher partitions per container {sorted(len(v) for v in assignment.values())}")


def test_down_leaves_nothing_running(
    podman_env: dict[str, str], compose_fleet: tuple[Fleet, HttpsReceiver, str]
) -> None:
    env = podman_env
    compose, _, _ = compose_fleet
    started = time.monotonic()
    # The roles first, while Kafka and PostgreSQL are up: podman-compose 1.6 stops every container at once,
    # and a role whose broker is gone cannot commit its drain (it is killed at its grace period).
    roles = [c for role in ROLES for c in compose.containers(role)]
    _run("podman", "stop", "-t", "35", *roles, env=env, timeout=120)
    exits = {c: _run("podman", "inspect", "--format", "{{.State.ExitCode}}", c, env=env).strip() for c in roles}
    print(f"containers: roles drained and stopped in {time.monotonic() - started:.1f} s, exit codes {exits}")
    assert set(exits.values()) == {"0"}, f"every role exits 0 on SIGTERM: {exits}"
    # --remove-orphans: podman-compose's plain `down` stops only the replicas the file declares, not those
    # added by --scale (hookfleet-ctest_dispatcher_2 kept running, and its volume with it).
    compose.compose("down", "-v", "--remove-orphans", timeout=300)
    print(f"containers: down -v in {time.monotonic() - started:.1f} s")
    assert compose.containers(running_only=False) == []
    label = f"label=io.podman.compose.project={PROJECT}"
    assert _run("podman", "volume", "ls", "--filter", label, "--format", "{{.Name}}", env=env).split() == []
    networks = _run("podman", "network", "ls", "--format", "{{.Name}}", env=env).split()
    assert NETWORK not in networks
