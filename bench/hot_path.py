"""The dispatcher's hot path in isolation: the real `Dispatcher`, `Deliverer` and `KafkaProducer`, fed from
memory instead of a broker consumer, delivering to the benchmark receiver.

Why: on a shared 2-core machine the end-to-end throughput moves with everything else running, and a
profiler run through the whole stack mixes the dispatcher with the broker, the recorder and PostgreSQL.
Here the only variable is the dispatcher's own code, measured as CPU microseconds per delivery (all of
this process's threads, librdkafka's included), so a change to the hot path can be judged before and
after in a minute. Attempt records are produced to a real broker topic (acks=all, idempotent), exactly
as in production; only the consumer is replaced: it hands out delivery tasks as the fan-out stage writes
them (the delivery stage is measured; the fan-out stage is one produce per task).

    python -m bench.hot_path --events 20000                      # CPU us per delivery
    python -m bench.hot_path --events 20000 --profile pyinstrument   # where it goes
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Message, TopicPartition

from bench.receiver import Receiver
from bench.stack import thread_cpu_seconds
from delivery.deliverer import Deliverer
from delivery.endpoint import Endpoint
from delivery.signing import new_secret
from delivery.wire_json import task_json
from demo.tls import make_demo_certs
from dispatcher.subscriptions import SubscriptionIndex
from dispatcher.worker import Dispatcher
from hookfleet import metrics
from hookfleet.kafka import KafkaProducer, TopicSpec, delete_topics, ensure_topics
from hookfleet.settings import LOCAL_KAFKA, DispatcherSettings
from producer.publisher import build_event
from schemas.catalog import PRODUCT_TYPES, sample_data

PARTITIONS = 6


class MemoryConsumer:
    """Stands in for the confluent-kafka consumer: hands out prebuilt messages, records committed offsets."""

    def __init__(self, messages: list[Message], topic: str) -> None:
        self._messages = messages
        self._topic = topic
        self._next = 0
        self._lock = threading.Lock()
        self._on_assign: Callable[[Any, list[TopicPartition]], None] | None = None
        self._assigned = False
        self.stored: dict[int, int] = {}
        self.done = threading.Event()
        self._last: dict[int, int] = {}
        for message in messages:
            self._last[message.partition() or 0] = message.offset() or 0

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None) -> None:
        self._on_assign = on_assign

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        if not self._assigned and self._on_assign is not None:
            self._assigned = True
            self._on_assign(self, [TopicPartition(self._topic, p) for p in range(PARTITIONS)])
        with self._lock:
            batch = self._messages[self._next : self._next + num_messages]
            self._next += len(batch)
        if not batch:
            time.sleep(min(timeout, 0.05))
        return batch

    def commit(self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True) -> None:
        with self._lock:
            for tp in offsets or []:
                self.stored[tp.partition] = max(self.stored.get(tp.partition, -1), tp.offset)
            if all(self.stored.get(p, -1) > last for p, last in self._last.items()):
                self.done.set()

    def pause(self, partitions: list[TopicPartition]) -> None:
        pass

    def resume(self, partitions: list[TopicPartition]) -> None:
        pass

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return partitions

    def close(self) -> None:
        pass


def _messages(topic: str, accounts: int, count: int) -> list[Message]:
    """Delivery tasks as the fan-out stage writes them, webhook n's on partition n % PARTITIONS."""
    types = list(PRODUCT_TYPES)
    offsets = [0] * PARTITIONS
    out = []
    for n in range(count):
        account = f"acct_{n % accounts:03d}"
        webhook_id = f"wh_{n % accounts:04d}"
        event_type = types[n % len(types)]
        body = build_event(account, event_type, sample_data(event_type)).body()
        value = task_json(body, webhook_id, 1, int(time.time() * 1000))
        partition = (n % accounts) % PARTITIONS
        out.append(
            Message(topic=topic, partition=partition, offset=offsets[partition], key=webhook_id.encode(), value=value)
        )
        offsets[partition] += 1
    return out


async def _dispatch(
    settings: DispatcherSettings,
    consumer: MemoryConsumer,
    producer: KafkaProducer,
    deliverer: Deliverer,
    index: SubscriptionIndex,
) -> float:
    """One Dispatcher over `consumer`'s messages until every offset is stored; returns the seconds taken."""
    dispatcher = Dispatcher(settings, {"delivery": consumer}, producer, deliverer, index)  # type: ignore[dict-item]
    stop = asyncio.Event()
    started = time.monotonic()
    runner = asyncio.create_task(dispatcher.run(stop))
    await asyncio.get_running_loop().run_in_executor(None, consumer.done.wait, 600)
    elapsed = time.monotonic() - started
    stop.set()
    await runner
    return elapsed


class GcClock:
    """Time spent in the cyclic garbage collector, per generation, while installed."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self._started = 0.0

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.runs[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started

    def report(self) -> dict[str, Any]:
        return {f"gen{g}": {"runs": self.runs[g], "seconds": round(self.seconds[g], 3)} for g in range(3)}


class _Profile:
    """Optional profiler around the measured run only."""

    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        self._cprofile = cProfile.Profile(time.thread_time) if kind == "cprofile" else None
        self._pyinstrument: Any = None
        if kind == "pyinstrument":
            from pyinstrument import Profiler

            self._pyinstrument = Profiler(interval=0.0005, async_mode="disabled")

    def start(self) -> None:
        if self._cprofile is not None:
            self._cprofile.enable()
        if self._pyinstrument is not None:
            self._pyinstrument.start()

    def stop(self) -> str:
        if self._cprofile is not None:
            self._cprofile.disable()
            out = io.StringIO()
            pstats.Stats(self._cprofile, stream=out).sort_stats("tottime").print_stats(40)
            return out.getvalue()
        if self._pyinstrument is not None:
            self._pyinstrument.stop()
            text: str = self._pyinstrument.output_text(unicode=False, color=False, show_all=True)
            return text
        return ""


async def _measure(
    settings: DispatcherSettings,
    index: SubscriptionIndex,
    warm: list[Message],
    measured: list[Message],
    kind: str | None,
) -> tuple[float, float, str, dict[str, Any]]:
    """Warm up (connections, caches), then measure; one producer and one HTTP session throughout, as in a
    long-running dispatcher. Returns (seconds, process CPU seconds, profile text, collector and per-thread CPU)."""
    producer = KafkaProducer(settings.kafka_bootstrap_servers)
    deliverer = Deliverer(settings)
    topic = settings.topics.deliveries
    try:
        await _dispatch(settings, MemoryConsumer(warm, topic), producer, deliverer, index)
        profile = _Profile(kind)
        threads_start = thread_cpu_seconds(os.getpid())
        cpu_start = time.process_time()
        profile.start()
        with GcClock() as collector:
            elapsed = await _dispatch(settings, MemoryConsumer(measured, topic), producer, deliverer, index)
        report = profile.stop()
        cpu = time.process_time() - cpu_start
        threads_end = thread_cpu_seconds(os.getpid())
        threads = {n: round(s - threads_start.get(n, 0.0), 2) for n, s in threads_end.items()}
    finally:
        await deliverer.close()
        producer.close()
    return elapsed, cpu, report, {"gc": collector.report(), "thread_cpu_s": threads}


def run(
    receiver: Receiver,
    ca: Path,
    bootstrap: str,
    events: int,
    endpoints: int,
    loop: str = "asyncio",
    profile: str | None = None,
    warmup: int = 2_000,
    env: dict[str, Any] | None = None,
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = DispatcherSettings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        ca_bundle=str(ca),
        allow_networks="127.0.0.0/8",
        stages="delivery",
        **(env or {}),
    )
    ensure_topics(bootstrap, [TopicSpec(n, PARTITIONS, 1, {}) for n in settings.topics.all()])
    index = SubscriptionIndex(
        Endpoint(
            id=f"wh_{n:04d}",
            account_id=f"acct_{n:03d}",
            url=receiver.url(f"/fast/a{n:03d}"),
            events=frozenset(PRODUCT_TYPES),
            active=True,
            secret=new_secret(),
        )
        for n in range(endpoints)
    )
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    warm = _messages(settings.topics.deliveries, endpoints, warmup)
    measured = _messages(settings.topics.deliveries, endpoints, events)
    try:
        receiver.reset()
        elapsed, cpu, report, extra = asyncio.run(_measure(settings, index, warm, measured, profile))
    finally:
        asyncio.set_event_loop_policy(None)
        delete_topics(bootstrap, settings.topics.all())
    stats = receiver.stats()
    received = int(stats["received"]) - warmup
    outcomes: dict[str, float] = {}
    for metric in metrics.DELIVERIES.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = sample.labels["outcome"]
                outcomes[key] = outcomes.get(key, 0) + sample.value
    return {
        "outcomes_since_start": outcomes,
        "events": events,
        "endpoints": endpoints,
        "loop": loop,
        "received": received,
        "receiver_connections": stats["client_connections"],
        "seconds": round(elapsed, 2),
        "per_s": round(events / elapsed, 1),
        "cpu_us_per_delivery": round(cpu / max(received, 1) * 1e6, 1),
        **extra,
        "profile": report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hot_path")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop", help="the dispatcher runs on uvloop")
    parser.add_argument("--profile", choices=["pyinstrument", "cprofile"])
    parser.add_argument("--concurrency", type=int, help="per-endpoint concurrency (default: the setting's)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hookfleet-hot-path-"))
    ca, cert, key = make_demo_certs(workdir / "tls")
    receiver = Receiver(cert, key, ca, workdir, 2000)
    env = {"per_endpoint_concurrency": args.concurrency} if args.concurrency else {}
    try:
        result = run(receiver, ca, LOCAL_KAFKA, args.events, args.endpoints, args.loop, args.profile, env=env)
    finally:
        receiver.stop()
    report = result.pop("profile")
    if report:
        print(report)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
