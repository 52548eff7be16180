"""`make bench`: every benchmark in one run, each figure beside its target and the ceiling of the same run.

    .venv/bin/python -m bench                 # the full suite (about 8 minutes), writes bench/results/suite.json
    .venv/bin/python -m bench --quick         # small sizes, to check the harness
    .venv/bin/python -m bench --only ceiling,pipeline
    .venv/bin/python -m bench --profile       # the throughput run with the dispatcher under pyinstrument

One receiver process serves every benchmark. The ceiling is measured first, then the pipeline
(throughput, latency at half of it, fan-out), the noisy neighbour, the memory run and, when present,
bench/retry_lateness.py. Each end-to-end benchmark gets its own topics, schema and role processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import ceiling, machine, memory, noisy_neighbour, pipeline, regressions, single_account
from bench.harness import Harness
from bench.receiver import Receiver
from demo.tls import make_demo_certs
from hookfleet.settings import LOCAL_DATABASE_URL, LOCAL_KAFKA

ALL = ("ceiling", "pipeline", "single_account", "noisy", "memory", "retry_lateness")
SLOW_MS = 2_000
CEILING_CONCURRENCY = (16, 64)
CEILING_LOOPS = ("asyncio", "uvloop")

TARGETS = {
    "throughput_vs_ceiling": 0.8,
    "latency_p99_ms": 100.0,
    "fanout_100_s": 1.0,
    "peak_rss_mb": 150.0,
    "noisy_ratio": 0.9,
    "retry_lateness_ms": 1000,
    "single_account_p99_over_receiver_bound_s": 1.0,
}


LATENESS_LABELS = {
    "burst_10k_due_at_once": "10,000 due at once",
    "spread_10k_over_60s": "10,000 due over 60 s, in all three delay topics",
    "relayed_retry_after_15s_to_130s": "Retry-After waits of 15-130 s among ordinary retries",
    "relayed_retry_after_10min_and_1h": "Retry-After waits of 10 min and 1 h among ordinary retries",
}


def _ceiling(receiver: Receiver, ca: Path, seconds: float) -> dict[str, Any]:
    runs = [
        ceiling.measure(receiver.base, ca, concurrency, seconds, loop)
        for loop in CEILING_LOOPS
        for concurrency in CEILING_CONCURRENCY
    ]
    best = max(runs, key=lambda r: float(r["per_s"]))
    return {"per_s": best["per_s"], "best": best, "runs": runs}


def _retry_lateness(bootstrap: str) -> dict[str, Any] | None:
    try:
        from bench import retry_lateness
    except ImportError:
        return None
    report: dict[str, Any] = retry_lateness.run(bootstrap)
    machine.save_report("retry_lateness", report)
    return report


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def table(report: dict[str, Any]) -> list[str]:
    """The markdown table of a report (printed, and what bench/RESULTS.md carries)."""
    m = report["machine"]
    lines = [
        f"machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gb']} GB, load {m['load_avg_1m_at_start']} "
        f"at start; Python {m['python']}, aiohttp {m['aiohttp']}, librdkafka {m['librdkafka']}",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
    ]
    results = report["results"]
    top = results.get("ceiling", {}).get("per_s")
    if top:
        best = results["ceiling"]["best"]
        lines.append(
            f"| ceiling: raw aiohttp client -> receiver | {top:,.0f} req/s ({best['loop']}, "
            f"{best['concurrency']} connections) | the number to beat | |"
        )
    pipe = results.get("pipeline")
    if pipe:
        thr = pipe["throughput"]
        ratio = thr["per_s"] / top if top else None
        shown = f"{thr['per_s']:,.0f} deliveries/s" + (f" = {ratio:.2f} x ceiling" if ratio else "")
        target = TARGETS["throughput_vs_ceiling"]
        lines.append(
            f"| end-to-end throughput (steady state, {thr['events']:,} events) | {shown} | >= {target} x ceiling "
            f"| {_verdict(None if ratio is None else ratio >= target)} |"
        )
        per = thr.get("cpu_us_per_delivery", {})
        if per:
            parts = ", ".join(f"{name} {us:,.0f}" for name, us in sorted(per.items(), key=lambda kv: -kv[1]))
            lines.append(
                f"| whole system: CPU per delivery (us) in that run | total {sum(per.values()):,.0f}: {parts} | - | - |"
            )
    lat = pipe.get("latency") if pipe else None
    if pipe and lat:
        lines.append(
            f"| publish-to-receive latency at {lat['offered_per_s']:,.0f}/s | p50 {lat['p50_ms']} ms, "
            f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms | p99 <= 100 ms "
            f"| {_verdict(lat['p99_ms'] <= TARGETS['latency_p99_ms'])} |"
        )
    if pipe and "fanout" in pipe:
        for size, fan in pipe["fanout"].items():
            target_s = TARGETS["fanout_100_s"] if size == "100" else None
            lines.append(
                f"| fan-out: 1 event -> {int(size):,} webhooks, until all received | median {fan['median_s']} s "
                f"(first {fan['first_s']} s, worst {fan['max_s']} s) | "
                f"{'<= 1 s' if target_s else 'none'} | {_verdict(None if target_s is None else fan['max_s'] <= 1)} |"
            )
    one = results.get("single_account")
    if one:
        over = one["p99_over_receiver_bound_s"]
        lines.append(
            f"| one account's burst: {one['events']:,} events x {one['webhooks']} fast webhooks | "
            f"{one['parked']} parked, {one['duplicates']} duplicates, {one['per_s']:,.0f}/s, p50 {one['p50_s']} s, "
            f"p99 {one['p99_s']} s (receiver-bound p99 {one['receiver_bound_p99_s']} s) | 0 parked, p99 within 1 s "
            f"of receiver-bound | {_verdict(None if over is None else one['parked'] == 0 and over <= 1.0)} |"
        )
    mem = results.get("memory")
    if mem:
        lines.append(
            f"| dispatcher peak RSS, {mem['receiver_peak_concurrent']:,} deliveries in flight "
            f"({mem['slow_ms']} ms receiver) | {mem['peak_rss_mb']} MB (idle {mem['idle_rss_mb']} MB; with "
            f"{mem['with_queued']['queued_behind']:,} more queued: {mem['with_queued']['peak_rss_mb']} MB) | <= 150 MB "
            f"| {_verdict(mem['peak_rss_mb'] <= TARGETS['peak_rss_mb'])} |"
        )
    noisy = results.get("noisy")
    if noisy:
        lines.append(
            f"| noisy neighbour: healthy throughput with a hanging endpoint taking 20 % vs without it "
            f"| {noisy['ratio']:.2f} "
            f"({noisy['noisy']['healthy_per_s']:,.0f} vs {noisy['baseline']['healthy_per_s']:,.0f}/s) | >= 0.9 "
            f"| {_verdict(noisy['ratio'] >= TARGETS['noisy_ratio'])} |"
        )
    lateness = results.get("retry_lateness")
    if lateness:
        for name, s in lateness["scenarios"].items():
            if "p99_ms" in s:
                label = LATENESS_LABELS.get(name, name)
                lines.append(
                    f"| retry lateness, {label} | p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms "
                    f"| within 1 s | {_verdict(s['max_ms'] <= TARGETS['retry_lateness_ms'])} |"
                )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness, not the figures")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--profile", action="store_true", help="profile the dispatcher during the throughput run")
    parser.add_argument("--events", type=int, help="override the throughput burst size")
    parser.add_argument(
        "--dispatcher-pythonpath",
        help="run the dispatcher from another checkout (a `git worktree` of an older commit) for before/after",
    )
    parser.add_argument("--name", default="suite", help="results file name: bench/results/<name>.json")
    args = parser.parse_args()
    chosen = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = set(chosen) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {','.join(ALL)}")

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", LOCAL_KAFKA)
    database_url = os.environ.get("DATABASE_URL", LOCAL_DATABASE_URL)
    workdir = Path(tempfile.mkdtemp(prefix="hookfleet-bench-"))
    ca, cert, key = make_demo_certs(workdir / "tls")
    report: dict[str, Any] = {
        "benchmark": args.name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "quick": args.quick,
        "targets": TARGETS,
        "logs": str(workdir),
        "results": {},
    }
    results: dict[str, Any] = report["results"]
    receiver = Receiver(cert, key, ca, workdir, SLOW_MS)
    harness = Harness(bootstrap, database_url, receiver, ca, workdir)
    if args.dispatcher_pythonpath:
        harness.dispatcher_env["PYTHONPATH"] = args.dispatcher_pythonpath
        report["dispatcher_pythonpath"] = args.dispatcher_pythonpath
    profile = workdir / "dispatcher.pyisession"
    if args.profile:
        harness.dispatcher_prefix = (sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(profile))
    began = time.monotonic()
    try:
        if "ceiling" in chosen:
            results["ceiling"] = _ceiling(receiver, ca, seconds=3 if args.quick else 8)
            print(f"ceiling: {results['ceiling']['per_s']:,.0f} req/s", flush=True)
        if "pipeline" in chosen:
            sizes = pipeline.PipelineSizes(
                **({"warmup_events": 200, "burst_events": 3_000, "latency_seconds": 4, "fanout_rounds": 2}
                   if args.quick else {})
            )  # fmt: skip
            if args.events:
                sizes = dataclasses.replace(sizes, burst_events=args.events)
            results["pipeline"] = pipeline.run(harness, sizes, throughput_only=args.profile)
            print(f"pipeline: {results['pipeline']['throughput']['per_s']:,.0f} deliveries/s", flush=True)
        if "single_account" in chosen and not args.profile:
            one_sizes = single_account.SingleAccountSizes(events=1_000 if args.quick else 5_000)
            top = results.get("ceiling", {}).get("per_s")
            results["single_account"] = single_account.run(harness, one_sizes, top)
            print(f"single account: p99 {results['single_account']['p99_s']} s", flush=True)
        if "noisy" in chosen and not args.profile:
            noisy_sizes = noisy_neighbour.NoisySizes(events=3_000) if args.quick else noisy_neighbour.NoisySizes()
            results["noisy"] = noisy_neighbour.run(harness, noisy_sizes)
            print(f"noisy neighbour: {results['noisy']['ratio']:.2f}", flush=True)
        if "memory" in chosen and not args.profile:
            results["memory"] = memory.run(harness, memory.MemorySizes())
            print(f"memory: {results['memory']['peak_rss_mb']} MB", flush=True)
        if "retry_lateness" in chosen and not args.profile and not args.quick:
            lateness = _retry_lateness(bootstrap)
            if lateness is not None:
                results["retry_lateness"] = lateness
    finally:
        receiver.stop()
        report["duration_s"] = round(time.monotonic() - began, 1)
        report["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
        out = machine.save_report(args.name, report)
    print("\n".join(table(report)))
    if args.profile and profile.exists():
        print(f"dispatcher profile: {sys.executable} -m pyinstrument --load={profile} -r text --show-all")
    print(f"\nwritten: {out} (took {report['duration_s']:.0f} s; role logs in {workdir})")
    print(regressions.closing_line(table(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
