"""The whole fleet's CPU per delivery, tree against tree, in alternating pairs.

Every role (dispatcher, recorder, retry scheduler) runs from the tree under test (`PYTHONPATH`), against one
broker and PostgreSQL: a burst of events to 20 accounts (bench/pipeline.py's seeding), measured from the
first publish until the recorder has every attempt row, so the recorder's and the database's work is all
inside the window. Fleet = dispatcher + broker + recorder + PostgreSQL + retry scheduler; the receiver and
the publishing benchmark are reported apart (they are the test's, not the fleet's).

    python -m bench.fleet_cost --tree before=/work/snap-6890 --tree after=. --pairs 3
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19192 python -m bench.fleet_cost ...   # a broker no other work uses

The order inside a pair alternates (A B, B A, ...), so a machine that gets busier during the run weighs on
both sides alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import pipeline
from bench.harness import (
    CpuMeter,
    Harness,
    alternating,
    bench_session,
    collect,
    event_for,
    parse_trees,
    publish_burst,
    steady_rate,
)
from bench.stack import BenchStack

FLEET = ("dispatcher", "kafka broker", "recorder", "postgresql", "retry scheduler")


def _wait_rows(stack: BenchStack, expected: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    rows = stack.attempt_rows()
    while rows < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = stack.attempt_rows()
    return rows


def run_once(
    harness: Harness,
    name: str,
    tree: str | None,
    events: int,
    warmup: int = 1_000,
    role_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One fleet from `tree` (None: this checkout) with `role_env` set for every role, one burst; CPU from
    the first publish to the last row."""
    env = {**({"PYTHONPATH": str(Path(tree).resolve())} if tree else {}), **(role_env or {})}
    receiver = harness.receiver
    with harness.stack(f"fleet-{name}") as stack:
        pipeline._seed(stack, harness)
        pids = {
            "dispatcher": stack.start("dispatcher", **env).pid,
            "recorder": stack.start("recorder", **env).pid,
            "retry scheduler": stack.start("retry-scheduler", **env).pid,
            "receiver": receiver.pid,
        }
        with harness.publisher(stack) as publisher:
            warm = [event_for(f"acct_{n % pipeline.ACCOUNTS:03d}", n) for n in range(warmup)]
            publish_burst(publisher, warm)
            if len(collect(receiver, {e.id for e in warm}, 60).first) < warmup:
                raise RuntimeError(f"{name}: warm-up deliveries did not all arrive; see {harness.log_dir}")
            _wait_rows(stack, warmup, 60)
            time.sleep(1.0)  # the warm-up's last commits
            receiver.reset()
            burst = [event_for(f"acct_{n % pipeline.ACCOUNTS:03d}", warmup + n) for n in range(events)]
            messages_before = {t: stack.topic_messages(t) for t in (stack.topics.deliveries, stack.topics.attempts)}
            meter = CpuMeter(pids)
            started, _acked = publish_burst(publisher, burst)
            got = collect(receiver, {e.id for e in burst}, timeout_s=300)
            rows = _wait_rows(stack, warmup + events, 180)
            cpu = meter.read()
            messages = {t: stack.topic_messages(t) - n for t, n in messages_before.items()}
        exit_codes = stack.stop_roles()
    times = sorted(got.first.values())
    delivered = max(len(times), 1)
    per_delivery = {k: round(v / delivered * 1e6, 1) for k, v in cpu["cpu_s"].items()}
    return {
        "tree": name,
        "events": events,
        "received": len(got.first),
        "duplicates": got.duplicates,
        "attempt_rows": rows - warmup,
        "per_s": steady_rate(times),
        "window_s": cpu["window_s"],
        "last_receive_after_s": round(times[-1] - started, 2) if times else None,
        "machine_busy": cpu["machine_busy"],
        "cpu_us_per_delivery": per_delivery,
        "fleet_us_per_delivery": round(sum(per_delivery.get(k, 0.0) for k in FLEET), 1),
        "kafka_messages_per_delivery": {
            topic.rpartition(".")[2]: round(count / delivered, 3) for topic, count in messages.items()
        },
        "exit_codes": exit_codes,
    }


def _row(result: dict[str, Any]) -> str:
    us = result["cpu_us_per_delivery"]
    parts = " | ".join(f"{us.get(k, 0.0):.0f}" for k in FLEET)
    exact = "yes" if result["received"] == result["events"] == result["attempt_rows"] else "NO"
    attempts = result["kafka_messages_per_delivery"]["attempts"]
    return (
        f"| {result['tree']} | {result['per_s']:,.0f} | **{result['fleet_us_per_delivery']:.0f}** | {parts} | "
        f"{us.get('receiver', 0.0):.0f} | {attempts:.3f} | {exact} ({result['duplicates']} dup) |"
    )


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| tree | deliveries/s | fleet us | dispatcher | broker | recorder | postgresql | scheduler | receiver "
        "| attempts messages / delivery | exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(r) for r in results]
    names = list(dict.fromkeys(r["tree"] for r in results))
    for key in ("fleet_us_per_delivery", "kafka broker"):
        medians = []
        for name in names:
            values = [
                r[key] if key in r else r["cpu_us_per_delivery"].get(key, 0.0) for r in results if r["tree"] == name
            ]
            medians.append(f"{name} {statistics.median(values):.0f}")
        lines.append(f"\nmedian {key}: " + ", ".join(medians))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="name=path of a checkout (repeat); . is this one")
    parser.add_argument(
        "--env", action="append", default=[], help="name:KEY=VALUE, a setting for every role of tree `name` (repeat)"
    )
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--name", default="fleet_cost")
    args = parser.parse_args()
    trees = parse_trees(args.tree)
    role_env: dict[str, dict[str, str]] = {}
    for spec in args.env:
        tree, _, setting = spec.partition(":")
        key, _, value = setting.partition("=")
        role_env.setdefault(tree, {})[key] = value
    with bench_session("fleet-cost", args.name) as (harness, report):
        report["runs"] = []
        for pair, name, path in alternating(trees, args.pairs):
            result = run_once(harness, name, path, args.events, role_env=role_env.get(name))
            result["pair"] = pair
            result["load_avg_1m"] = round(os.getloadavg()[0], 2)
            report["runs"].append(result)
            print(_row(result), flush=True)
    print("\n".join(table(report["runs"])))
    print(f"\nwritten: {report['written']}; role logs in {report['logs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
