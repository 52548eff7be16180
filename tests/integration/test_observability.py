"""The dashboard and the alert rules, proven against a real Prometheus scraping a running fleet.

Every role runs as a `hookfleet <role>` process; Prometheus (Debian's package, our own binary instance on a
free port with private storage) scrapes them with the checked-in scrape config, retargeted at this test's
ports, and evaluates the checked-in alert rules every second. Under a load with successes, retries, dead
letters, a drop and an invalid event, every dashboard panel query must return data, every alert
expression must evaluate, the dead-letter alert must fire, and a role that dies must show as down.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from api.accounts import create_account
from hookfleet.kafka import KafkaProducer
from hookfleet.settings import CommonSettings
from producer.publisher import EventPublisher, build_event
from schemas.catalog import PRODUCT_TYPES, EventType, sample_data
from schemas.topics import Topics
from tests.support.fleet import Fleet, Role, seed_webhook, set_active
from tests.support.kafka_proxy import KafkaProxy
from tests.support.ports import free_port, http_status
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "hookfleet-fleet.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ROLES = ("dispatcher", "retry-scheduler", "recorder", "api")
RATE_WINDOW = "5m"  # what Grafana's $__rate_interval becomes here: the whole test fits in it
WAVES, WAVE_GAP_S = 3, 1.5  # events arrive over several scrapes, so every rate() sees an increase
FAILING_TYPES = (EventType.MESSAGE_FAILED, EventType.CONTACT_UPDATED)


def _rfc3339_s(stamp: str) -> float:
    """Prometheus' RFC 3339 timestamps (nanoseconds, Z) as unix seconds."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float(f"0.{fraction or 0}")



def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - http://127.0.0.1 built here
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Prometheus:
    """Our own Prometheus process: private config, storage and port, so a packaged service never matters."""

    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            pytest.fail(
                "prometheus is not installed: `make test` installs Debian's package (apt-get install prometheus)"
            )
        self.port = free_port()
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(self.test_config(targets)))
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: http_ok(f"{self.url}/-/ready") or self.proc.poll() is not None, 30, "prometheus ready")
        assert self.proc.poll() is None, self.log_path.read_text()

    @staticmethod
    def test_config(targets: dict[str, int]) -> dict[str, Any]:
        """The checked-in scrape config with each job pointed at this test's process, scraped every second."""
        config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
        jobs = {job["job_name"] for job in config["scrape_configs"]}
        assert jobs == {f"hookfleet-{role}" for role in targets}, jobs
        for job in config["scrape_configs"]:
            job.pop("dns_sd_configs", None)
            job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name'].removeprefix('hookfleet-')]}"]}]
        config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(ALERTS)]
        return config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:  # noqa: S310
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422 carry the parse or evaluation error
            body = json.loads(exc.read())
        assert body["status"] == "success", f"{path} {params}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets_up(self) -> set[str]:
        return {t["labels"]["job"] for t in self.api("targets")["activeTargets"] if t["health"] == "up"}

    def alerts(self) -> list[tuple[str, str, str]]:
        """(alert name, job label or '', state: pending or firing) of every active alert."""
        return [
            (a["labels"]["alertname"], a["labels"].get("job", ""), a["state"]) for a in self.api("alerts")["alerts"]
        ]

    def value(self, expr: str) -> float:
        (sample,) = self.query(expr)
        return float(sample["value"][1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", RATE_WINDOW)
            assert "$" not in expr, f"panel {panel['title']!r}: unknown Grafana variable in {expr}"
            queries.append((f"{panel['title']} [{target['refId']}]", expr))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"] if "alert" in rule
    ]


def recording_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"] if "record" in rule
    ]


OWN_SERIES = re.compile(r"\bhookfleet[_:][a-z0-9_:]+")
BORN_AT_FIRST_ERROR = {"hookfleet_produce_errors_total"}
"""Labelled by topic, so no series exists until a produce fails (none does in this test)."""


JUDGED_AFTER_MINUTES = {
    "hookfleet:healthy_webhook_minutes_bad:ratio_rate5m",
    "hookfleet:healthy_webhook_minutes_bad:ratio_rate1h",
}
"""The success SLI's ratio: a minute is judged once it ended, for webhooks with a success before it (two minutes
at least, longer than this test); its counters (hookfleet_healthy_webhook_minutes_total) exist from the start."""


def needs_data(expr: str) -> bool:
    """Queries of our own series must return data here; cluster series (kube-state-metrics, cAdvisor) cannot."""
    return bool(set(OWN_SERIES.findall(expr)) - BORN_AT_FIRST_ERROR - JUDGED_AFTER_MINUTES)


def has_value(result: list[dict[str, Any]]) -> bool:
    """At least one series with a number (histogram_quantile over no observations yields NaN)."""
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def call_api(api_url: str, api_key: str) -> None:
    """Two API requests: a customer listing webhooks, and the public catalog (http://127.0.0.1 only)."""
    auth = {"Authorization": f"Bearer {api_key}"}
    for path, headers in (("/v1/webhooks", auth), ("/v1/event-types", {})):
        request = urllib.request.Request(f"{api_url}{path}", headers=headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            assert resp.status == 200, path


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Path:
    path = tmp_path / "prometheus"
    path.mkdir()
    return path


@pytest.fixture
def role_ports() -> dict[str, int]:
    return {role: free_port() for role in ROLES}


@pytest.fixture
def prometheus(
    prometheus_dir: Path, role_ports: dict[str, int], request: pytest.FixtureRequest
) -> Iterator[Prometheus]:
    server = Prometheus(prometheus_dir, role_ports)
    yield server
    server.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"===== prometheus =====\n{server.log_path.read_text()[-4000:]}")


def test_every_panel_and_alert_evaluates_against_a_live_fleet(
    fleet: Fleet,
    receiver: HttpsReceiver,
    prometheus: Prometheus,
    role_ports: dict[str, int],
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
) -> None:
    account, api_key = create_account(database_url, "Observability test")
    all_types = [t.value for t in PRODUCT_TYPES]
    _, ok_secret = seed_webhook(database_url, account, receiver.url("/ok"), all_types, name="Healthy")
    _, broken_secret = seed_webhook(
        database_url, account, receiver.url("/broken"), [t.value for t in FAILING_TYPES], name="Broken"
    )
    dropped_id, dropped_secret = seed_webhook(
        database_url, account, receiver.url("/disabled-later"), [EventType.TRANSFER_CREATED.value], name="Flaky"
    )
    receiver.expect("/ok", secret=ok_secret)
    receiver.expect("/broken", secret=broken_secret, statuses=[500])
    receiver.expect("/disabled-later", secret=dropped_secret, statuses=[503])

    api_port = free_port()
    fleet.start_dispatcher(HOOKFLEET_METRICS_PORT=str(role_ports["dispatcher"]), HOOKFLEET_RETRY_DELAYS_S="[1,1,1]")
    fleet.start("retry-scheduler", HOOKFLEET_METRICS_PORT=str(role_ports["retry-scheduler"]))
    fleet.start("recorder", HOOKFLEET_METRICS_PORT=str(role_ports["recorder"]))
    api = fleet.start(
        "api", HOOKFLEET_METRICS_PORT=str(role_ports["api"]), HOOKFLEET_HOST="127.0.0.1", HOOKFLEET_PORT=str(api_port)
    )
    for role in ROLES:
        health = f"http://127.0.0.1:{role_ports[role]}/healthz"
        wait_until(lambda url=health: http_ok(url), 45, f"{role} ready")  # type: ignore[misc]
    api_url = f"http://127.0.0.1:{api_port}"
    wait_until(lambda: http_ok(f"{api_url}/healthz"), 30, "api serving")
    # Prometheus applies new targets at most every 5 s: the load starts once every role has been scraped,
    # so each counter's rise is seen from its start.
    wait_until(lambda: prometheus.targets_up() == {f"hookfleet-{r}" for r in ROLES}, 30, "every role scraped")

    # Load: successes, failures that retry and dead-letter, one retry dropped (its webhook is disabled
    # while it waits), one invalid event, and a few API requests.
    publisher = EventPublisher(CommonSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topics.prefix))
    try:
        for wave in range(WAVES):
            for event_type in PRODUCT_TYPES:
                if event_type is EventType.TRANSFER_CREATED and wave > 0:
                    continue  # exactly one delivery to the webhook that gets disabled
                publisher.publish_and_wait(build_event(account, event_type, sample_data(event_type)))
            call_api(api_url, api_key)
            if wave == 0:
                assert receiver.wait_for(lambda: len(receiver.at("/disabled-later")) >= 1, timeout_s=20)
                set_active(database_url, dropped_id, False)
            time.sleep(WAVE_GAP_S)  # timed scenario: the waves span several scrapes
    finally:
        publisher.close()
    producer = KafkaProducer(kafka_bootstrap)
    producer.send_sync(topics.events, b"not an event", key=account)
    producer.close()

    events_per_type = WAVES
    assert receiver.wait_for(
        lambda: len(receiver.at("/broken")) >= 4 * events_per_type * len(FAILING_TYPES), timeout_s=40
    ), f"/broken got {len(receiver.at('/broken'))} attempts"
    assert len(receiver.at("/ok")) >= WAVES * len(PRODUCT_TYPES) - (WAVES - 1)

    # Every panel query of our own series returns data once the scrapes (1 s), the lag statistics (every
    # 5 s), the recorder's broker-side lag reads and outcome gauges (every 15 s) are in.
    queries = [(title, expr) for title, expr in panel_queries() if needs_data(expr)]
    empty: list[str] = []

    def all_panels_have_data() -> bool:
        empty[:] = [title for title, expr in queries if not has_value(prometheus.query(expr))]
        return not empty

    try:
        wait_until(all_panels_have_data, 60, "every panel query to return data", interval_s=1.0)
    except AssertionError:
        detail = {title: prometheus.query(dict(queries)[title])[:3] for title in empty}
        raise AssertionError(f"panel queries without data: {detail}") from None

    # Every alert expression parses and evaluates; Prometheus loaded every rule and evaluates it cleanly.
    for rule in alert_rules() + recording_rules():
        prometheus.query(rule["expr"])
    loaded = {r["name"]: r for g in prometheus.api("rules")["groups"] for r in g["rules"]}
    assert set(loaded) == {rule["alert"] for rule in alert_rules()} | {rule["record"] for rule in recording_rules()}
    for name, rule in loaded.items():
        assert rule["health"] in ("ok", "unknown") and not rule.get("lastError"), (name, rule.get("lastError"))

    # The numbers are the load's: each failing event dead-lettered once, one webhook failing, one drop.
    dead = WAVES * len(FAILING_TYPES)
    wait_until(lambda: prometheus.value("sum(hookfleet_dead_letters_total)") >= dead, 20, f"{dead} dead letters")
    wait_until(lambda: prometheus.value("max(hookfleet_failing_webhooks)") == 1, 20, "failing webhooks gauge")
    assert prometheus.value("sum(hookfleet_dead_letters_total)") == dead
    assert prometheus.value("sum(hookfleet_deliveries_dropped_total)") == 1
    assert prometheus.value('sum(hookfleet_retries_scheduled_total{stage="10s"})') >= dead + 1
    assert prometheus.value("sum(hookfleet_invalid_events_total)") >= 1

    # Every rule group evaluated after the dead letters were counted: what is active now judged them.
    counted_at = time.time()

    def rules_evaluated_since_counted() -> bool:
        groups = prometheus.api("rules")["groups"]
        return all(_rfc3339_s(g["lastEvaluation"]) > counted_at for g in groups)

    wait_until(rules_evaluated_since_counted, 30, "every rule group evaluated after the dead letters")
    active = prometheus.alerts()
    # One webhook of three failing is one customer, below the fleet-wide minimum of 3 accounts: no page, and
    # no ticket either (any dead letter or failing webhook is always true of a multi-tenant fleet).
    quiet_alerts = (
        "HookfleetRoleDown",
        "HookfleetInstanceDown",
        "HookfleetRoleNotReady",
        "HookfleetDeliveriesFailingFleetWide",
        "HookfleetEventsNotDispatched",
        "HookfleetRetriesOverdue",
        "HookfleetSLOBudgetBurnFast",
        "HookfleetSuccessBudgetBurnFast",
        "HookfleetApiUnavailable",
        "HookfleetDatabaseUnreachable",
        "HookfleetFailingWebhooks",
    )
    for quiet in quiet_alerts:
        assert not [a for a in active if a[0] == quiet], f"{quiet} is active while every role is up: {active}"
    targets = prometheus.api("targets")["activeTargets"]
    assert sorted((t["labels"]["job"], t["health"]) for t in targets) == sorted((f"hookfleet-{r}", "up") for r in ROLES)

    # A role that dies shows as down at once (pending: the rules wait 2 min before firing).
    api.kill()

    def api_down_alerts() -> set[str]:
        return {name for name, job, _ in prometheus.alerts() if job == "hookfleet-api"}

    wait_until(lambda: {"HookfleetInstanceDown", "HookfleetRoleDown"} <= api_down_alerts(), 20, "api down alerts")


OUTAGE_S = 90.0
"""Longer than the old liveness window (6 x 10 s of 503 on /healthz restarted a pod) and far longer than
the consumer session timeout (10 s), so every consumer loses its partitions during the outage."""
EVENTS_BEFORE, EVENTS_DURING = 4, 6


def test_a_broker_outage_leaves_every_role_alive_unready_then_ready_with_nothing_lost(
    fleet: Fleet,
    receiver: HttpsReceiver,
    role_ports: dict[str, int],
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
) -> None:
    """Every role reaches the broker only through a proxy that rewrites the advertised address (so nothing
    goes around it); cutting it is a broker outage for the fleet, while the shared broker keeps running and
    product services keep publishing to it. Throughout the outage each role must stay the same process,
    alive on /livez; consumers turn unready; after it, every role is ready again and every event published
    before and during the outage is delivered and logged."""
    host, _, port = kafka_bootstrap.rpartition(":")
    with KafkaProxy(host, int(port)) as proxy:
        account, _ = create_account(database_url, "Broker outage test")
        webhook_id, secret = seed_webhook(database_url, account, receiver.url("/ok"), [t.value for t in EventType])
        receiver.expect("/ok", secret=secret)

        via_proxy = {"KAFKA_BOOTSTRAP_SERVERS": proxy.bootstrap}
        api_port = free_port()
        roles: dict[str, Role] = {
            "dispatcher": fleet.start_dispatcher(HOOKFLEET_METRICS_PORT=str(role_ports["dispatcher"]), **via_proxy),
            "retry-scheduler": fleet.start(
                "retry-scheduler", HOOKFLEET_METRICS_PORT=str(role_ports["retry-scheduler"]), **via_proxy
            ),
            "recorder": fleet.start("recorder", HOOKFLEET_METRICS_PORT=str(role_ports["recorder"]), **via_proxy),
            "api": fleet.start(
                "api",
                HOOKFLEET_METRICS_PORT=str(role_ports["api"]),
                HOOKFLEET_HOST="127.0.0.1",
                HOOKFLEET_PORT=str(api_port),
                **via_proxy,
            ),
        }
        livez = {role: f"http://127.0.0.1:{role_ports[role]}/livez" for role in ROLES}
        readyz = {role: f"http://127.0.0.1:{role_ports[role]}/readyz" for role in ROLES}
        readyz["api"] = f"http://127.0.0.1:{api_port}/healthz"  # the API's readiness: HTTP, database ping
        consumers = {"dispatcher", "retry-scheduler", "recorder"}

        def all_ready() -> bool:
            return all(http_status(url) == 200 for url in readyz.values())

        wait_until(all_ready, 60, "every role ready before the outage")
        publisher = EventPublisher(CommonSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topics.prefix))
        try:
            sent = [
                build_event(account, EventType.MESSAGE_READ, sample_data(EventType.MESSAGE_READ)) for _ in range(10)
            ]
            for event in sent[:EVENTS_BEFORE]:
                publisher.publish_and_wait(event)
            assert receiver.wait_for(lambda: len(receiver.at("/ok")) >= EVENTS_BEFORE, timeout_s=30)
            pids = {role: r.proc.pid for role, r in roles.items()}

            proxy.cut()
            started = time.monotonic()
            for event in sent[EVENTS_BEFORE:]:  # product services keep publishing to the broker meanwhile
                publisher.publish_and_wait(event)
            unready: set[str] = set()
            while time.monotonic() - started < OUTAGE_S:
                for role, process in roles.items():
                    assert process.proc.poll() is None, (
                        f"{role} exited during the outage:\n{process.log_text()[-3000:]}"
                    )
                    assert http_status(livez[role]) == 200, f"{role} not alive {time.monotonic() - started:.0f}s in"
                    if http_status(readyz[role]) == 503:
                        unready.add(role)
                time.sleep(2.0)  # timed scenario: checked every 2 s through the whole outage
            assert consumers <= unready, f"consumers never unready during the outage: {consumers - unready}"
            assert "api" not in unready, "the API does not need the broker to serve"
            delivered_during = len(receiver.at("/ok"))
        finally:
            publisher.close()
        proxy.restore()

        wait_until(all_ready, 90, "every role ready again after the outage")
        assert {role: r.proc.pid for role, r in roles.items()} == pids, "a role was restarted"
        assert all(r.proc.poll() is None for r in roles.values())

        wanted = {event.id for event in sent}

        def all_delivered() -> bool:
            return {r.event_id for r in receiver.at("/ok")} >= wanted

        assert receiver.wait_for(all_delivered, timeout_s=90), (
            f"lost: {wanted - {r.event_id for r in receiver.at('/ok')}}"
        )
        assert delivered_during <= EVENTS_BEFORE + 1, "deliveries went around the cut proxy"

        def all_logged() -> bool:
            with psycopg.connect(database_url) as conn:
                row = conn.execute(
                    "SELECT count(DISTINCT event_id) FROM delivery_attempts"
                    " WHERE webhook_id = %s AND outcome = 'success'",
                    (webhook_id,),
                ).fetchone()
            return row is not None and row[0] == len(wanted)

        wait_until(all_logged, 60, "every delivery recorded in the log")
