"""Alerts, panels and runbook commands work for both Kubernetes layouts, as each really renders.

Both layouts (deploy/k8s, deploy/k8s-stages) are rendered with kustomize; each pod template goes through the
scrape config's relabelling (deploy/prometheus/kubernetes-scrape.yml) to the series labels Prometheus would
give it; promtool then evaluates the alert rules against series labelled exactly so: a healthy fleet pages
nobody, and a role or a stage that is unready, gone or saturated fires its alert.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_alert_rules import promtool
from tests.unit.test_k8s_render import LAYOUTS, containers, of_kind

ROOT = Path(__file__).resolve().parents[2]
SCRAPE = ROOT / "deploy" / "prometheus" / "kubernetes-scrape.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "hookfleet-fleet.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
REPLICAS = 2  # targets per Deployment in the scenarios
CONSUMER_JOBS = {"hookfleet-dispatcher", "hookfleet-retry-scheduler", "hookfleet-recorder"}


def _meta_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def relabel(pod_labels: dict[str, str], annotations: dict[str, str], pod: str, ip: str) -> dict[str, str] | None:
    """The target labels the scrape config gives a pod (keep and replace actions, as Prometheus does them)."""
    (job,) = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    labels = {
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_name": pod,
        **{f"__meta_kubernetes_pod_label_{_meta_name(k)}": v for k, v in pod_labels.items()},
        **{f"__meta_kubernetes_pod_annotation_{_meta_name(k)}": v for k, v in annotations.items()},
    }
    for rule in job["relabel_configs"]:
        value = rule.get("separator", ";").join(labels.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep":
            if match is None:
                return None
        elif action == "replace":
            if match is not None:
                replaced = match.expand(re.sub(r"\$(\d+)", r"\\\1", rule.get("replacement", "$1")))
                if replaced:
                    labels[rule["target_label"]] = replaced
                else:
                    labels.pop(rule["target_label"], None)
        else:
            pytest.fail(f"kubernetes-scrape.yml uses relabel action {action!r}, which this test does not model")
    labels.setdefault("job", job["job_name"])
    labels.setdefault("instance", labels.get("__address__", ""))
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def targets(layout: str) -> dict[str, list[dict[str, str]]]:
    """Deployment name -> the target labels of its replicas."""
    found: dict[str, list[dict[str, str]]] = {}
    for name, deployment in of_kind(layout, "Deployment").items():
        template = deployment["spec"]["template"]["metadata"]
        for i in range(REPLICAS):
            ip = f"10.0.{len(found)}.{i + 1}"
            target = relabel(template["labels"], template.get("annotations", {}), f"{name}-{i}", ip)
            assert target is not None, f"{layout}: the scrape config drops {name}'s pods"
            found.setdefault(name, []).append(target)
    return found


def delivers(deployment: dict[str, Any]) -> bool:
    (container,) = containers(deployment)
    stages = {e["name"]: e.get("value") for e in container.get("env", [])}.get("HOOKFLEET_STAGES", "fanout,delivery")
    return container["args"] == ["dispatcher"] and "delivery" in stages


def series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def selector(labels: dict[str, str]) -> str:
    """A PromQL selector naming exactly these identifying labels (an absent `stage` matches `stage=""`)."""
    return ",".join(f'{k}="{labels.get(k, "")}"' for k in ("job", "stage"))


def fleet_series(layout: str, *, unready: str = "", gone: str = "", saturated: str = "") -> list[dict[str, str]]:
    """Series of every replica for 30 minutes; one Deployment unready, gone or near its in-flight limit."""
    out: list[dict[str, str]] = []
    for name, replicas in targets(layout).items():
        available = 0 if name == gone else REPLICAS
        out.append(
            {
                "series": series("kube_deployment_status_replicas_available", {"deployment": name}),
                "values": f"{available}x30",
            }
        )
        if name == gone:
            continue
        for target in replicas:
            out.append({"series": series("up", target), "values": "1x30"})
            out.append(
                {"series": series("hookfleet_ready", target), "values": ("0" if name == unready else "1") + "x30"}
            )
            out.append({"series": series("hookfleet_deliveries_in_flight_limit", target), "values": "2000x30"})
            in_flight = "1950" if name == saturated else "10"
            out.append({"series": series("hookfleet_deliveries_in_flight", target), "values": f"{in_flight}x30"})
    return out


def firing(alert: str, where: str = "") -> str:
    return f'count(ALERTS{{alertname="{alert}",alertstate="firing"{"," + where if where else ""}}})'


def scenarios(layout: str) -> list[dict[str, Any]]:
    deployments = of_kind(layout, "Deployment")
    labelled = targets(layout)
    pages = "HookfleetRoleDown|HookfleetRoleNotReady|HookfleetInstanceDown|HookfleetInFlightSaturated"
    tests: list[dict[str, Any]] = [
        {
            "name": f"{layout}: a healthy fleet fires nothing about roles",
            "interval": "1m",
            "input_series": fleet_series(layout),
            "promql_expr_test": [
                {
                    "expr": f'absent(ALERTS{{alertname=~"{pages}",alertstate="firing"}})',
                    "eval_time": "25m",
                    "exp_samples": [{"labels": '{alertstate="firing"}', "value": 1}],
                }
            ],
        }
    ]
    for name, replicas in labelled.items():
        ident = replicas[0]
        checks = [
            # Gone: every pod of this Deployment, so no scrape target and no available replica.
            {
                "expr": f"{firing('HookfleetRoleDown')} > bool 0",
                "eval_time": "25m",
                "exp_samples": [{"labels": "{}", "value": 1}],
            },
        ]
        tests.append(
            {
                "name": f"{layout}: {name} gone pages",
                "interval": "1m",
                "input_series": fleet_series(layout, gone=name),
                "promql_expr_test": checks,
            }
        )
        if ident["job"] in CONSUMER_JOBS:
            checks = [
                {
                    "expr": firing("HookfleetRoleNotReady", selector(ident)),
                    "eval_time": "25m",
                    "exp_samples": [{"labels": "{}", "value": 1}],
                },
                {
                    "expr": firing("HookfleetRoleNotReady"),
                    "eval_time": "25m",
                    "exp_samples": [{"labels": "{}", "value": 1}],
                },
            ]
            tests.append(
                {
                    "name": f"{layout}: {name} unready pages",
                    "interval": "1m",
                    "input_series": fleet_series(layout, unready=name),
                    "promql_expr_test": checks,
                }
            )
        if delivers(deployments[name]):
            checks = [
                {
                    "expr": firing("HookfleetInFlightSaturated"),
                    "eval_time": "25m",
                    "exp_samples": [{"labels": "{}", "value": REPLICAS}],
                },
            ]
            tests.append(
                {
                    "name": f"{layout}: {name} saturated files a ticket",
                    "interval": "1m",
                    "input_series": fleet_series(layout, saturated=name),
                    "promql_expr_test": checks,
                }
            )
    return tests


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_role_is_scraped_as_its_role_job(layout: str) -> None:
    jobs = {t["job"] for replicas in targets(layout).values() for t in replicas}
    assert jobs == {"hookfleet-api", "hookfleet-dispatcher", "hookfleet-recorder", "hookfleet-retry-scheduler"}, jobs
    idents = [(t["job"], t.get("stage", "")) for replicas in targets(layout).values() for t in replicas[:1]]
    assert len(idents) == len(set(idents)), f"{layout}: two Deployments share job and stage: {idents}"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_role_alerts_fire_on_series_labelled_as_the_layout_produces_them(layout: str, tmp_path: Path) -> None:
    tests = tmp_path / "layout.test.yml"
    tests.write_text(
        yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": scenarios(layout)})
    )
    result = subprocess.run(
        [promtool(), "test", "rules", str(tests)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, (
        f"promtool test rules for the {layout} layout failed:\n{result.stdout}\n{result.stderr}"
    )


def job_matchers() -> list[tuple[str, str, str]]:
    """(where, operator, value) of every job matcher in the alert rules and the dashboard."""
    found: list[tuple[str, str, str]] = []
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        found += [
            (rule.get("alert") or rule["record"], op, v) for op, v in re.findall(r'job(=~?)"([^"]*)"', rule["expr"])
        ]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            found += [(panel["title"], op, v) for op, v in re.findall(r'job(=~?)"([^"]*)"', target["expr"])]
    return found


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_job_an_alert_or_panel_names_exists_in_the_layout(layout: str) -> None:
    jobs = {t["job"] for replicas in targets(layout).values() for t in replicas}
    for where, op, value in job_matchers():
        matched = {j for j in jobs if (re.fullmatch(value, j) if op == "=~" else j == value)}
        assert matched, f'{where}: job{op}"{value}" matches no job of the {layout} layout ({sorted(jobs)})'


def runbook_commands() -> str:
    return "\n".join(re.findall(r"```bash\n(.*?)```", RUNBOOK.read_text(), re.S))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_runbook_commands_name_objects_and_pods_of_the_layout(layout: str) -> None:
    commands = runbook_commands()
    deployments = of_kind(layout, "Deployment")
    for name in set(re.findall(r"deploy/(hookfleet-[a-z-]+)", commands)):
        assert name in deployments, f"runbook names deploy/{name}, which the {layout} layout does not render"
    workloads = [*deployments.values(), *of_kind(layout, "Job").values()]
    templates = [d["spec"]["template"]["metadata"]["labels"] for d in workloads]
    for key, value in set(re.findall(r"-l ([\w./-]+)=([\w.-]+)", commands)):
        assert any(labels.get(key) == value for labels in templates), (
            f"runbook: -l {key}={value} selects no {layout} pod"
        )
    for name in set(re.findall(r"(?:scaledobject|hpa) (hookfleet-[a-z-]+)", commands)):
        assert name in of_kind(layout, "ScaledObject"), (
            f"runbook names {name}, not a ScaledObject of the {layout} layout"
        )


def pod_series(pod: str, *, ready: bool, phase: str = "Running", minutes: int = 30) -> list[dict[str, str]]:
    """kube-state-metrics' series of one pod."""
    where = {"namespace": "hookfleet", "pod": pod}
    return [
        {
            "series": series("kube_pod_status_ready", {**where, "condition": "false"}),
            "values": f"{int(not ready)}x{minutes}",
        },
        {"series": series("kube_pod_status_phase", {**where, "phase": phase}), "values": f"1x{minutes}"},
    ]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_one_unready_pod_of_any_deployment_files_a_ticket_and_a_finished_job_pod_does_not(
    layout: str, tmp_path: Path
) -> None:
    """Pods are named by Kubernetes from their Deployment (`<deployment>-<hash>-<suffix>`) and Job
    (`<job>-<suffix>`): the per-pod alert must match every Deployment's pods of the layout."""
    (job,) = of_kind(layout, "Job")
    finished = pod_series(f"{job}-7kq2m", ready=False, phase="Succeeded")
    tests: list[dict[str, Any]] = []
    for name in of_kind(layout, "Deployment"):
        pod = f"{name}-5d8f7c9b4-x2x7k"
        tests.append(
            {
                "name": f"{layout}: {pod} unready",
                "interval": "1m",
                "input_series": [
                    *pod_series(pod, ready=False),
                    *pod_series(f"{name}-5d8f7c9b4-q9w2e", ready=True),
                    *finished,
                ],
                "promql_expr_test": [
                    {
                        "expr": firing("HookfleetPodUnready"),
                        "eval_time": "25m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    },
                    {
                        "expr": firing("HookfleetPodUnready", f'pod="{pod}"'),
                        "eval_time": "25m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    },
                ],
            }
        )
    path = tmp_path / "pods.test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{layout}: per-pod unready alert:\n{result.stdout}\n{result.stderr}"


def keda_inputs(
    layout: str, *, lag_s: int, replicas: int, export_fresh: bool, stuck_partition_lag_s: int | None = None
) -> list[dict[str, str]]:
    """What KEDA's queries read, for 30 minutes: the dispatcher group's lag on every partition of both topics
    (partition 0 at `stuck_partition_lag_s` when given), each scaled Deployment's replicas, and the export's
    timestamp (seconds since the start, as promtool's time() counts)."""
    out = [
        {
            "series": series(
                "hookfleet_group_partition_lag_seconds",
                {"group": "hookfleet-dispatcher", "topic": topic, "partition": str(partition)},
            ),
            "values": f"{stuck_partition_lag_s if partition == 0 and stuck_partition_lag_s is not None else lag_s}x30",
        }
        for topic in ("webhooks.events", "webhooks.deliveries")
        for partition in range(3)
    ]
    out += [
        {"series": series("kube_deployment_status_replicas", {"deployment": name}), "values": f"{replicas}x30"}
        for name in of_kind(layout, "Deployment")
    ]
    stamp = "0+60x30" if export_fresh else "0+60x5 300x25"  # stale: the last round at 5 minutes
    out.append(
        {"series": series("hookfleet_lag_export_timestamp_seconds", {"job": "hookfleet-recorder"}), "values": stamp}
    )
    return out


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_keda_queries_scale_with_lag_and_answer_nothing_when_the_export_is_stale(layout: str, tmp_path: Path) -> None:
    """AverageValue over replicas x lag: the HPA's ceil(value / threshold) is ceil(replicas x lag / 60 s), twice as
    late -> twice the dispatchers. A stale export answers nothing, which KEDA takes as an error: the fallback."""
    tests: list[dict[str, Any]] = []
    for name, scaled in of_kind(layout, "ScaledObject").items():
        (trigger,) = scaled["spec"]["triggers"]
        query, threshold = trigger["metadata"]["query"], float(trigger["metadata"]["threshold"])
        tests += [
            {
                "name": f"{layout}: {name} at 3 replicas and 120 s of lag asks for 6",
                "interval": "1m",
                "input_series": keda_inputs(layout, lag_s=120, replicas=3, export_fresh=True),
                "promql_expr_test": [
                    {
                        "expr": f"({query}) / {threshold}",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": "{}", "value": 6}],
                    }
                ],
            },
            {
                "name": f"{layout}: {name}: one partition 15 min behind, the rest caught up, asks for nothing",
                "interval": "1m",
                "input_series": keda_inputs(layout, lag_s=0, replicas=3, export_fresh=True, stuck_partition_lag_s=900),
                "promql_expr_test": [
                    {
                        "expr": f"({query}) / {threshold}",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": "{}", "value": 0}],
                    }
                ],
            },
            {
                "name": f"{layout}: {name} with a stale export answers nothing",
                "interval": "1m",
                "input_series": keda_inputs(layout, lag_s=120, replicas=3, export_fresh=False),
                "promql_expr_test": [{"expr": query, "eval_time": "10m", "exp_samples": []}],
            },
        ]
    path = tmp_path / "keda.test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{layout}: KEDA's query:\n{result.stdout}\n{result.stderr}"
