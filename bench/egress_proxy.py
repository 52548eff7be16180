"""What delivering through an egress proxy (HOOKFLEET_EGRESS_PROXY) costs per delivery, against direct.

The same `Deliverer` (the dispatcher's delivery path, uvloop, in a child process of its own) posts N signed
events to the benchmark receiver (bench/receiver.py), direct or through a squid started for the run (Debian's
package, tests/support/squid.py's config: no cache, no ACL beyond CONNECT). Per delivery: the child's CPU
(user + system, every thread: what the dispatcher pays), squid's CPU (what the proxy host pays) and the
receiver's. Two ways of connecting:

- `kept`: C concurrent deliveries on kept-alive connections (the steady state: one CONNECT per connection,
  then only the tunnel's relaying);
- `fresh`: every delivery on a new connection (no idle connection reused), one at a time: TCP, CONNECT and
  the TLS handshake each time, the worst case (a host delivered to less often than every 30 s).

Runs alternate direct and proxied so other load on the shared machine hits both alike.

    python -m bench.egress_proxy --deliveries 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine
from bench.receiver import Receiver

MODES = ("kept", "fresh")


async def _deliver(args: argparse.Namespace) -> dict[str, Any]:
    from delivery import deliverer as delivery
    from delivery.endpoint import Endpoint
    from delivery.signing import new_secret
    from hookfleet.settings import DeliverySettings
    from producer.publisher import build_event
    from schemas.catalog import EventType, sample_data

    if args.mode == "fresh":
        delivery.KEEPALIVE_S = -1.0  # every idle connection is too old (0 is not: uvloop's clock is per tick)
    settings = DeliverySettings(ca_bundle=args.ca, allow_networks=["127.0.0.0/8"], egress_proxy=args.proxy or None)
    deliverer = delivery.Deliverer(settings)
    endpoint = Endpoint("wh_bench", "acct_bench", f"{args.base}/fast/proxy", frozenset(EventType), True, new_secret())
    event = build_event("acct_bench", EventType.MESSAGE_READ, sample_data(EventType.MESSAGE_READ))
    body = event.body()
    failed = 0
    remaining = args.warmup + args.deliveries

    async def worker() -> None:
        nonlocal remaining, failed
        while remaining > 0:
            remaining -= 1
            if not (await deliverer.deliver(endpoint, event, 1, body)).ok:
                failed += 1

    def cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    started_cpu, started = cpu_s(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.connections)))
    cpu, wall = cpu_s() - started_cpu, time.monotonic() - started
    await deliverer.close()
    total = args.warmup + args.deliveries
    return {"deliveries": total, "failed": failed, "client_cpu_s": cpu, "wall_s": wall}


def _child(args: argparse.Namespace) -> None:
    import uvloop

    print(json.dumps(uvloop.run(_deliver(args))), flush=True)


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(
    route: str, mode: str, receiver: Receiver, squid_pid: int, proxy_url: str, ca: Path, args: argparse.Namespace
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.egress_proxy", "--child", "--mode", mode, "--base", receiver.base]
    cmd += ["--ca", str(ca), "--deliveries", str(args.deliveries), "--warmup", str(args.warmup)]
    cmd += ["--connections", str(args.connections if mode == "kept" else 1)]
    if route == "proxy":
        cmd += ["--proxy", proxy_url]
    receiver.reset()
    receiver_before, squid_before = _proc_cpu_s(receiver.pid), _proc_cpu_s(squid_pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    receiver_cpu, squid_cpu = _proc_cpu_s(receiver.pid) - receiver_before, _proc_cpu_s(squid_pid) - squid_before
    if out.returncode != 0:
        raise SystemExit(f"{route} {mode} failed:\n{out.stderr[-3000:]}")
    got: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    n = got["deliveries"]
    # The client's CPU is counted after its imports; the receiver's and squid's over the whole child run
    # (warm-up deliveries included, so they are divided by every delivery made).
    return {
        "route": route,
        "mode": mode,
        "deliveries": n,
        "failed": got["failed"],
        "per_s": round(n / got["wall_s"], 1),
        "client_us": round(got["client_cpu_s"] / n * 1e6, 1),
        "proxy_us": round(squid_cpu / n * 1e6, 1) if route == "proxy" else 0.0,
        "receiver_us": round(receiver_cpu / n * 1e6, 1),
        "receiver_connections": receiver.stats()["client_connections"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.egress_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=5000, help="counted deliveries per run (kept mode)")
    parser.add_argument("--fresh-deliveries", type=int, default=1000, help="counted deliveries per run (fresh mode)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--connections", type=int, default=16, help="concurrent deliveries in kept mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--proxy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    from demo.tls import make_demo_certs
    from tests.support.squid import Squid

    workdir = Path(tempfile.mkdtemp(prefix="hookfleet-egress-proxy-"))
    ca, cert, key = make_demo_certs(workdir / "tls")
    receiver = Receiver(cert, key, ca, workdir, slow_ms=2000)
    squid = Squid().start()
    assert squid.pid is not None
    report: dict[str, Any] = {"machine": machine.describe(), "runs": []}
    started = time.monotonic()
    try:
        for _ in range(args.rounds):
            for mode in args.modes.split(","):
                counted = argparse.Namespace(**{**vars(args), "deliveries": args.fresh_deliveries})
                for route in ("direct", "proxy"):
                    run = _measure(
                        route, mode, receiver, squid.pid, squid.url, ca, counted if mode == "fresh" else args
                    )
                    report["runs"].append(run)
                    print(json.dumps(run), flush=True)
    finally:
        squid.stop()
        receiver.stop()
    report["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    report["took_s"] = round(time.monotonic() - started, 1)
    report["median"] = _summary(report["runs"], args.modes.split(","))
    print(json.dumps({"machine": report["machine"], "load_avg_1m_at_end": report["load_avg_1m_at_end"]}))
    print("mode   dispatcher us/delivery: direct, proxied, paired difference | squid us/delivery")
    for mode, row in report["median"].items():
        print(
            f"{mode:6} {row['direct_client_us']:8.1f} {row['proxy_client_us']:8.1f} {row['client_added_us']:+8.1f}"
            f" | {row['proxy_us']:8.1f}"
        )
    print(f"written: {machine.save_report('egress_proxy', report)}")


def _summary(runs: list[dict[str, Any]], modes: list[str]) -> dict[str, dict[str, float]]:
    """Medians over the rounds; the client's added cost as the median of each round's proxied-minus-direct
    pair (the two ran back to back, so what else loaded the machine hit both alike)."""
    summary = {}
    for mode in modes:
        direct = [r for r in runs if r["mode"] == mode and r["route"] == "direct"]
        proxied = [r for r in runs if r["mode"] == mode and r["route"] == "proxy"]
        summary[mode] = {
            "direct_client_us": statistics.median(r["client_us"] for r in direct),
            "proxy_client_us": statistics.median(r["client_us"] for r in proxied),
            "client_added_us": statistics.median(
                p["client_us"] - d["client_us"] for d, p in zip(direct, proxied, strict=True)
            ),
            "proxy_us": statistics.median(r["proxy_us"] for r in proxied),
            "direct_receiver_us": statistics.median(r["receiver_us"] for r in direct),
            "proxy_receiver_us": statistics.median(r["receiver_us"] for r in proxied),
        }
    return summary


if __name__ == "__main__":
    main()
