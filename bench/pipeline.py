"""End-to-end through the real stack: publisher -> broker -> one dispatcher process -> receiver, with
attempts -> recorder -> PostgreSQL running alongside. Three figures from one fleet:

- throughput: a burst of events to 20 accounts (one webhook each); deliveries/s at steady state
  (10th to 90th percentile arrival), then the time until the recorder has every attempt row;
- latency: publish-to-receive at half that throughput, paced evenly;
- fan-out: one event to an account with 100 (then 1,000) subscribed webhooks, time until all received.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.harness import (
    CpuMeter,
    Harness,
    collect,
    event_for,
    per_second,
    publish_burst,
    publish_paced,
    steady_rate,
)
from bench.machine import percentile
from bench.stack import BenchStack, proc_status
from schemas.catalog import PRODUCT_TYPES, EventType

ACCOUNTS = 20
FAN_TYPE = EventType.CONTACT_UPDATED


@dataclass(frozen=True)
class PipelineSizes:
    warmup_events: int = 1_000
    burst_events: int = 30_000
    latency_seconds: float = 15.0
    fanout_rounds: int = 3


def _seed(stack: BenchStack, harness: Harness) -> None:
    url = harness.receiver.url
    webhooks = [(f"acct_{n:03d}", url(f"/fast/a{n:03d}"), list(PRODUCT_TYPES)) for n in range(ACCOUNTS)]
    webhooks += [("acct_fan100", url(f"/fast/f100/{n:03d}"), [FAN_TYPE]) for n in range(100)]
    webhooks += [("acct_fan1000", url(f"/fast/f1000/{n:04d}"), [FAN_TYPE]) for n in range(1000)]
    stack.seed(webhooks)


def _wait_rows(stack: BenchStack, expected: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    rows = 0
    while time.monotonic() < deadline:
        rows = stack.attempt_rows()
        if rows >= expected:
            break
        time.sleep(0.2)
    return rows


def _throughput(harness: Harness, stack: BenchStack, pids: dict[str, int], sizes: PipelineSizes) -> dict[str, Any]:
    receiver = harness.receiver
    with harness.publisher(stack) as publisher:
        warm = [event_for(f"acct_{n % ACCOUNTS:03d}", n) for n in range(sizes.warmup_events)]
        publish_burst(publisher, warm)
        if len(collect(receiver, {e.id for e in warm}, 60).first) < len(warm):
            raise RuntimeError(f"warm-up deliveries did not all arrive; see {harness.log_dir}")
        receiver.reset()
        events = [event_for(f"acct_{n % ACCOUNTS:03d}", n) for n in range(sizes.burst_events)]
        meter = CpuMeter(pids)
        started, acked = publish_burst(publisher, events)
        got = collect(receiver, {e.id for e in events}, timeout_s=240)
        cpu = meter.read()
        connections = receiver.stats()["client_connections"]
    times = list(got.first.values())
    expected_rows = sizes.warmup_events + sizes.burst_events
    last_arrival = max(times) if times else time.time()
    rows = _wait_rows(stack, expected_rows, timeout_s=120)
    rows_at = time.time()
    dispatcher_cpu = cpu["cpu_s"].get("dispatcher", 0.0)
    return {
        "events": len(events),
        "received": len(got.first),
        "duplicates": got.duplicates,
        "unexpected": got.others,
        "publish_s": round(acked - started, 2),
        "first_publish_to_last_receive_s": round(last_arrival - started, 2),
        "per_s": steady_rate(times),
        "overall_per_s": round(len(times) / (last_arrival - started), 1) if times else 0.0,
        "per_second": per_second(times, started),
        "attempt_rows_in_postgresql": rows,
        "attempt_rows_expected": expected_rows,
        "recorder_done_after_last_receive_s": round(max(0.0, rows_at - last_arrival), 2),
        "connections_used": connections,
        "parked": stack.topic_messages(stack.topics.retry_10s),
        "cpu": cpu,
        "dispatcher_cpu_us_per_delivery": round(dispatcher_cpu / max(len(times), 1) * 1e6, 1),
        "cpu_us_per_delivery": {
            name: round(seconds / max(len(times), 1) * 1e6, 1) for name, seconds in cpu["cpu_s"].items()
        },
    }


def _latency(harness: Harness, stack: BenchStack, rate: float, seconds: float) -> dict[str, Any]:
    receiver = harness.receiver
    receiver.reset()
    with harness.publisher(stack) as publisher:
        publisher.publish_and_wait(event_for("acct_000", 0))  # the producer's broker connection and id first
        published = publish_paced(publisher, lambda n: event_for(f"acct_{n % ACCOUNTS:03d}", n), rate, seconds)
    seen = collect(receiver, set(published), timeout_s=120).first
    latencies = sorted((seen[i] - published[i]) * 1000 for i in seen)
    return {
        "offered_per_s": round(rate, 1),
        "seconds": seconds,
        "events": len(published),
        "received": len(seen),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p90_ms": round(percentile(latencies, 90), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "p99_9_ms": round(percentile(latencies, 99.9), 1),
        "over_100ms_by_second": _slow_seconds(seen, published),
        "max_ms": round(latencies[-1], 1) if latencies else None,
    }


def _slow_seconds(seen: dict[str, float], published: dict[str, float]) -> dict[int, int]:
    """How many deliveries took over 100 ms, per second of the run: shows whether slow ones cluster."""
    start = min(published.values(), default=0.0)
    slow: dict[int, int] = {}
    for event_id, at in seen.items():
        if at - published[event_id] > 0.1:
            second = int(published[event_id] - start)
            slow[second] = slow.get(second, 0) + 1
    return dict(sorted(slow.items()))


def _fanout(harness: Harness, stack: BenchStack, account: str, group_size: int, rounds: int) -> dict[str, Any]:
    receiver = harness.receiver
    times: list[float] = []
    with harness.publisher(stack) as publisher:
        for n in range(rounds):
            receiver.reset()
            event = event_for(account, n, FAN_TYPE)
            started = time.time()
            publisher.publish_and_wait(event)
            got = harness.wait_received(group_size, timeout_s=60)
            arrivals = [t for t, event_id, _ in receiver.arrivals() if event_id == event.id]
            if got < group_size or len(arrivals) < group_size:
                raise RuntimeError(f"fan-out to {group_size}: only {len(arrivals)} received")
            times.append(max(arrivals) - started)
            time.sleep(0.5)
    return {
        "webhooks": group_size,
        "rounds_s": [round(t, 3) for t in times],
        "first_s": round(times[0], 3),
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
    }


def run(harness: Harness, sizes: PipelineSizes, throughput_only: bool = False) -> dict[str, Any]:
    with harness.stack("pipeline") as stack:
        _seed(stack, harness)
        dispatcher = harness.start_dispatcher(stack)
        recorder = stack.start("recorder").pid
        scheduler = stack.start("retry-scheduler").pid  # parked deliveries come back through it, as in production
        pids = {
            "dispatcher": dispatcher,
            "retry scheduler": scheduler,
            "recorder": recorder,
            "receiver": harness.receiver.pid,
        }
        throughput = _throughput(harness, stack, pids, sizes)
        if throughput_only:
            return {"throughput": throughput, "exit_codes": stack.stop_roles()}
        latency = _latency(harness, stack, throughput["per_s"] / 2, sizes.latency_seconds)
        fanout = {
            "100": _fanout(harness, stack, "acct_fan100", 100, sizes.fanout_rounds),
            "1000": _fanout(harness, stack, "acct_fan1000", 1000, sizes.fanout_rounds),
        }
        memory = proc_status(dispatcher)
        exit_codes = stack.stop_roles()
    return {
        "throughput": throughput,
        "latency": latency,
        "fanout": fanout,
        "dispatcher_peak_rss_mb": round(memory.get("VmHWM", 0) / 1024, 1),
        "exit_codes": exit_codes,
    }
