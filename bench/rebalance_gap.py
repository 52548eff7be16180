"""Delivery gaps across group membership changes, static members (HOOKFLEET_INSTANCE_ID) against dynamic ones.

Under a steady paced load (20 accounts, one webhook each), one fleet per mode runs four phases:

- steady: one dispatcher (`a`);
- join: a second dispatcher (`b`) joins;
- leave: `b` is stopped with SIGTERM (a static member leaves its group explicitly: hookfleet/stream/leave_group.py);
- restart: `a` is killed (kill -9) and started again at once under the same name.

Per phase: the longest gap in all deliveries (receiver arrivals in 100 ms bins) and the longest gap any one
webhook saw (a webhook is one partition's: a stall of the partitions that change hands shows there even while
the others flow). For the restart: the time from the new process's start to the first delivery of an event
published after the kill (what the killed process cannot have sent). Lost = published and never received.

    python -m bench.rebalance_gap                         # 1,000 events/s, 12 s per phase, both modes
    python -m bench.rebalance_gap --rate 200 --phase-s 12 # small, to check it works
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import defaultdict
from typing import Any

from bench.harness import Harness, bench_session, collect, event_for
from bench.stack import BenchStack
from schemas.catalog import PRODUCT_TYPES

ACCOUNTS = 20
BIN_S = 0.1
PHASES = ("steady", "join", "leave", "restart")


class PacedPublisher:
    """Publishes `rate` events/s round-robin over the accounts on its own thread until stopped; remembers
    when each event was published."""

    def __init__(self, harness: Harness, stack: BenchStack, accounts: list[str], rate: float) -> None:
        self._publisher = harness.publisher(stack)
        self._accounts = accounts
        self._rate = rate
        self._stop = threading.Event()
        self.published: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="bench-publisher", daemon=True)

    def start(self) -> PacedPublisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        n = 0
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self._rate) + 1
            while n < due:
                event = event_for(self._accounts[n % len(self._accounts)], n)
                self.published[event.id] = time.time()
                self._publisher.publish(event)
                n += 1
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._publisher.flush(60)
        self._publisher.close()


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest run of empty `BIN_S` bins between `start` and `end`, in seconds."""
    bins = int((end - start) / BIN_S) + 1
    filled = [False] * bins
    for at in times:
        if start <= at < end:
            filled[int((at - start) / BIN_S)] = True
    longest = run = 0
    for full in filled:
        run = 0 if full else run + 1
        longest = max(longest, run)
    return round(longest * BIN_S, 1)


def _phases(harness: Harness, stack: BenchStack, static: bool, phase_s: float) -> tuple[dict[str, float], float]:
    """Run the four phases; returns each phase's start (wall time) plus "end", and the restart's start."""
    names = {"a": {"HOOKFLEET_INSTANCE_ID": "bench-a"}, "b": {"HOOKFLEET_INSTANCE_ID": "bench-b"}} if static else {}
    first = stack.start("dispatcher", "a", **names.get("a", {}))
    marks: dict[str, float] = {"steady": time.time()}  # once it owns its partitions: its start is no gap
    time.sleep(phase_s)  # the phase's length, by design
    marks["join"] = time.time()
    second = stack.start("dispatcher", "b", **names.get("b", {}))
    time.sleep(phase_s)
    marks["leave"] = time.time()
    second.stop()
    time.sleep(phase_s)
    marks["restart"] = time.time()
    first.proc.kill()
    first.proc.wait(10)
    restarted_at = time.time()
    stack.start("dispatcher", "a-again", **names.get("a", {}))
    time.sleep(max(0.0, restarted_at + phase_s - time.time()))
    marks["end"] = time.time()
    return marks, restarted_at


def run_mode(harness: Harness, static: bool, rate: float, phase_s: float) -> dict[str, Any]:
    mode = "static" if static else "dynamic"
    harness.receiver.reset()
    with harness.stack(f"gap-{mode}") as stack:
        accounts = [f"acct_{n:03d}" for n in range(ACCOUNTS)]
        stack.seed([(a, harness.receiver.url(f"/fast/{a}"), list(PRODUCT_TYPES)) for a in accounts])
        stack.start("retry-scheduler")
        publisher = PacedPublisher(harness, stack, accounts, rate).start()
        try:
            marks, restarted_at = _phases(harness, stack, static, phase_s)
        finally:
            publisher.stop()
        killed_at = marks["restart"]
        arrivals = collect(harness.receiver, set(publisher.published), timeout_s=60)
        raw = harness.receiver.arrivals(0)
        exit_codes = stack.stop_roles()
    by_path: dict[str, list[float]] = defaultdict(list)
    for at, _, path in raw:
        by_path[path].append(at)
    every = sorted(at for at, _, _ in raw)
    phases = {}
    for name, end in zip(PHASES, [*PHASES[1:], "end"], strict=True):
        start, stop = marks[name], marks[end]
        phases[name] = {
            "longest_gap_s": longest_gap(every, start, stop),
            "longest_webhook_gap_s": max(longest_gap(times, start, stop) for times in by_path.values()),
        }
    after_kill = [arrivals.first[e] for e, at in publisher.published.items() if at > killed_at and e in arrivals.first]
    return {
        "mode": mode,
        "rate_per_s": rate,
        "phase_s": phase_s,
        "phases": phases,
        "restart_first_delivery_s": round(min(after_kill) - restarted_at, 2) if after_kill else None,
        "published": len(publisher.published),
        "lost": len(publisher.published) - len(arrivals.first),
        "duplicates": arrivals.duplicates,
        "exit_codes": exit_codes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rebalance_gap", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second, steady")
    parser.add_argument("--phase-s", type=float, default=12.0, help="seconds per phase (> the 10 s session timeout)")
    parser.add_argument("--modes", default="static,dynamic")
    args = parser.parse_args()
    with bench_session("rebalance-gap", "rebalance_gap") as (harness, report):
        report["runs"] = []
        for mode in args.modes.split(","):
            result = run_mode(harness, mode == "static", args.rate, args.phase_s)
            report["runs"].append(result)
            print(json.dumps(result), flush=True)
    print(f"written: {report['written']} (role logs in {report['logs']})")


if __name__ == "__main__":
    main()
