"""Dispatcher peak RSS with 1,000 deliveries in flight against a slow receiver.

20 webhooks on `/slow/...` (the receiver answers after a fixed delay) and the default per-endpoint
concurrency of 50: 1,000 events make 1,000 HTTPS requests outstanding at once, each on its own
connection; the receiver's own count of concurrent requests proves they were. Peak RSS is the kernel's
high-water mark (VmHWM) of a fresh dispatcher process. A second run publishes three times as many, so
2,000 more deliveries wait in the per-endpoint queues behind the 1,000 in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.harness import Harness, event_for, publish_burst
from bench.stack import proc_status
from schemas.catalog import PRODUCT_TYPES

ENDPOINTS = 20


@dataclass(frozen=True)
class MemorySizes:
    in_flight: int = 1_000
    waves: int = 1


def run(harness: Harness, sizes: MemorySizes) -> dict[str, Any]:
    """1,000 in flight (the figure), then the same with 2,000 more queued behind them."""
    result = _one_run(harness, sizes)
    result["with_queued"] = _one_run(harness, MemorySizes(sizes.in_flight, 3))
    return result


def _one_run(harness: Harness, sizes: MemorySizes) -> dict[str, Any]:
    receiver = harness.receiver
    with harness.stack("memory") as stack:
        url = receiver.url
        stack.seed([(f"acct_m{n:02d}", url(f"/slow/m{n:02d}"), list(PRODUCT_TYPES)) for n in range(ENDPOINTS)])
        dispatcher = harness.start_dispatcher(
            stack, HOOKFLEET_PER_ENDPOINT_CONCURRENCY=str(max(1, sizes.in_flight // ENDPOINTS))
        )
        time.sleep(1.0)
        idle = proc_status(dispatcher)
        receiver.reset()
        total = sizes.in_flight * sizes.waves
        events = [event_for(f"acct_m{n % ENDPOINTS:02d}", n) for n in range(total)]
        with harness.publisher(stack) as publisher:
            started, _ = publish_burst(publisher, events)
        timeout_s = sizes.waves * receiver.slow_ms / 1000 + 60
        got = harness.wait_received(total, timeout_s=timeout_s)
        # The last wave is still being answered: wait for it so its responses count too.
        deadline = time.monotonic() + receiver.slow_ms / 1000 + 10
        while receiver.stats()["in_flight"] > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        elapsed = time.time() - started
        peak = proc_status(dispatcher)
        stats = receiver.stats()
        exit_codes = stack.stop_roles()
    return {
        "slow_ms": receiver.slow_ms,
        "events": total,
        "queued_behind": total - sizes.in_flight,
        "received": got,
        "receiver_peak_concurrent": stats["peak_in_flight"],
        "seconds": round(elapsed, 2),
        "idle_rss_mb": round(idle.get("VmRSS", 0) / 1024, 1),
        "peak_rss_mb": round(peak.get("VmHWM", 0) / 1024, 1),
        "exit_codes": exit_codes,
    }
