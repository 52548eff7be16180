"""The deploy/ files agree with the code: every role is deployed, probed, configured and watched.

Parses docker-compose, every Kubernetes manifest, the Prometheus config and rules, the Grafana dashboard
and the Dockerfile. Metric names in every query must be ones hookfleet/metrics.py really exposes, so a
renamed metric breaks this test instead of silently emptying a panel or an alert.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from hookfleet import metrics
from hookfleet.cli import _SETTINGS_CLASSES, build_parser
from hookfleet.settings import DispatcherSettings, RecorderSettings, RetrySchedulerSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "hookfleet-fleet.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
METRICS_PORT = 9100
API_PORT = 8080
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what a container must bind to be reachable

ROLES = sorted(name for name in _SETTINGS_CLASSES if name != "topics")
METRIC_NAME = re.compile(r"\bhookfleet_[a-z0-9_]+\b")
JOB_NAME = re.compile(r"hookfleet-[a-z-]+")


def exposed_metric_names() -> dict[str, str]:
    """Every series name hookfleet/metrics.py exposes -> the metric it belongs to."""
    names: dict[str, str] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
            for suffix in suffixes[family.type]:
                names[family.name + suffix] = family.name
    return names


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_docs(path):
            yield path, doc


def find(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in k8s_objects() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} named {name} in deploy/k8s (found {len(found)})"
    return found[0]


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"] if "alert" in rule
    ]


def recording_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"] if "record" in rule
    ]


def drain_bound_s(role: str, env: dict[str, str]) -> float:
    defaults = {
        "dispatcher": DispatcherSettings.model_fields["drain_timeout_s"].default,
        "retry-scheduler": RetrySchedulerSettings.model_fields["drain_timeout_s"].default,
        "recorder": RecorderSettings.model_fields["drain_timeout_s"].default,
    }
    return float(env.get("HOOKFLEET_DRAIN_TIMEOUT_S", defaults.get(role, 0.0)))


# ------------------------------------------------------------------------------------------ roles


def test_the_roles_are_the_cli_role_commands() -> None:
    assert ROLES == ["api", "dispatcher", "recorder", "retry-scheduler"]
    for role in ROLES:
        assert build_parser().parse_args([role]).command == role


# ------------------------------------------------------------------------------------------ compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_a_compose_service_with_image_env_and_healthcheck(compose: dict[str, Any], role: str) -> None:
    service = compose["services"][role]
    assert service["image"] == compose["services"]["setup"]["image"], "roles run the image the setup service builds"
    assert service["command"] == [role]
    env = service["environment"]
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
        assert env.get(name) is not None, f"{role}: {name} missing"
    assert env.get("HOOKFLEET_SECRET_KEY_FILE") or env.get("HOOKFLEET_SECRET_KEY"), f"{role}: no secret key"
    assert env["HOOKFLEET_METRICS_PORT"] == str(METRICS_PORT)
    health = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{METRICS_PORT}/readyz" in health
    assert re.fullmatch(r"hookfleet:\$\{HOOKFLEET_VERSION:-\d+\.\d+\.\d+\}", service["image"]), (
        "explicit tag, no latest"
    )
    assert service["pull_policy"] in ("missing", "never", "build")
    assert service["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    grace = float(service["stop_grace_period"].removesuffix("s"))
    assert grace > drain_bound_s(role, env) + 5, f"{role}: stop_grace_period must exceed the drain bound"


def test_compose_never_passes_an_empty_secret_key(compose: dict[str, Any]) -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    assert not re.search(r"HOOKFLEET_SECRET_KEY\s*:\s*\$\{HOOKFLEET_SECRET_KEY:?-", text)
    for name, service in compose["services"].items():
        value = (service.get("environment") or {}).get("HOOKFLEET_SECRET_KEY")
        assert value is None or value.strip(), f"{name}: empty HOOKFLEET_SECRET_KEY"
    setup = " ".join(compose["services"]["setup"]["entrypoint"])
    assert "ensure_key_file" in setup and "HOOKFLEET_SECRET_KEY_FILE" in setup


def test_compose_api_listens_on_all_interfaces_and_publishes_its_port(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["environment"]["HOOKFLEET_HOST"] == ALL_INTERFACES
    assert api["environment"]["HOOKFLEET_PORT"] == str(API_PORT)
    assert f"127.0.0.1:${{HOOKFLEET_API_PORT:-{API_PORT}}}:{API_PORT}" in api["ports"]


def test_compose_publishes_every_port_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_compose_has_no_default_grafana_password_and_keeps_kafka_data(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    assert "GF_SECURITY_ADMIN_PASSWORD" in " ".join(grafana["entrypoint"]), "an unset password must stop Grafana"
    kafka = compose["services"]["kafka"]
    data_dir = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert any(v.split(":")[1] == data_dir and v.split(":")[0] in compose["volumes"] for v in kafka["volumes"])


def test_compose_keeps_the_local_stack_ports_and_runs_setup_once(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # Defaults are the local stack's ports; a variable moves each (the container test runs beside the local stack).
    assert "127.0.0.1:${HOOKFLEET_KAFKA_PORT:-19092}:19092" in services["kafka"]["ports"]
    assert (
        "EXTERNAL://127.0.0.1:${HOOKFLEET_KAFKA_PORT:-19092}"
        in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    ), "the advertised external port must follow the published one"
    assert "127.0.0.1:${HOOKFLEET_POSTGRES_PORT:-55432}:5432" in services["postgres"]["ports"]
    setup = services["setup"]
    script = " ".join(setup["entrypoint"])
    assert "hookfleet db migrate" in script and "hookfleet topics ensure" in script
    assert setup["restart"] == "no"
    assert setup["build"]["context"] == ".." and (DEPLOY / setup["build"]["context"] / "Dockerfile").exists()
    assert {dep: c["condition"] for dep, c in setup["depends_on"].items()} == {
        "kafka": "service_healthy",
        "postgres": "service_healthy",
    }


def test_compose_prometheus_and_grafana_mount_files_that_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    prom_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    config = yaml.safe_load((DEPLOY / prom_mounts["/etc/prometheus/prometheus.yml"]).read_text())
    for rule_file in config["rule_files"]:
        assert rule_file in prom_mounts, f"rule file {rule_file} is not mounted into the prometheus container"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/hookfleet.yml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    grafana_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert grafana_mounts[dashboards_path] == "./grafana/dashboards"
    assert grafana_mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"


# ------------------------------------------------------------------------------------------ kubernetes


def test_every_k8s_manifest_is_listed_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    for _, doc in k8s_objects():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()


@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_a_deployment_with_probes_resources_and_grace(role: str) -> None:
    deployment = find("Deployment", f"hookfleet-{role}")
    spec = deployment["spec"]
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("hookfleet:")
    assert container["args"] == [role]
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"configMapRef": "hookfleet-config", "secretRef": "hookfleet"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == METRICS_PORT
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(METRICS_PORT)
    expected_paths = {"livenessProbe": "/livez", "startupProbe": "/livez", "readinessProbe": "/readyz"}
    if role == "api":
        expected_paths["readinessProbe"] = "/healthz"  # the API's HTTP health check pings PostgreSQL
    for probe, path in expected_paths.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path, f"{role} {probe}"
        assert http["port"] in ports, f"{role} {probe} names port {http['port']}, not one the container declares"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys(), f"{role} {kind}"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace >= drain_bound_s(role, env) + 5, f"{role}: grace period must exceed the drain bound"


def test_dispatcher_grace_period_exceeds_its_default_drain_bound() -> None:
    pod = find("Deployment", "hookfleet-dispatcher")["spec"]["template"]["spec"]
    assert DispatcherSettings.model_fields["drain_timeout_s"].default == 25.0
    assert pod["terminationGracePeriodSeconds"] >= 30


@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_a_disruption_budget_matching_its_pods(role: str) -> None:
    budget = find("PodDisruptionBudget", f"hookfleet-{role}")
    labels = find("Deployment", f"hookfleet-{role}")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "maxUnavailable" in budget["spec"] or "minAvailable" in budget["spec"]


def test_api_role_binds_all_interfaces_and_its_service_targets_the_http_port() -> None:
    container = find("Deployment", "hookfleet-api")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HOOKFLEET_HOST"] == ALL_INTERFACES and env["HOOKFLEET_PORT"] == str(API_PORT)
    service = find("Service", "hookfleet-api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == API_PORT
    labels = find("Deployment", "hookfleet-api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_setup_job_migrates_and_ensures_topics() -> None:
    (job,) = [doc for _, doc in k8s_objects() if doc["kind"] == "Job"]
    assert job["metadata"]["name"].startswith("hookfleet-setup-")
    pod = job["spec"]["template"]["spec"]
    commands = [c["args"] for c in pod.get("initContainers", []) + pod["containers"]]
    assert commands == [["db", "migrate"], ["topics", "ensure"]], "migrations run before the topics, each once"
    assert pod["restartPolicy"] in ("OnFailure", "Never")


def test_the_dispatcher_scales_on_broker_side_lag_in_seconds_up_to_the_partition_count() -> None:
    scaled = find("ScaledObject", "hookfleet-dispatcher")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "hookfleet-dispatcher"
    assert "replicas" not in find("Deployment", "hookfleet-dispatcher")["spec"], "KEDA owns the replica count"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"  # KEDA's fallback needs it
    query = trigger["metadata"]["query"]
    assert "hookfleet_group_partition_lag_seconds" in query
    assert DispatcherSettings.model_fields["group_id"].default in query
    assert float(trigger["metadata"]["threshold"]) > 2 * DispatcherSettings.model_fields["delivery_timeout_s"].default
    config = find("ConfigMap", "hookfleet-config")["data"]
    partitions = int(config["HOOKFLEET_PARTITIONS"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= partitions


def test_the_retry_scheduler_runs_a_fixed_two_and_is_not_autoscaled() -> None:
    assert find("Deployment", "hookfleet-retry-scheduler")["spec"]["replicas"] == 2
    targets = {d["spec"]["scaleTargetRef"]["name"] for _, d in k8s_objects() if d["kind"] == "ScaledObject"}
    assert targets == {"hookfleet-dispatcher"}


def test_the_recorder_group_is_not_autoscaled() -> None:
    """The recorder batches for throughput; its lag is a log delay, handled by replicas set by hand."""
    queries = " ".join(
        t["metadata"]["query"] for _, d in k8s_objects() if d["kind"] == "ScaledObject" for t in d["spec"]["triggers"]
    )
    assert RecorderSettings.model_fields["group_id"].default not in queries


# ------------------------------------------------------------------------------------------ image


def test_dockerfile_installs_every_package_runs_non_root_with_the_cli_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    # One base, chosen by BASE_IMAGE, default the public image; both stages use it.
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.findall(r"^ENTRYPOINT (.+)$", text, re.M)[-1] == '["hookfleet"]'
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = set(re.findall(r"^COPY (\w+)/ ", text, re.M))
    missing = {p.split(".")[0] for p in packages} - copied
    assert not missing, f"Dockerfile does not COPY {sorted(missing)} (listed in pyproject packages)"
    exposed = re.findall(r"^EXPOSE (.+)$", text, re.M)[-1].split()
    assert {str(API_PORT), str(METRICS_PORT)} <= set(exposed)


# ------------------------------------------------------------------------------------------ prometheus


@pytest.mark.parametrize("config_name", ["prometheus.yml", "prometheus.local.yml"])
def test_scrape_configs_have_one_job_per_role(config_name: str) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / config_name).read_text())
    assert sorted(job["job_name"] for job in config["scrape_configs"]) == sorted(f"hookfleet-{r}" for r in ROLES)


def test_alert_rules_cover_the_operators_questions() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "HookfleetApiUnavailable",
        "HookfleetDatabaseUnreachable",
        "HookfleetDispatchLagHigh",
        "HookfleetFailingWebhooks",
        "HookfleetDeliveriesFailingFleetWide",
        "HookfleetEventsNotDispatched",
        "HookfleetRetriesOverdue",
        "HookfleetRetryLate",
        "HookfleetRoleDown",
        "HookfleetRoleNotReady",
        "HookfleetSLOBudgetBurnFast",
        "HookfleetSLOBudgetBurnSlow",
        "HookfleetSuccessBudgetBurnFast",
        "HookfleetSuccessBudgetBurnSlow",
    } <= names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_alert_and_dashboard_metric_names_exist_in_the_code() -> None:
    exposed = exposed_metric_names()
    queries = (
        [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
        + [(f"record {r['record']}", r["expr"]) for r in recording_rules()]
        + dashboard_queries()
    )
    for where, expr in queries:
        for name in METRIC_NAME.findall(expr):
            assert name in exposed, f"{where} queries {name}, which hookfleet/metrics.py does not expose"


def test_alert_job_names_are_scrape_jobs() -> None:
    jobs = {f"hookfleet-{r}" for r in ROLES}
    role_down = next(r for r in alert_rules() if r["alert"] == "HookfleetRoleDown")
    assert set(JOB_NAME.findall(role_down["expr"])) == jobs, "HookfleetRoleDown must name every role's job"
    for rule in alert_rules():
        assert set(JOB_NAME.findall(rule["expr"])) <= jobs, rule["alert"]


# ------------------------------------------------------------------------------------------ grafana


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert [v["name"] for v in dashboard["templating"]["list"] if v["type"] == "datasource"] == ["datasource"]
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_dashboard_shows_every_metric_the_code_defines() -> None:
    exposed = exposed_metric_names()
    shown = {exposed[name] for _, expr in dashboard_queries() for name in METRIC_NAME.findall(expr) if name in exposed}
    assert shown == set(exposed.values()), f"no panel shows {sorted(set(exposed.values()) - shown)}"


def test_dashboard_answers_the_operators_questions() -> None:
    titles = " | ".join(title.lower() for title, _ in dashboard_queries())
    for topic in ("success rate", "/ s", "duration", "retries", "dead letters", "failing webhooks", "lag", "in flight"):
        assert topic in titles, f"no panel about {topic!r}"


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    (source,) = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
