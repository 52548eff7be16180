"""Noisy neighbour: one endpoint that hangs until the delivery timeout receives 20 % of the events; how
fast do the other endpoints still get theirs, compared with the same run without it?

Two fresh fleets (dispatcher + recorder + retry scheduler, so parked deliveries come back as they would
in production), the same burst of events: 80 % spread over 49 healthy accounts (enough that the burst
fills no healthy endpoint's own queue, so none of them is parked), 20 % to one more account. In the
noisy run that account's webhook is `/hang/...`; in the baseline it has no webhook, so its events cost
the dispatcher next to nothing (the strictest comparison: a well-behaved endpoint would cost a delivery
each). The figure is the healthy endpoints' steady-state deliveries/s, noisy / baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.harness import CpuMeter, Harness, collect, event_for, per_second, publish_burst, steady_rate
from schemas.catalog import PRODUCT_TYPES

HEALTHY = 49
NOISY_SHARE = 5  # every 5th event: 20 %


@dataclass(frozen=True)
class NoisySizes:
    events: int = 60_000
    delivery_timeout_s: float = 10.0


def _account(n: int) -> str:
    return "acct_noisy" if n % NOISY_SHARE == 0 else f"acct_h{n % HEALTHY:02d}"


def _one_run(harness: Harness, sizes: NoisySizes, hanging: bool) -> dict[str, Any]:
    receiver = harness.receiver
    label = "noisy" if hanging else "baseline"
    with harness.stack(label) as stack:
        url = receiver.url
        webhooks = [(f"acct_h{n:02d}", url(f"/fast/h{n:02d}"), list(PRODUCT_TYPES)) for n in range(HEALTHY)]
        if hanging:
            webhooks.append(("acct_noisy", url("/hang/n"), list(PRODUCT_TYPES)))
        stack.seed(webhooks)
        dispatcher = harness.start_dispatcher(
            stack, HOOKFLEET_DELIVERY_TIMEOUT_S=str(sizes.delivery_timeout_s), HOOKFLEET_DRAIN_TIMEOUT_S="2"
        )
        stack.start("recorder")
        stack.start("retry-scheduler")
        events = [event_for(_account(n), n) for n in range(sizes.events)]
        healthy_ids = {e.id for e in events if e.account_id != "acct_noisy"}
        receiver.reset()
        meter = CpuMeter({"dispatcher": dispatcher, "receiver": receiver.pid})
        with harness.publisher(stack) as publisher:
            started, _ = publish_burst(publisher, events)
        times = collect(receiver, healthy_ids, timeout_s=240).first
        cpu = meter.read()
        noisy_requests = int(receiver.stats()["counts"].get("hang", 0))
        last = max(times.values()) if times else started
        parked = stack.topic_messages(stack.topics.retry_10s)
        exit_codes = stack.stop_roles()
    return {
        "neighbour": "hangs until the delivery timeout" if hanging else "no webhook",
        "events": len(events),
        "healthy_expected": len(healthy_ids),
        "healthy_received": len(times),
        "healthy_per_s": steady_rate(list(times.values())),
        "healthy_done_s": round(last - started, 2),
        "healthy_per_second": per_second(list(times.values()), started),
        "requests_to_hanging_endpoint": noisy_requests,
        "parked": parked,
        "cpu": cpu,
        "exit_codes": exit_codes,
    }


def run(harness: Harness, sizes: NoisySizes) -> dict[str, Any]:
    baseline = _one_run(harness, sizes, hanging=False)
    noisy = _one_run(harness, sizes, hanging=True)
    ratio = noisy["healthy_per_s"] / baseline["healthy_per_s"] if baseline["healthy_per_s"] else 0.0
    return {"baseline": baseline, "noisy": noisy, "ratio": round(ratio, 3)}
