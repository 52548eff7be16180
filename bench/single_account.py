"""One account's burst: the everyday peak of a messaging product (a campaign), 5,000 events of one account
to its 3 webhooks, all answering at once. A fresh fleet (dispatcher, recorder, retry scheduler).

Figures: deliveries parked (should be 0: the webhooks keep answering), pairs delivered twice, the time
from the first publish to the last arrival, and publish-to-receive latency p50/p99 beside what the
receiver alone would allow: the same 15,000 requests at the ceiling's rate (the raw client measured in
the same run) take `15,000 / ceiling` seconds, so the receiver-bound p99 is 0.99 of that. Before the
per-webhook flow, this burst parked 21,350 deliveries and its p50 latency was 13.9 s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.harness import CpuMeter, Harness, event_for
from bench.machine import percentile
from schemas.catalog import EventType

ACCOUNT = "acct_campaign"
HOOKS = 3


@dataclass(frozen=True)
class SingleAccountSizes:
    events: int = 5_000


def run(harness: Harness, sizes: SingleAccountSizes, ceiling_per_s: float | None) -> dict[str, Any]:
    receiver = harness.receiver
    with harness.stack("single-account") as stack:
        paths = [f"/fast/campaign{n}" for n in range(HOOKS)]
        stack.seed([(ACCOUNT, receiver.url(p), [EventType.MESSAGE_SENT]) for p in paths])
        dispatcher = harness.start_dispatcher(stack)
        stack.start("recorder")
        stack.start("retry-scheduler")
        events = [event_for(ACCOUNT, n, EventType.MESSAGE_SENT) for n in range(sizes.events)]
        expected = sizes.events * HOOKS
        receiver.reset()
        meter = CpuMeter({"dispatcher": dispatcher, "receiver": receiver.pid})
        published: dict[str, float] = {}
        with harness.publisher(stack) as publisher:
            started = time.time()
            for event in events:
                published[event.id] = time.time()
                publisher.publish(event)
            publisher.flush(60)
        pairs: dict[tuple[str, str], float] = {}
        duplicates = cursor = 0
        deadline = time.monotonic() + 240
        while len(pairs) < expected and time.monotonic() < deadline:
            batch = receiver.arrivals(cursor)
            cursor += len(batch)
            for at, event_id, path in batch:
                if (path, event_id) in pairs:
                    duplicates += 1
                else:
                    pairs[(path, event_id)] = at
            time.sleep(0.2)
        cpu = meter.read()
        parked = stack.topic_messages(stack.topics.retry_10s)
        exit_codes = stack.stop_roles()
    latencies = sorted(at - published[event_id] for (_, event_id), at in pairs.items() if event_id in published)
    last = max(pairs.values(), default=started)
    bound_s = expected / ceiling_per_s if ceiling_per_s else None
    p99 = percentile(latencies, 99) if latencies else None
    return {
        "events": sizes.events,
        "webhooks": HOOKS,
        "delivered": len(pairs),
        "expected": expected,
        "duplicates": duplicates,
        "parked": parked,
        "drain_s": round(last - started, 2),
        "per_s": round(len(pairs) / (last - started), 1) if pairs else 0.0,
        "p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "p99_s": round(p99, 3) if p99 is not None else None,
        "receiver_bound_drain_s": round(bound_s, 2) if bound_s else None,
        "receiver_bound_p99_s": round(0.99 * bound_s, 3) if bound_s else None,
        "p99_over_receiver_bound_s": round(p99 - 0.99 * bound_s, 3) if bound_s and p99 is not None else None,
        "cpu": cpu,
        "exit_codes": exit_codes,
    }
