"""The ceiling: a raw aiohttp keep-alive client loop POSTing signed bodies to the benchmark receiver.

No Kafka, no database, no bookkeeping: `concurrency` coroutines share one session and POST as fast as
the receiver answers. Each request is signed with the dispatcher's own `signature_headers` and carries
the same headers a delivery does, so the only difference from the end-to-end figure is the pipeline.
Runs in its own process, like the dispatcher, on the same event loop implementation.

    python -m bench.ceiling --base https://localhost:PORT --ca ca.pem --concurrency 64 --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from delivery.signing import new_secret, signature_headers
from hookfleet import USER_AGENT
from producer.publisher import build_event
from schemas.catalog import PRODUCT_TYPES, sample_data


def _bodies(count: int) -> list[tuple[str, str, bytes]]:
    types = list(PRODUCT_TYPES)
    out = []
    for n in range(count):
        event_type = types[n % len(types)]
        event = build_event(f"acct_{n % 20:03d}", event_type, sample_data(event_type))
        out.append((event.id, event_type.value, event.body()))
    return out


async def _run(base: str, ca: str, concurrency: int, seconds: float, warmup: float, paths: int) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=ca)
    connector = aiohttp.TCPConnector(limit=0, ssl=context, keepalive_timeout=30)
    secret = new_secret()
    bodies = _bodies(1000)
    feed = itertools.cycle(bodies)
    urls = itertools.cycle([f"{base}/fast/a{n:03d}" for n in range(paths)])
    counting = False
    done = 0
    errors = 0
    stop = False

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        while not stop:
            event_id, event_type, body = next(feed)
            headers: dict[str, str] = signature_headers(secret, None, event_id, event_type, 1, int(time.time()), body)
            headers["Content-Type"] = "application/json"
            try:
                async with session.post(next(urls), data=body, headers=headers, allow_redirects=False) as response:
                    await response.read()
                    ok = 200 <= response.status < 300
            except (aiohttp.ClientError, OSError, TimeoutError):
                ok = False
            if counting:
                if ok:
                    done += 1
                else:
                    errors += 1

    async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        counting = True
        cpu_start, started = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_start
        counting = False
        stop = True
        await asyncio.gather(*workers)
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests": done,
        "errors": errors,
        "per_s": round(done / elapsed, 1),
        "client_cpu_s": round(cpu, 3),
        "client_cpu_us_per_request": round(cpu / max(done, 1) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling")
    parser.add_argument("--base", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--paths", type=int, default=20)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = asyncio.run(_run(args.base, args.ca, args.concurrency, args.seconds, args.warmup, args.paths))
    result["loop"] = args.loop
    print(json.dumps(result), flush=True)


def measure(base: str, ca: Path, concurrency: int, seconds: float, loop: str) -> dict[str, Any]:
    """Run the client loop in its own process and return its figures."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.ceiling",
            "--base",
            base,
            "--ca",
            str(ca),
            "--concurrency",
            str(concurrency),
            "--seconds",
            str(seconds),
            "--loop",
            loop,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"ceiling client failed ({out.returncode}): {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    main()
