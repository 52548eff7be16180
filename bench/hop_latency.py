"""Publish-to-receive latency at fixed rates, tree against tree, in alternating pairs.

The second hop (fan-out -> deliveries topic -> delivery stage) adds a produce and a fetch to every event's
path; this measures what it costs at a rate far below capacity (100/s: the p50 is the path's own time) and
at a moderate one (400/s: the p99). Every role runs from the tree under test (bench/fleet_cost.py's
`run_once` layout: dispatcher, recorder, retry scheduler), 20 accounts with one webhook each.

    python -m bench.hop_latency --tree single-stage=/work/snap-3e37 --tree this=. --pairs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import pipeline
from bench.harness import Harness, alternating, bench_session, parse_trees


def run_once(harness: Harness, name: str, tree: str | None, rates: list[float], seconds: float) -> dict[str, Any]:
    env = {"PYTHONPATH": str(Path(tree).resolve())} if tree else {}
    with harness.stack(f"hop-{name}") as stack:
        pipeline._seed(stack, harness)
        for role in ("dispatcher", "recorder", "retry-scheduler"):
            stack.start(role, **env)
        pipeline._latency(harness, stack, 50, 2)  # warm-up: connections, the producer's id, JIT-free paths
        by_rate = {str(int(rate)): pipeline._latency(harness, stack, rate, seconds) for rate in rates}
        exit_codes = stack.stop_roles()
    return {"tree": name, "latency": by_rate, "exit_codes": exit_codes}


def _row(result: dict[str, Any]) -> str:
    cells = [
        f"p50 {lat['p50_ms']:.1f} / p99 {lat['p99_ms']:.1f} ({lat['received']}/{lat['events']})"
        for lat in result["latency"].values()
    ]
    return f"| {result['tree']} | " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hop_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="name=path of a checkout (repeat); . is this one")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rates", default="100,400")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--name", default="hop_latency")
    args = parser.parse_args()
    trees = parse_trees(args.tree)
    rates = [float(r) for r in args.rates.split(",")]
    header = "| tree | " + " | ".join(f"{int(r)}/s" for r in rates) + " |"
    with bench_session("hop-latency", args.name) as (harness, report):
        report["runs"] = []
        for pair, name, path in alternating(trees, args.pairs):
            result = run_once(harness, name, path, rates, args.seconds)
            result["pair"] = pair
            result["load_avg_1m"] = round(os.getloadavg()[0], 2)
            report["runs"].append(result)
            print(_row(result), flush=True)
    print(header + "\n|---|" + "---|" * len(rates))
    print("\n".join(_row(r) for r in report["runs"]))
    for name, _ in trees:
        for rate in rates:
            runs = [r["latency"][str(int(rate))] for r in report["runs"] if r["tree"] == name]
            p50 = statistics.median(r["p50_ms"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            print(f"median {name} at {int(rate)}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"\nwritten: {report['written']}; role logs in {report['logs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
