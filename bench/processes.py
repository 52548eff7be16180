"""One vs N dispatcher processes (`hookfleet dispatcher --processes N`), end to end, back to back.

The pipeline's throughput burst (bench/pipeline.py: 20 accounts, one webhook each, recorder and retry
scheduler alongside) against the same receiver, once per configuration. Dispatcher CPU is the sum over
the child processes (the parent only supervises). On a 2-core machine the broker, PostgreSQL, the
recorder and the receiver share the cores with the dispatchers, so this shows what a second process
gives *here*; on a host whose cores are the dispatcher's own, the GIL-bound event loop is the cap.

    python -m bench.processes --events 10000 --processes 1,2
    python -m bench.processes --before /tmp/before-checkout      # adds the before checkout, 1 process
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine, pipeline
from bench.harness import Harness
from bench.receiver import Receiver
from bench.stack import cpu_seconds
from demo.tls import make_demo_certs
from hookfleet.settings import LOCAL_DATABASE_URL, LOCAL_KAFKA


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _one(harness: Harness, processes: int, pythonpath: str | None, sizes: pipeline.PipelineSizes) -> dict[str, Any]:
    harness.dispatcher_env = {"PYTHONPATH": pythonpath} if pythonpath else {}
    harness.dispatcher_prefix = ()
    if processes > 1:  # `hookfleet dispatcher --processes N` through the harness's `-m hookfleet.cli <role>` form
        script = f'exec "$0" "$@" --processes {processes}'
        harness.dispatcher_prefix = ("/bin/sh", "-c", script, sys.executable)
    with harness.stack(f"processes{processes}") as stack:
        pipeline._seed(stack, harness)
        parent = harness.start_dispatcher(stack)
        deadline = time.monotonic() + 60
        dispatchers = [parent] if processes == 1 else []
        while processes > 1 and len(dispatchers) < processes and time.monotonic() < deadline:
            time.sleep(0.5)
            dispatchers = _children(parent)
        time.sleep(3 if processes > 1 else 0)  # let the group settle: every child holds partitions
        recorder = stack.start("recorder").pid
        stack.start("retry-scheduler")
        before = {pid: cpu_seconds(pid) for pid in dispatchers}
        pids = {"recorder": recorder, "receiver": harness.receiver.pid}
        throughput = pipeline._throughput(harness, stack, pids, sizes)
        dispatcher_cpu = sum(cpu_seconds(pid) - before[pid] for pid in dispatchers)
        exit_codes = stack.stop_roles()
    received = max(throughput["received"], 1)
    return {
        "processes": processes,
        "pythonpath": pythonpath,
        "per_s": throughput["per_s"],
        "received": throughput["received"],
        "duplicates": throughput["duplicates"],
        "dispatcher_cpu_s": round(dispatcher_cpu, 2),
        "dispatcher_cpu_us_per_delivery": round(dispatcher_cpu / received * 1e6, 1),
        "cpu_s": throughput["cpu"]["cpu_s"],
        "window_s": throughput["cpu"]["window_s"],
        "machine_busy": throughput["cpu"]["machine_busy"],
        "exit_codes": exit_codes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.processes", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--before", help="a checkout of the previous dispatcher, run with 1 process first")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hookfleet-processes-"))
    ca, cert, key = make_demo_certs(workdir / "tls")
    receiver = Receiver(cert, key, ca, workdir, 2000)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", LOCAL_KAFKA)
    database_url = os.environ.get("DATABASE_URL", LOCAL_DATABASE_URL)
    harness = Harness(bootstrap, database_url, receiver, ca, workdir)
    sizes = pipeline.PipelineSizes(warmup_events=1_000, burst_events=args.events)
    plan: list[tuple[int, str | None]] = [(1, args.before)] if args.before else []
    plan += [(int(n), None) for n in args.processes.split(",")]
    report: dict[str, Any] = {"machine": machine.describe(), "runs": []}
    try:
        for processes, pythonpath in plan:
            result = _one(harness, processes, pythonpath, sizes)
            report["runs"].append(result)
            print(json.dumps(result), flush=True)
    finally:
        receiver.stop()
    report["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    out = machine.save_report("processes", report)
    print(f"written: {out} (role logs in {workdir})")


if __name__ == "__main__":
    main()
