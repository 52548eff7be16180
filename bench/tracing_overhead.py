"""What tracing adds to one delivery's CPU, off and on (hookfleet/tracing.py), measured on its hooks alone.

Why not through the whole hot path (bench/hot_path.py): on the shared 2-core machine that figure moves by
tens of microseconds from run to run, far more than these hooks cost, so a before/after there cannot
show their cost; here every hook a delivery passes is timed directly, in a fresh process per mode
(tracing is decided once, at import, from OTEL_EXPORTER_OTLP_ENDPOINT).

    python -m bench.tracing_overhead           # both modes, microseconds per delivery
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

PER_DELIVERY = """
import asyncio, json, sys, time
from dataclasses import dataclass
from hookfleet import tracing
if tracing.ENABLED:
    tracing.setup("bench", send_to_receivers=True)

class Message:
    def __init__(self, headers): self._h = headers
    def headers(self): return self._h
    def topic(self): return "webhooks.deliveries"
    def partition(self): return 0
    def offset(self): return 1

class Endpoint: id = "wh_1"
class Type: value = "message.sent"
class Event: id = "evt_1"; type = Type()
@dataclass
class Result:
    outcome: object; status_code: int; error: None = None; ok: bool = True
class Outcome: value = "success"

@tracing.attempt_span
async def deliver(self, endpoint, event, attempt, body=None):
    headers = {"webhook-id": "x"}
    headers.update(tracing.receiver_headers())
    return Result(Outcome(), 200)

event_msg = Message(None)
async def one():
    with tracing.consumed(event_msg, "fanout"):          # fan-out of the event (one webhook)
        task_headers = tracing.inject(None)              # the delivery task produced
    with tracing.consumed(Message(task_headers), "delivery"):
        saved = tracing.current()                        # captured by the queued job
    tracing.adopt(saved)                                 # in the delivery's own task
    await deliver(None, Endpoint(), Event(), 1)
    tracing.inject(None)                                 # the attempt record produced

async def run(n):
    for _ in range(200):
        await asyncio.create_task(one())
    started = time.process_time()
    for _ in range(n):
        await asyncio.create_task(one())
    return (time.process_time() - started) / n * 1e6

async def baseline(n):
    async def bare():
        headers = {"webhook-id": "x"}
        return Result(Outcome(), 200)
    started = time.process_time()
    for _ in range(n):
        await asyncio.create_task(bare())
    return (time.process_time() - started) / n * 1e6

n = int(sys.argv[1])
hooks = asyncio.run(run(n))
bare = asyncio.run(baseline(n))
print(json.dumps({"enabled": tracing.ENABLED, "us_per_delivery": round(hooks - bare, 2)}))
"""


def measure(enabled: bool, n: int) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if enabled:
        # A dead endpoint and a long batch delay: spans are made and queued, as in production, never sent.
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_BSP_SCHEDULE_DELAY="600000",
                   OTEL_BSP_MAX_QUEUE_SIZE=str(n + 1000), OTEL_EXPORTER_OTLP_TIMEOUT="1")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", PER_DELIVERY, str(n)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    started = time.monotonic()
    for enabled in (False, True):
        print(measure(enabled, 20_000 if not enabled else 5_000))
    print(f"took {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
