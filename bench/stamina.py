"""Stamina: the whole fleet at half its capacity for a long time (soak), and at twice it for minutes (overload).

    python -m bench.soak --minutes 30                 # writes bench/results/soak.json
    python -m bench.overload --minutes 3              # writes bench/results/overload.json
    python -m bench.soak --minutes 1 --capacity 1200  # no capacity burst: the rate is given
    python -m bench.overload --fleet-pythonpath /tmp/before   # every role from another checkout (before/after)

Every role is a process (dispatcher, recorder, retry scheduler), beside the bench receiver, the local broker
and PostgreSQL, seeded as bench/pipeline.py seeds its fleet. Capacity is the steady deliveries/s of
pipeline's throughput burst at the start of the same run, on the same fleet, unless `--capacity` gives it.
Each role runs with the settings its Deployment sets in deploy/k8s (`HOOKFLEET_MAX_IN_FLIGHT` and the like;
`--defaults` runs the built-in defaults instead), and its peak RSS is read against the memory limit the same
manifest declares, so the figures follow the manifests.

Events are published on a thread at an even pace (bench.harness.PacedStream): an event's number is in its
id and its publish time in a compact array, and the receiver forgets arrivals once read, so neither side
grows with the length of the run. Every window (a minute in the soak, 5 s in the overload): deliveries,
publish-to-receive p50/p99, consumer lag per group, RSS per role, CPU per delivery per process (broker and
PostgreSQL included). After publishing stops, the run goes on until every event was received and every
attempt row is in PostgreSQL (the drain).
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from bench import machine, pipeline
from bench.harness import CpuMeter, Harness, PacedStream, bench_session, event_for
from bench.receiver import Receiver
from bench.stack import BenchStack, RoleProcess, proc_status
from hookfleet.kafka import topic_overview
from hookfleet.settings import (
    DispatcherSettings,
    RecorderSettings,
    RetrySchedulerSettings,
)
from schemas.models import Event

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "k8s"
ROLES = {"dispatcher": "dispatcher", "recorder": "recorder", "retry scheduler": "retry-scheduler"}
"""Report label -> `hookfleet <role>` (and deploy/k8s/<role>.yaml)."""
GROUPS = {
    "dispatcher": str(DispatcherSettings.model_fields["group_id"].default),
    "recorder": str(RecorderSettings.model_fields["group_id"].default),
    "retry scheduler": str(RetrySchedulerSettings.model_fields["group_id"].default),
}
_MEMORY_UNITS = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}


@dataclass(frozen=True)
class Deployed:
    """What a role's Deployment sets: its literal env values and its pod memory limit."""

    manifest: str
    env: dict[str, str]
    memory_limit_mib: float


def deployed(role: str) -> Deployed:
    """Read deploy/k8s/<role>.yaml; file paths (the mounted secret key) are left out of the env."""
    path = MANIFESTS / f"{role}.yaml"
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            env = {
                item["name"]: str(item["value"])
                for item in container.get("env", [])
                if "value" in item and not item["name"].endswith("_FILE")
            }
            limit = str(container["resources"]["limits"]["memory"])
            if limit[-2:] not in _MEMORY_UNITS:
                raise RuntimeError(f"{path}: memory limit {limit}: expected Ki, Mi or Gi")
            return Deployed(str(path.relative_to(ROOT)), env, float(limit[:-2]) * _MEMORY_UNITS[limit[-2:]])
    raise RuntimeError(f"{path}: no Deployment in it")


@dataclass(frozen=True)
class Plan:
    mode: str  # "soak" or "overload"
    rate_factor: float  # of capacity
    minutes: float
    window_s: float
    drain_timeout_s: float
    capacity: float | None  # None: measured by a burst of capacity_events
    capacity_events: int
    fleet_pythonpath: str | None
    deployed_settings: bool


@dataclass
class Tally:
    """What the receiver got of the paced events: first arrivals, duplicates, latencies of the open window."""

    id_prefix: str
    total: int
    seen: bytearray = field(init=False)
    received: int = 0
    duplicates: int = 0
    others: int = 0
    last_arrival: float = 0.0
    cursor: int = 0
    window_deliveries: int = 0
    window_latencies_ms: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seen = bytearray(self.total)

    def read(self, receiver: Receiver, sent_at: Any) -> None:
        batch = receiver.arrivals(self.cursor)
        self.cursor += len(batch)
        if batch:
            receiver.forget(self.cursor)
        for at, event_id, _ in batch:
            head, _, number = event_id.rpartition("x")
            if head != self.id_prefix or not number.isdigit() or int(number) >= self.total:
                self.others += 1  # the capacity burst's last arrivals
                continue
            n = int(number)
            self.window_deliveries += 1
            if self.seen[n]:
                self.duplicates += 1
                continue
            self.seen[n] = 1
            self.received += 1
            self.last_arrival = max(self.last_arrival, at)
            self.window_latencies_ms.append((at - sent_at[n]) * 1000)

    def close_window(self) -> tuple[int, list[float]]:
        deliveries, latencies = self.window_deliveries, sorted(self.window_latencies_ms)
        self.window_deliveries, self.window_latencies_ms = 0, []
        return deliveries, latencies


def _lag(harness: Harness, stack: BenchStack) -> dict[str, dict[str, int]]:
    """Consumer lag per group and topic (messages not yet committed), topics without lag left out."""
    groups = {stack.prefix + group: label for label, group in GROUPS.items()}
    lag: dict[str, dict[str, int]] = {label: {} for label in GROUPS}
    for topic in topic_overview(harness.bootstrap, stack.topics.all(), groups):
        for group, behind in topic.lag.items():
            if behind > 0:  # (the end offsets are read before the commits: a commit just made can pass them)
                lag[groups[group]][topic.name.removeprefix(stack.prefix)] = behind
    return lag


def _rss_mb(pid: int, key: str = "VmRSS") -> float:
    try:
        return round(proc_status(pid).get(key, 0) / 1024, 1)
    except OSError:  # the process is gone
        return 0.0


@dataclass
class Observer:
    """Samples the fleet while events flow: every loop turn the receiver and RSS, every window the rest."""

    harness: Harness
    stack: BenchStack
    roles: dict[str, RoleProcess]
    window_s: float
    began: float = field(default_factory=time.time)
    windows: list[dict[str, Any]] = field(default_factory=list)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    crashed: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pids = {label: role.pid for label, role in self.roles.items()}
        self._meter = CpuMeter({**self._pids, "receiver": self.harness.receiver.pid})
        self._window_start = self.began

    def turn(self, tally: Tally, stream: PacedStream) -> None:
        tally.read(self.harness.receiver, stream.sent_at)
        for label, role in self.roles.items():
            self.peak_rss_mb[label] = max(self.peak_rss_mb.get(label, 0.0), _rss_mb(role.pid))
            if label not in self.crashed and role.proc.poll() is not None:
                self.crashed[label] = role.proc.returncode
        if time.time() - self._window_start >= self.window_s:
            self.close_window(tally, stream)

    def close_window(self, tally: Tally, stream: PacedStream) -> None:
        now = time.time()
        seconds = now - self._window_start
        deliveries, latencies = tally.close_window()
        try:
            cpu = self._meter.read()
            per_delivery = {k: round(v / deliveries * 1e6, 1) for k, v in cpu["cpu_s"].items()} if deliveries else {}
            busy = cpu["machine_busy"]
        except OSError:  # a role died: its CPU can no longer be read
            per_delivery, busy = {}, None
        self.windows.append(
            {
                "t_s": round(self._window_start - self.began, 1),
                "seconds": round(seconds, 1),
                "phase": "publishing" if not stream.ended_at or self._window_start < stream.ended_at else "draining",
                "deliveries": deliveries,
                "per_s": round(deliveries / seconds, 1) if seconds > 0 else 0.0,
                "p50_ms": round(machine.percentile(latencies, 50), 1) if latencies else None,
                "p99_ms": round(machine.percentile(latencies, 99), 1) if latencies else None,
                "lag": _lag(self.harness, self.stack),
                "rss_mb": {label: _rss_mb(pid) for label, pid in self._pids.items()},
                "cpu_us_per_delivery": per_delivery,
                "machine_busy": busy,
            }
        )
        alive = {label: pid for label, pid in self._pids.items() if label not in self.crashed}
        self._meter = CpuMeter({**alive, "receiver": self.harness.receiver.pid})
        self._window_start = time.time()


def _recorded_events(stack: BenchStack, id_prefix: str) -> int:
    """Distinct paced events with an attempt row in PostgreSQL (a duplicate delivery adds a row, not an event)."""
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT event_id) FROM delivery_attempts WHERE event_id LIKE %s", (id_prefix + "x%",)
        ).fetchone()
    return int(row[0]) if row else 0


def rss_slope_mb_per_h(windows: list[dict[str, Any]], label: str, skip: int = 2) -> float | None:
    """Least-squares slope of a role's RSS over the publishing windows after the first `skip` (warm-up)."""
    points = [(w["t_s"] / 3600, w["rss_mb"][label]) for w in windows if w["phase"] == "publishing"][skip:]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return round(sum((x - mean_x) * (y - mean_y) for x, y in points) / spread, 1) if spread else None


def cpu_per_delivery(windows: list[dict[str, Any]]) -> dict[str, float]:
    """CPU us per delivery of each process over the publishing windows, weighted by their deliveries."""
    used: dict[str, float] = {}
    deliveries = 0
    for w in windows:
        if w["phase"] == "publishing" and w["cpu_us_per_delivery"]:
            deliveries += w["deliveries"]
            for name, us in w["cpu_us_per_delivery"].items():
                used[name] = used.get(name, 0.0) + us * w["deliveries"]
    return {name: round(total / deliveries, 1) for name, total in used.items()} if deliveries else {}


def _start_fleet(stack: BenchStack, plan: Plan) -> tuple[dict[str, RoleProcess], dict[str, Deployed]]:
    manifests = {label: deployed(role) for label, role in ROLES.items()}
    roles = {}
    for label, role in ROLES.items():
        env = dict(manifests[label].env) if plan.deployed_settings else {}
        if plan.fleet_pythonpath:
            env["PYTHONPATH"] = plan.fleet_pythonpath
        roles[label] = stack.start(role, **env)
    return roles, manifests


def run(harness: Harness, plan: Plan) -> dict[str, Any]:
    with harness.stack(plan.mode) as stack:
        pipeline._seed(stack, harness)
        roles, manifests = _start_fleet(stack, plan)
        pids = {label: role.pid for label, role in roles.items()} | {"receiver": harness.receiver.pid}
        burst: dict[str, Any] | None = None
        capacity = plan.capacity
        if capacity is None:
            sizes = pipeline.PipelineSizes(warmup_events=1_000, burst_events=plan.capacity_events)
            burst = pipeline._throughput(harness, stack, pids, sizes)
            capacity = float(burst["per_s"])
            if capacity <= 0:
                raise RuntimeError(f"capacity burst measured no steady rate; see {harness.log_dir}")
        rate = capacity * plan.rate_factor
        harness.receiver.reset()
        token = uuid.uuid4().hex[:8]
        id_prefix = f"evt_{token}"

        def make_event(n: int) -> Event:
            return event_for(f"acct_{n % pipeline.ACCOUNTS:03d}", n, event_id=f"{id_prefix}x{n}")

        with harness.publisher(stack) as publisher:
            publisher.publish_and_wait(make_event(0).model_copy(update={"id": f"{id_prefix}warm"}))
            rows_before = stack.attempt_rows()
            stream = PacedStream(publisher, make_event, rate, plan.minutes * 60)
            tally = Tally(id_prefix, stream.total)
            observer = Observer(harness, stack, roles, plan.window_s)
            stream.start()
            drained_at = _observe_until_drained(observer, tally, stream, stack, plan.drain_timeout_s)
            stream.join()
        if stream.error is not None:
            raise RuntimeError(f"publishing failed: {stream.error}") from stream.error
        recorded = _recorded_events(stack, id_prefix)
        rows = stack.attempt_rows() - rows_before
        peak = {label: _rss_mb(role.pid, "VmHWM") for label, role in roles.items()}
        exit_codes = stack.stop_roles()
    codes = {label: exit_codes.get(f"{plan.mode}-{role}") for label, role in ROLES.items()}
    p99s = [w["p99_ms"] for w in observer.windows if w["p99_ms"] is not None]
    report: dict[str, Any] = {
        "mode": plan.mode,
        "settings": "deploy/k8s" if plan.deployed_settings else "defaults",
        "role_env": {label: m.env for label, m in manifests.items()} if plan.deployed_settings else {},
        "fleet_pythonpath": plan.fleet_pythonpath,
        "capacity_per_s": capacity,
        "capacity_measured": burst,
        "offered_per_s": round(rate, 1),
        "minutes": plan.minutes,
        "published": stream.published,
        "published_per_s": stream.achieved_per_s(),
        "received": tally.received,
        "lost": stream.published - tally.received,
        "duplicates": tally.duplicates,
        "unexpected": tally.others,
        "attempt_rows": rows,
        "events_with_attempt_row": recorded,
        "events_without_attempt_row": stream.published - recorded,
        "drain_s": round(drained_at - stream.ended_at, 1) if drained_at else None,
        "last_receive_after_publishing_s": round(max(0.0, tally.last_arrival - stream.ended_at), 1),
        "p99_ms_worst_window": max(p99s) if p99s else None,
        "cpu_us_per_delivery": cpu_per_delivery(observer.windows),
        "peak_rss_mb": peak,
        "peak_rss_mb_sampled": observer.peak_rss_mb,
        "memory_limit_mib": {label: m.memory_limit_mib for label, m in manifests.items()},
        "peak_rss_of_limit": {label: round(peak[label] / m.memory_limit_mib, 3) for label, m in manifests.items()},
        "rss_slope_mb_per_h": {label: rss_slope_mb_per_h(observer.windows, label) for label in ROLES},
        "backlog_peak": {
            label: max((sum(w["lag"][label].values()) for w in observer.windows), default=0) for label in GROUPS
        },
        "crashed_during_run": observer.crashed,
        "exit_codes": codes,
        "nothing_crashed": not observer.crashed and all(code == 0 for code in codes.values()),
        "windows": observer.windows,
    }
    return report


def _observe_until_drained(
    observer: Observer, tally: Tally, stream: PacedStream, stack: BenchStack, timeout_s: float
) -> float | None:
    """Sample while publishing and afterwards, until every event is received and has its attempt row
    (returns that time), or `timeout_s` after publishing ended (returns None)."""
    while True:
        observer.turn(tally, stream)
        if not stream.is_alive():
            if stream.error is not None:
                return None
            if tally.received >= stream.published and _recorded_events(stack, tally.id_prefix) >= stream.published:
                drained = time.time()
                observer.close_window(tally, stream)
                return drained
            if time.time() - stream.ended_at > timeout_s:
                observer.close_window(tally, stream)
                return None
        time.sleep(0.5)


def table(report: dict[str, Any]) -> list[str]:
    """The markdown table of a soak or overload report."""
    m = report["machine"]
    r = report["results"]
    lines = [
        f"machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gb']} GB, load {m['load_avg_1m_at_start']} "
        f"at start; Python {m['python']}, librdkafka {m['librdkafka']}; role settings: {r['settings']}",
        "",
        "| figure | measured |",
        "|---|---|",
        f"| capacity (deliveries/s) | {r['capacity_per_s']:,.0f} "
        f"({'measured' if r['capacity_measured'] else 'given'}) |",
        f"| offered, published | {r['offered_per_s']:,.0f}/s for {r['minutes']:g} min: {r['published']:,} events at "
        f"{r['published_per_s']:,.0f}/s |",
        f"| lost (not received / no attempt row), duplicates | {r['lost']} / {r['events_without_attempt_row']}, "
        f"{r['duplicates']} |",
        f"| publish-to-receive p99, worst window | {r['p99_ms_worst_window']} ms |",
        f"| CPU per delivery while publishing (us) | total {sum(r['cpu_us_per_delivery'].values()):,.0f}: "
        + ", ".join(f"{name} {us:,.0f}" for name, us in sorted(r["cpu_us_per_delivery"].items(), key=lambda kv: -kv[1]))
        + " |",
        f"| backlog peak (consumer lag) | {_by_label(r['backlog_peak'], '{:,}')} |",
        f"| drain after publishing stopped | {r['drain_s']} s |",
        "| peak RSS / pod limit | "
        + ", ".join(
            f"{label} {r['peak_rss_mb'][label]} / {r['memory_limit_mib'][label]:,.0f} MiB "
            f"({r['peak_rss_of_limit'][label]:.0%})"
            for label in ROLES
        )
        + " |",
        *(
            [f"| RSS slope after the first 2 windows (MiB/h) | {_by_label(r['rss_slope_mb_per_h'], '{}')} |"]
            if r["mode"] == "soak"
            else []
        ),
        f"| nothing crashed (exit codes) | {'yes' if r['nothing_crashed'] else 'NO'} "
        f"({_by_label(r['exit_codes'], '{}')}) |",
    ]
    if r["windows"]:
        lines += [
            "",
            "| t (s) | phase | deliveries/s | p50 ms | p99 ms | lag (dispatcher, recorder) | RSS MiB (d, r, s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for w in r["windows"]:
            lag = ", ".join(f"{sum(w['lag'][label].values()):,}" for label in ("dispatcher", "recorder"))
            rss = ", ".join(str(w["rss_mb"][label]) for label in ROLES)
            lines.append(
                f"| {w['t_s']:g} | {w['phase']} | {w['per_s']:,.0f} | {w['p50_ms']} | {w['p99_ms']} | {lag} | {rss} |"
            )
    return lines


def _by_label(values: dict[str, Any], form: str) -> str:
    return ", ".join(f"{label} {form.format(value)}" for label, value in values.items())


def main(mode: str, rate_factor: float, minutes: float, window_s: float, drain_timeout_s: float) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{mode}", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=minutes, help=f"of publishing (default {minutes:g})")
    parser.add_argument("--capacity", type=float, help="deliveries/s; measured by a burst at the start when not given")
    parser.add_argument("--capacity-events", type=int, default=10_000, help="the capacity burst's size")
    parser.add_argument("--drain-timeout-s", type=float, default=drain_timeout_s)
    parser.add_argument("--fleet-pythonpath", help="PYTHONPATH for every role process: a checkout to run instead")
    parser.add_argument("--defaults", action="store_true", help="built-in settings, not those of deploy/k8s")
    parser.add_argument("--name", default=mode, help="report name: bench/results/<name>.json")
    args = parser.parse_args()
    plan = Plan(
        mode=mode,
        rate_factor=rate_factor,
        minutes=args.minutes,
        window_s=window_s,
        drain_timeout_s=args.drain_timeout_s,
        capacity=args.capacity,
        capacity_events=args.capacity_events,
        fleet_pythonpath=args.fleet_pythonpath,
        deployed_settings=not args.defaults,
    )
    with bench_session(mode, args.name) as (harness, report):
        report["results"] = run(harness, plan)
    print("\n".join(table(report)))
    print(f"\nwritten: {report['written']} (took {report['duration_s']:.0f} s; role logs in {report['logs']})")
    return 0 if report["results"]["nothing_crashed"] and report["results"]["lost"] == 0 else 1
