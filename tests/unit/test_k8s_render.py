"""The Kubernetes manifests as kustomize renders them: what the cluster would really receive.

kustomize is built once by deploy/local/kustomize.sh (`go install` through the Go module proxy, cached
under ~/.cache/hookfleet; `make test` runs it first). Both layouts are checked: the base (one dispatcher
Deployment) and deploy/k8s-stages (fan-out and delivery as two Deployments).
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.main import SHUTDOWN_GRACE_S
from hookfleet import settings
from hookfleet.cli import _SETTINGS_CLASSES
from hookfleet.kafka import KafkaProducer
from hookfleet.settings import DispatcherSettings, RecorderSettings, RetrySchedulerSettings, SecretKeySettings
from hookfleet.stream.close import CLOSE_BOUND_S
from hookfleet.stream.leave_group import LEAVE_BOUND_S
from producer.publisher import MAX_EVENT_BYTES
from retry_scheduler.scheduler import REVOKE_FLUSH_S

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.tooling  # kustomize: built with Go, or kubectl

BENCH_RESULTS = ROOT / "bench" / "RESULTS.md"
LAYOUTS = {"base": ROOT / "deploy" / "k8s", "stages": ROOT / "deploy" / "k8s-stages"}


@functools.cache
def kustomize() -> str:
    result = subprocess.run(
        [str(ROOT / "deploy" / "local" / "kustomize.sh")], capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"could not get kustomize (deploy/local/kustomize.sh):\n{result.stderr}")
    return result.stdout.strip()


@functools.cache
def render(layout: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kustomize(), "build", str(LAYOUTS[layout])], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kustomize build {LAYOUTS[layout]} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(layout: str, kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in render(layout) if doc["kind"] == kind}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = pod.get("initContainers", []) + pod["containers"]
    return found


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_no_scaled_deployment_sets_replicas(layout: str) -> None:
    deployments = of_kind(layout, "Deployment")
    scaled = [so["spec"]["scaleTargetRef"]["name"] for so in of_kind(layout, "ScaledObject").values()]
    assert scaled, "the dispatcher is autoscaled"
    for name in scaled:
        assert name in deployments, f"ScaledObject targets {name}, which is not rendered"
        assert "replicas" not in deployments[name]["spec"], f"{name} sets replicas while KEDA owns the count"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_container_has_resources(layout: str) -> None:
    workloads = [*of_kind(layout, "Deployment").values(), *of_kind(layout, "Job").values()]
    for workload in workloads:
        for container in containers(workload):
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= container.get("resources", {}).get(kind, {}).keys(), (
                    f"{workload['metadata']['name']}/{container['name']}: {kind}"
                )


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_long_running_container_has_both_probes_and_they_differ(layout: str) -> None:
    for name, deployment in of_kind(layout, "Deployment").items():
        for container in containers(deployment):
            live, ready = container.get("livenessProbe"), container.get("readinessProbe")
            assert live and ready, f"{name}/{container['name']} lacks a liveness or readiness probe"
            assert live["httpGet"] != ready["httpGet"], f"{name}: liveness and readiness ask the same question"
            assert live["httpGet"]["path"] == "/livez", f"{name}: liveness is the loop heartbeat"
            startup = container.get("startupProbe")
            assert startup is None or startup["httpGet"]["path"] == "/livez", f"{name}: startup gates liveness"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_pods_spread_over_zones_and_nodes(layout: str) -> None:
    for name, deployment in of_kind(layout, "Deployment").items():
        keys = {c["topologyKey"] for c in deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", [])}
        assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys, name


def test_the_setup_job_is_named_for_the_release_it_sets_up() -> None:
    (job,) = of_kind("base", "Job").values()
    tags = {c["image"].rpartition(":")[2] for c in containers(job)}
    assert len(tags) == 1
    assert job["metadata"]["name"] == f"hookfleet-setup-{tags.pop()}"


# deploy/README.md#migrations-and-rollouts: migration 0008 rebuilds the health stats from the whole log at
# ~27 s per million attempt rows (bench/RESULTS.md); the setup Job must let it finish on a 100-million-row log.
LARGEST_MIGRATION_S = 27 * 100


def job_retry_backoff_s(retries: int) -> int:
    """The Job controller's waits before `retries` retries: 10 s, doubling, at most 6 minutes each."""
    return sum(min(10 * 2**i, 360) for i in range(retries))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_setup_job_is_bounded_and_its_bounds_let_the_largest_migration_finish(layout: str) -> None:
    (job,) = of_kind(layout, "Job").values()
    spec = job["spec"]
    retries, deadline = spec.get("backoffLimit"), spec.get("activeDeadlineSeconds")
    assert retries is not None and 1 <= retries <= 6, f"backoffLimit {retries}: a few retries, not for ever"
    assert deadline is not None, "no activeDeadlineSeconds: a setup that hangs holds the release for ever"
    needed = LARGEST_MIGRATION_S + job_retry_backoff_s(retries)
    assert needed <= deadline, f"activeDeadlineSeconds {deadline} < {needed} s (largest migration + retry waits)"
    assert deadline < spec["ttlSecondsAfterFinished"], "a failed Job must stay long enough to be read"


MIB = 1024 * 1024
# bench/RESULTS.md: the dispatcher idle (uvloop, subscription index loaded) is 78 MB; counted as MiB.
IDLE_MIB = 78
# A fan-out task awaiting the broker's acknowledgement: its bytes in the acknowledgement callback and
# librdkafka's copy in the producer queue, each the largest event plus the task envelope (bounded by 1 KiB).
FANOUT_TASK_BYTES = 2 * (MAX_EVENT_BYTES + 1024)


def measured_delivery_bytes() -> int:
    """Worst case per delivery in flight, read from bench/RESULTS.md so a new measurement re-checks the limits:
    the measured request and response buffers plus the task's Kafka message (the largest event)."""
    row = re.search(r"^\| one buffer, bounded by the cap \(now\) \| ([\d,]+) KiB \|$", BENCH_RESULTS.read_text(), re.M)
    assert row is not None, "bench/RESULTS.md: no worst-case memory row; update this test with the new measurement"
    return int(row.group(1).replace(",", "")) * 1024 + MAX_EVENT_BYTES


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}
    suffix = quantity[-2:]
    assert suffix in units, f"memory quantity {quantity}: write it in Ki, Mi or Gi"
    return int(quantity[:-2]) * units[suffix]


def dispatcher_worst_case_bytes(env: dict[str, str]) -> int:
    """Every in-flight bound taken in full with the largest events and the most hostile receivers."""
    stages = set(env.get("HOOKFLEET_STAGES", "fanout,delivery").split(","))
    in_flight = int(env.get("HOOKFLEET_MAX_IN_FLIGHT", DispatcherSettings.model_fields["max_in_flight"].default))
    prefetch_kib = _literal_close_bound("dispatcher/main.py", r'"queued\.max\.messages\.kbytes": (\d+)')
    held = 0
    if "delivery" in stages:
        held += in_flight * measured_delivery_bytes()  # delivery tasks held in lanes, all of them open requests
    if "fanout" in stages:
        held += in_flight * FANOUT_TASK_BYTES  # fan-out tasks the broker has not acknowledged
    return IDLE_MIB * MIB + len(stages) * int(prefetch_kib) * 1024 + held


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_dispatchers_worst_case_memory_fits_its_limit(layout: str) -> None:
    """HOOKFLEET_MAX_IN_FLIGHT x measured worst case per task + idle + prefetch, within 90 % of the limit (the
    rest for allocator fragmentation): a receiver cannot get a dispatcher OOM-killed."""
    dispatchers = {n: d for n, d in of_kind(layout, "Deployment").items() if n.startswith("hookfleet-dispatcher")}
    assert dispatchers
    for name, deployment in dispatchers.items():
        (container,) = containers(deployment)
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        assert "HOOKFLEET_MAX_IN_FLIGHT" in env, f"{name}: set HOOKFLEET_MAX_IN_FLIGHT (the default is not sized)"
        worst = dispatcher_worst_case_bytes(env)
        limit = memory_bytes(container["resources"]["limits"]["memory"])
        assert worst <= 0.9 * limit, (
            f"{name}: {env['HOOKFLEET_MAX_IN_FLIGHT']} in flight needs up to {worst / MIB:.0f} MiB, limit "
            f"{limit / MIB:.0f} MiB: lower HOOKFLEET_MAX_IN_FLIGHT or raise the limit "
            "(deploy/README.md#memory-and-in-flight)"
        )


def test_the_api_drains_before_it_stops() -> None:
    (container,) = containers(of_kind("base", "Deployment")["hookfleet-api"])
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"


def test_the_stages_layout_runs_fanout_and_delivery_scaled_on_their_own_input() -> None:
    deployments = of_kind("stages", "Deployment")
    assert "hookfleet-dispatcher" not in deployments
    scaled = of_kind("stages", "ScaledObject")
    for stage, topic in (("fanout", "webhooks.events"), ("delivery", "webhooks.deliveries")):
        name = f"hookfleet-dispatcher-{stage}"
        (container,) = containers(deployments[name])
        assert container["args"] == ["dispatcher"]
        assert {"name": "HOOKFLEET_STAGES", "value": stage} in container["env"]
        (trigger,) = scaled[name]["spec"]["triggers"]
        assert f'topic="{topic}"' in trigger["metadata"]["query"]
        assert "hookfleet_group_partition_lag_seconds" in trigger["metadata"]["query"]
    assert set(of_kind("stages", "PodDisruptionBudget")) >= {
        "hookfleet-dispatcher-fanout",
        "hookfleet-dispatcher-delivery",
    }


def render_edited(tmp_path: Path, layout: str, edit: Callable[[Path], None]) -> tuple[dict[str, Any], ...]:
    """Render a copy of both layouts after `edit(copied deploy/)`: what an operator's change would produce."""
    deploy = tmp_path / "deploy"
    for name in ("k8s", "k8s-stages"):
        shutil.copytree(ROOT / "deploy" / name, deploy / name)
    edit(deploy)
    command = [kustomize(), "build", str(deploy / LAYOUTS[layout].name)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def set_partitions(deploy: Path, partitions: int) -> None:
    config = deploy / "k8s" / "config.yaml"
    text = config.read_text()
    assert 'HOOKFLEET_PARTITIONS: "6"' in text
    config.write_text(text.replace('HOOKFLEET_PARTITIONS: "6"', f'HOOKFLEET_PARTITIONS: "{partitions}"'))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_keda_max_replicas_is_the_partition_count_from_the_one_setting(layout: str, tmp_path: Path) -> None:
    """A consumer beyond the partition count owns nothing: maxReplicaCount = HOOKFLEET_PARTITIONS, set once."""
    (config,) = of_kind(layout, "ConfigMap").values()
    for scaled in of_kind(layout, "ScaledObject").values():
        assert scaled["spec"]["maxReplicaCount"] == int(config["data"]["HOOKFLEET_PARTITIONS"])
    rendered = render_edited(tmp_path, layout, lambda deploy: set_partitions(deploy, 12))
    maxima = {d["metadata"]["name"]: d["spec"]["maxReplicaCount"] for d in rendered if d["kind"] == "ScaledObject"}
    assert maxima and set(maxima.values()) == {12}, f"HOOKFLEET_PARTITIONS=12 rendered maxReplicaCount {maxima}"
    fallbacks = {
        d["metadata"]["name"]: d["spec"]["fallback"]["replicas"] for d in rendered if d["kind"] == "ScaledObject"
    }
    assert set(fallbacks.values()) == {12}, f"HOOKFLEET_PARTITIONS=12 rendered fallback replicas {fallbacks}"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_keda_falls_back_to_every_partition_when_the_lag_source_is_down(layout: str) -> None:
    """No answer from the lag query (Prometheus down, the export stale) must not freeze or shrink the fleet:
    KEDA's fallback holds it at the partition count. KEDA applies a fallback to AverageValue triggers only."""
    (config,) = of_kind(layout, "ConfigMap").values()
    for name, scaled in of_kind(layout, "ScaledObject").items():
        fallback = scaled["spec"].get("fallback")
        assert fallback is not None, f"{name}: no fallback, so a lag source outage leaves the count as it was"
        assert fallback["replicas"] == int(config["data"]["HOOKFLEET_PARTITIONS"]), name
        assert 1 <= fallback["failureThreshold"] * scaled["spec"]["pollingInterval"] <= 60, name
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["metricType"] == "AverageValue", f"{name}: KEDA ignores the fallback of a Value trigger"
            assert trigger["metadata"]["ignoreNullValues"] == "false", f"{name}: no answer must be an error"
            assert "hookfleet_lag_export_timestamp_seconds" in trigger["metadata"]["query"], (
                f"{name}: a stale export must make the query answer nothing"
            )


# --------------------------------------------------------------------------- every rendered object is deployable

CLUSTER_SCOPED = {"Namespace"}
NAMESPACE = "hookfleet"
SECRETS_CREATED_BY_HAND = {"hookfleet", "hookfleet-secret-key"}  # config.yaml: `kubectl create secret ...`


def pod_templates(layout: str) -> dict[str, dict[str, Any]]:
    """`Kind/name` -> pod template of every workload."""
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc["spec"]["template"]
        for doc in render(layout)
        if doc["kind"] in ("Deployment", "Job")
    }


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_object_is_named_and_in_the_namespace(layout: str) -> None:
    for doc in render(layout):
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), doc
        where = f"{layout}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"], where
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{where} renders without namespace {NAMESPACE}"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_selectors_match_their_own_pods_and_no_others(layout: str) -> None:
    templates = pod_templates(layout)
    labels = {name: t["metadata"]["labels"] for name, t in templates.items()}
    for deployment in of_kind(layout, "Deployment").values():
        name = f"Deployment/{deployment['metadata']['name']}"
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selects(selector, labels[name]), f"{layout}: {name} does not select its own template"
        others = [other for other, theirs in labels.items() if other != name and selects(selector, theirs)]
        assert not others, f"{layout}: {name}'s selector also matches {others}"
        for spread in deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
            assert spread["labelSelector"]["matchLabels"] == selector, f"{layout}: {name} spreads other pods"
    for kind in ("PodDisruptionBudget", "Service"):
        for name, doc in of_kind(layout, kind).items():
            selector = doc["spec"]["selector"].get("matchLabels", doc["spec"]["selector"])
            matched = [t for t, theirs in labels.items() if t.startswith("Deployment/") and selects(selector, theirs)]
            assert len(matched) == 1, f"{layout}: {kind}/{name} selects {matched}"
    deployments = of_kind(layout, "Deployment")
    for name, scaled in of_kind(layout, "ScaledObject").items():
        assert scaled["spec"]["scaleTargetRef"]["name"] in deployments, f"{layout}: ScaledObject/{name}"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_container_has_an_image_its_ports_and_existing_config_sources(layout: str) -> None:
    config_maps = set(of_kind(layout, "ConfigMap"))
    secrets = set(of_kind(layout, "Secret")) | SECRETS_CREATED_BY_HAND
    for workload, template in pod_templates(layout).items():
        pod = template["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod.get("initContainers", []) + pod["containers"]:
            where = f"{layout}: {workload}/{container['name']}"
            assert container.get("image") and container.get("args"), where
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in container:
                    port = container[probe]["httpGet"]["port"]
                    assert port in ports or port in ports.values(), f"{where}: {probe} port {port} not declared"
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, f"{where}: {source}"
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, f"{where}: {source}"
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["name"] in config_maps, f"{where}: {env['name']}"
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["name"] in secrets, f"{where}: {env['name']}"
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}: mounts undeclared volume {mount['name']}"
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, f"{layout}: {workload} volume {volume['name']}"


def set_image(deploy: Path, image: str) -> None:
    """What deploy/k8s/kustomization.yaml tells operators to run, in the base."""
    subprocess.run([kustomize(), "edit", "set", "image", f"hookfleet={image}"], cwd=deploy / "k8s", check=True)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_image_set_in_the_base_reaches_every_container(layout: str, tmp_path: Path) -> None:
    image = "registry.example.com/team/hookfleet:9.9.9"
    rendered = render_edited(tmp_path, layout, lambda deploy: set_image(deploy, image))
    for doc in rendered:
        if doc["kind"] in ("Deployment", "Job"):
            for container in containers(doc):
                assert container["image"] == image, f"{layout}: {doc['metadata']['name']}/{container['name']}"


# ------------------------------------------------------------------------------ shutdown fits the grace period


def _literal_close_bound(path: str, pattern: str) -> float:
    """A close timeout written as a literal in a role's shutdown path (read from the source, so a change shows)."""
    found = re.search(pattern, (ROOT / path).read_text())
    assert found is not None, f"{path}: no {pattern}; update the shutdown bound of this test"
    return float(found.group(1))


def shutdown_bound_s(args: list[str], env: dict[str, str], static: bool = False) -> float:
    """Worst case from SIGTERM to exit, every bound of the role's shutdown path taken in full, from the settings'
    defaults (or the container's env) and the code's own constants. `static`: HOOKFLEET_INSTANCE_ID is set, so
    every consumer's close is followed by its leave (LEAVE_BOUND_S), as CLOSE_BOUND_S is per consumer."""
    role = args[0]
    stages = env.get("HOOKFLEET_STAGES", "fanout,delivery").count(",") + 1
    close_bound = CLOSE_BOUND_S + (LEAVE_BOUND_S if static else 0.0)
    producer_close = float(inspect.signature(KafkaProducer.close).parameters["timeout_s"].default)
    if role == "dispatcher":
        drain = float(env.get("HOOKFLEET_DRAIN_TIMEOUT_S", DispatcherSettings.model_fields["drain_timeout_s"].default))
        # open requests (drain) + fan-out acknowledgements (flush, drain) + per stage: final commit and close
        # (CLOSE_BOUND_S) + the producer's close (its flush default)
        return drain + drain + stages * close_bound + producer_close
    if role == "recorder":
        drain = float(env.get("HOOKFLEET_DRAIN_TIMEOUT_S", RecorderSettings.model_fields["drain_timeout_s"].default))
        batch_wait = float(RecorderSettings.model_fields["batch_wait_ms"].default) / 1000
        close = _literal_close_bound("recorder/loop.py", r"self\.producer\.close\(timeout_s=([\d.]+)\)")
        # the last batch's wait + retrying the database (drain) + leaving the group + the producer's close
        return batch_wait + drain + close_bound + close
    if role == "retry-scheduler":
        default = RetrySchedulerSettings.model_fields["drain_timeout_s"].default
        drain = float(env.get("HOOKFLEET_DRAIN_TIMEOUT_S", default))
        close = _literal_close_bound("retry_scheduler/scheduler.py", r"self\._producer\.close\(timeout_s=([\d.]+)\)")
        # outstanding hand-offs (drain) + the revoke's settle + leaving the group + the producer's close
        return drain + REVOKE_FLUSH_S + close_bound + close
    if role == "api":
        close = _literal_close_bound("api/resources.py", r"self\._producer\.close, ([\d.]+)\)")
        # open requests (a Test delivery is within HOOKFLEET_DELIVERY_TIMEOUT_S < SHUTDOWN_GRACE_S) + producer close
        return SHUTDOWN_GRACE_S + close
    raise AssertionError(f"no shutdown bound known for role {role}")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_consuming_role_is_a_static_member_named_after_its_pod(layout: str) -> None:
    """HOOKFLEET_INSTANCE_ID from the pod name (downward API): a container restarted in place keeps it, so the
    group hands it its own partitions back at once (docs/architecture.md#static-membership)."""
    consuming = 0
    for name, deployment in of_kind(layout, "Deployment").items():
        (container,) = containers(deployment)
        if container["args"][0] not in ("dispatcher", "recorder", "retry-scheduler"):
            continue
        consuming += 1
        env = {e["name"]: e for e in container.get("env", [])}
        assert "HOOKFLEET_INSTANCE_ID" in env, f"{layout}: {name} sets no HOOKFLEET_INSTANCE_ID"
        source = env["HOOKFLEET_INSTANCE_ID"].get("valueFrom", {}).get("fieldRef", {})
        assert source.get("fieldPath") == "metadata.name", f"{layout}: {name}: {env['HOOKFLEET_INSTANCE_ID']}"
    assert consuming >= 3, f"{layout}: {consuming} consuming Deployments"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_grace_period_exceeds_each_roles_worst_case_shutdown(layout: str) -> None:
    for name, deployment in of_kind(layout, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
        static = any(e["name"] == "HOOKFLEET_INSTANCE_ID" for e in container.get("env", []))
        bound = sleep + shutdown_bound_s(container["args"], env, static)
        grace = pod["terminationGracePeriodSeconds"]
        assert grace > bound, f"{layout}: {name} may take {bound:.1f} s to stop; terminationGracePeriodSeconds {grace}"


# ----------------------------------------------------------------- strict decoding with Kubernetes' own types


VALIDATOR_WAIT = pytest.mark.timeout(1500)
"""`make test` builds the validator beside the tests the first time (minutes of Go): its tests may wait for it."""


@functools.cache
def validator() -> str:
    result = subprocess.run(
        [str(ROOT / "deploy" / "local" / "validate.sh")], capture_output=True, text=True, timeout=1200, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"could not build the manifest validator (deploy/local/validate.sh):\n{result.stderr}")
    return result.stdout.strip()


def validate(rendered: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([validator()], input=rendered, capture_output=True, text=True, timeout=60, check=False)


@VALIDATOR_WAIT
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_rendered_object_decodes_strictly_into_kubernetes_and_keda_types(layout: str) -> None:
    """deploy/validate: client-go's scheme plus KEDA v2's, strict (unknown, duplicate or mistyped fields fail)."""
    rendered = yaml.safe_dump_all(render(layout), sort_keys=False)
    result = validate(rendered)
    assert result.returncode == 0, f"{layout}:\n{result.stdout}{result.stderr}"
    assert f"{len(render(layout))} objects decoded strictly" in result.stdout


@VALIDATOR_WAIT
def test_the_validator_refuses_a_misspelt_field() -> None:
    """A validator that accepts everything proves nothing: a typo the API server would refuse fails it."""
    docs = [dict(doc) for doc in render("base")]
    scaled = next(doc for doc in docs if doc["kind"] == "ScaledObject")
    scaled["spec"] = {**scaled["spec"], "maxReplicas": 3}
    result = validate(yaml.safe_dump_all(docs, sort_keys=False))
    assert result.returncode == 1 and 'unknown field "spec.maxReplicas"' in result.stdout, result.stdout


@VALIDATOR_WAIT
def test_the_validator_refuses_a_fallback_keda_would_never_apply() -> None:
    """KEDA's admission webhook logs a fallback on a Value trigger and accepts it; the validator refuses it."""
    docs = [dict(doc) for doc in render("base")]
    scaled = next(doc for doc in docs if doc["kind"] == "ScaledObject")
    scaled["spec"] = {**scaled["spec"], "triggers": [{**t, "metricType": "Value"} for t in scaled["spec"]["triggers"]]}
    result = validate(yaml.safe_dump_all(docs, sort_keys=False))
    assert result.returncode == 1 and "Fallback can only be enabled" in result.stdout, result.stdout


# ----------------------------------------------------------------------------------------- defence in depth

KEY_SECRET = "hookfleet-secret-key"
METADATA_AND_CLUSTER = ["169.254.169.254", "10.0.0.1", "172.16.0.10", "192.168.1.1", "100.64.0.1", "127.0.0.1"]
METADATA_AND_CLUSTER_V6 = ["fd00:ec2::254", "fe80::1", "::1", "::ffff:10.0.0.1", "fd12:3456::1"]
PUBLIC = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]


def roles_that_hold_the_key() -> set[str]:
    """Roles whose settings read the secret key: the only ones that may get it."""
    return {role for role, name in _SETTINGS_CLASSES.items() if issubclass(getattr(settings, name), SecretKeySettings)}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_no_pod_mounts_a_service_account_token(layout: str) -> None:
    for workload, template in pod_templates(layout).items():
        assert template["spec"].get("automountServiceAccountToken") is False, f"{layout}: {workload}"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_secret_key_is_a_mounted_file_and_only_where_secrets_are_sealed_or_opened(layout: str) -> None:
    assert roles_that_hold_the_key() == {"api", "dispatcher"}
    for workload, template in pod_templates(layout).items():
        pod = template["spec"]
        key_volumes = {v["name"] for v in pod.get("volumes", []) if v.get("secret", {}).get("secretName") == KEY_SECRET}
        for container in pod.get("initContainers", []) + pod["containers"]:
            where = f"{layout}: {workload}/{container['name']}"
            env = {e["name"]: e for e in container.get("env", [])}
            assert "HOOKFLEET_SECRET_KEY" not in env, f"{where}: the key as an env value"
            mounts = [m for m in container.get("volumeMounts", []) if m["name"] in key_volumes]
            if container["args"][0] in roles_that_hold_the_key():
                (mount,) = mounts
                assert mount.get("readOnly") is True, where
                path = env["HOOKFLEET_SECRET_KEY_FILE"]["value"]
                assert path.startswith(mount["mountPath"].rstrip("/") + "/"), f"{where}: {path} is not on the mount"
                assert pod["securityContext"].get("fsGroup") == pod["securityContext"]["runAsGroup"], where
            else:
                assert not mounts and "HOOKFLEET_SECRET_KEY_FILE" not in env, f"{where} gets the secret key"
        if not any(c["args"][0] in roles_that_hold_the_key() for c in pod["containers"]):
            assert not key_volumes, f"{layout}: {workload} declares the key volume"


def egress_admits(policy: dict[str, Any], address: str) -> bool:
    """Whether an ipBlock of the policy admits `address` (selector rules name pods, never addresses)."""
    ip = ipaddress.ip_address(address)
    for rule in policy["spec"]["egress"]:
        for peer in rule.get("to", []):
            block = peer.get("ipBlock")
            if block is None:
                continue
            network = ipaddress.ip_network(block["cidr"])
            excepted = any(ip in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
            if ip.version == network.version and ip in network and not excepted:
                return True
    return False


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_delivering_pods_reach_the_public_internet_and_never_the_cluster_or_metadata(layout: str) -> None:
    policies = of_kind(layout, "NetworkPolicy")
    egress = [p for p in policies.values() if "Egress" in p["spec"]["policyTypes"]]
    for workload, template in pod_templates(layout).items():
        if template["spec"]["containers"][0]["args"][0] not in ("dispatcher", "api"):
            continue
        labels = template["metadata"]["labels"]
        applying = [p for p in egress if pod_selected(p["spec"]["podSelector"], labels)]
        assert applying, f"{layout}: no egress policy applies to {workload}"
        for address in METADATA_AND_CLUSTER + METADATA_AND_CLUSTER_V6:
            admitted = [p["metadata"]["name"] for p in applying if egress_admits(p, address)]
            assert not admitted, f"{layout}: {workload} may reach {address} through {admitted}"
        for address in PUBLIC:
            assert any(egress_admits(p, address) for p in applying), f"{layout}: {workload} cannot reach {address}"
        for policy in applying:
            for rule in policy["spec"]["egress"]:
                if any("ipBlock" not in peer for peer in rule.get("to", [])):
                    assert rule.get("ports"), f"{policy['metadata']['name']}: a selector rule open on every port"


def pod_selected(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True
