"""Retry lateness: how long after `due_at` a retry leaves its delay topic (target: within 1 s).

Runs the real `hookfleet retry-scheduler` as a process against its own prefixed topics, in three scenarios:
10,000 retries due at the same instant; 10,000 due evenly over one minute, written into all three delay topics
whatever their delay (the hardest order for the scheduler: most are relayed); and relayed `Retry-After` waits
as the dispatcher routes them (`route_failure`), 15 s to 130 s, among ordinary retries of the same webhooks,
written as they fail over 20 s. Lateness is the broker's append time of the handed-off record (the
deliveries topic uses LogAppendTime, so the timestamp is when the broker accepted it, i.e. the
acknowledgement) minus the task's `due_at`. Same host, same clock.

    .venv/bin/python -m bench.retry_lateness      # ~5 min; writes bench/results/retry_lateness.json
    .venv/bin/python -m bench.retry_lateness --long   # adds 10 min and 1 h (the cap) waits: ~65 min
    .venv/bin/python -m bench.retry_lateness --scheduler-pythonpath /tmp/old   # an older checkout's scheduler
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka import libversion as librdkafka_version

from bench import machine
from dispatcher.routing import route_failure
from hookfleet.kafka import TopicSpec, delete_topics, ensure_topics
from hookfleet.settings import LOCAL_KAFKA
from schemas.catalog import EventType
from schemas.models import DeliveryTask, Event
from schemas.retry_schedule import DELAYS_S, RETRY_AFTER_CAP_S
from schemas.topics import Topics

TASKS = 10_000
PARTITIONS = 6
BURST_LEAD_S = 8.0
"""Burst due time after the produce starts: enough to write 10,000 tasks and for every partition to hold."""
SPREAD_LEAD_S = 5.0
SPREAD_S = 60.0
RELAYED_WAITS_S = (15.0, 25.0, 45.0, 75.0, 130.0)
"""Retry-After waits that cross every relay path: the 10 s and 60 s topics, and the last seconds held in memory."""
LONG_WAITS_S = (600.0, RETRY_AFTER_CAP_S)
FAIL_OVER_S = 20.0
FAILURES_PER_S = 50
WEBHOOKS = 997


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _task(n: int, due_at: int, attempt: int = 2) -> bytes:
    event = Event(
        id=f"evt_{n:08d}",
        type=EventType.MESSAGE_FAILED,
        created_at=datetime.now(UTC),
        account_id="acct_bench",
        data={"message_id": f"msg_{n}", "reason": "bench"},
    )
    task = DeliveryTask(event=event, webhook_id=f"wh_{n % WEBHOOKS}", attempt=attempt, due_at=due_at)
    return task.model_dump_json(exclude_defaults=True).encode()  # defaults left out: older schedulers read it too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _machine() -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "librdkafka": librdkafka_version()[0],
    }


def _percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile."""
    index = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def _summary(lateness_ms: list[int], expected: int) -> dict[str, Any]:
    values = sorted(lateness_ms)
    if not values:
        return {"received": 0, "expected": expected}
    return {
        "expected": expected,
        "received": len(values),
        "early": sum(1 for v in values if v < 0),
        "p50_ms": _percentile(values, 50),
        "p99_ms": _percentile(values, 99),
        "max_ms": values[-1],
        "min_ms": values[0],
        "within_1s": round(sum(1 for v in values if v <= 1000) / len(values), 4),
    }


class _SchedulerProcess:
    def __init__(self, bootstrap: str, prefix: str, pythonpath: str | None = None) -> None:
        self.port = _free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="retry-scheduler-", suffix=".log", delete=False)  # noqa: SIM115
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "HOOKFLEET_TOPIC_PREFIX": prefix,
            "HOOKFLEET_GROUP_ID": f"{prefix}retry-scheduler",
            "HOOKFLEET_METRICS_PORT": str(self.port),
            "HOOKFLEET_LOG_LEVEL": "INFO",
            **({"PYTHONPATH": pythonpath} if pythonpath else {}),
        }
        # From the other checkout's folder: `-m` puts the working directory ahead of PYTHONPATH.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hookfleet.cli", "retry-scheduler"],
            env=env,
            stdout=self.log,
            stderr=self.log,
            cwd=pythonpath,
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"retry scheduler exited with {self.process.returncode}; log: {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"retry scheduler not ready within {timeout_s:g}s; log: {self.log.name}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return -9


def _produce(bootstrap: str, topics: Topics, tasks: list[tuple[int, int]]) -> None:
    """Tasks in due order; partition i % 6 of delay topic (i // 6) % 3 keeps each partition in due order."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    for i, (n, due_at) in enumerate(tasks):
        topic = topics.retries[(i // PARTITIONS) % len(topics.retries)]
        while True:
            try:
                producer.produce(topic, _task(n, due_at), key=f"wh_{n % 997}", partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(30) != 0:
        raise RuntimeError("bench producer could not deliver every task within 30 s")


def _fail_over_time(bootstrap: str, topics: Topics, first: int, waits_s: tuple[float, ...], seconds: float) -> int:
    """Failures as the dispatcher routes them, written as they happen over `seconds`: one in two an ordinary
    retry (attempt 1 or 2 failed: the 10 s or 60 s topic), the others a 429 with one of `waits_s` as
    Retry-After after attempt 1. Keyed by webhook like the dispatcher's, so relays land among ordinary
    retries of the same partitions. Returns how many were written."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    count = round(seconds * FAILURES_PER_S)
    start = time.monotonic()
    for i in range(count):
        pause = start + i / FAILURES_PER_S - time.monotonic()
        if pause > 0:
            producer.poll(pause)
        n = first + i
        if i % 2 == 0:
            route = route_failure(1 + (i // 2) % 2, _now_ms(), topics)
        else:
            wait = waits_s[(i // 2) % len(waits_s)]
            route = route_failure(1, _now_ms(), topics, status_code=429, retry_after_s=wait)
        producer.produce(route.topic, _task(n, route.due_at_ms, route.next_attempt), key=f"wh_{n % WEBHOOKS}")
        producer.poll(0)
    if producer.flush(30) != 0:
        raise RuntimeError("bench producer could not deliver every task within 30 s")
    return count


def _collect(reader: Consumer, numbers: range, deadline_s: float) -> list[int]:
    """Lateness (broker append time - due_at) of each task in `numbers` handed off before the deadline."""
    wanted = set(numbers)
    lateness: dict[int, int] = {}
    end = time.monotonic() + deadline_s
    while len(lateness) < len(wanted) and time.monotonic() < end:
        for message in reader.consume(1000, timeout=0.2):
            if message.error() is not None:
                continue
            task = json.loads(message.value() or b"{}")
            n = int(task["event"]["id"].removeprefix("evt_"))
            if n in wanted and n not in lateness:
                _, appended_ms = message.timestamp()
                lateness[n] = appended_ms - int(task["due_at"])
    return list(lateness.values())


def run(bootstrap: str, scheduler_pythonpath: str | None = None, long: bool = False) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = Topics.with_prefix(prefix)
    specs = [
        TopicSpec(
            name,
            PARTITIONS,
            1,
            {"message.timestamp.type": "LogAppendTime"} if name == topics.deliveries else {},
        )
        for name in topics.all()
    ]
    ensure_topics(bootstrap, specs)
    machine = _machine()
    scheduler = _SchedulerProcess(bootstrap, prefix, scheduler_pythonpath)
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}reader", "enable.auto.commit": False})
    reader.assign([TopicPartition(topics.deliveries, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    results: dict[str, Any] = {}
    try:
        scheduler.wait_ready()

        burst_due = _now_ms() + int(BURST_LEAD_S * 1000)
        _produce(bootstrap, topics, [(n, burst_due) for n in range(TASKS)])
        produced_by = _now_ms()
        burst = _collect(reader, range(TASKS), deadline_s=BURST_LEAD_S + 60)
        results["burst_10k_due_at_once"] = {
            **_summary(burst, TASKS),
            "produced_before_due_ms": burst_due - produced_by,
        }

        spread_start = _now_ms() + int(SPREAD_LEAD_S * 1000)
        step = SPREAD_S * 1000 / TASKS
        spread_tasks = [(TASKS + i, spread_start + int(i * step)) for i in range(TASKS)]
        _produce(bootstrap, topics, spread_tasks)
        spread = _collect(reader, range(TASKS, 2 * TASKS), deadline_s=SPREAD_LEAD_S + SPREAD_S + 60)
        results["spread_10k_over_60s"] = _summary(spread, TASKS)

        first = 2 * TASKS
        written = _fail_over_time(bootstrap, topics, first, RELAYED_WAITS_S, FAIL_OVER_S)
        relayed = _collect(reader, range(first, first + written), deadline_s=max(RELAYED_WAITS_S) + 90)
        results["relayed_retry_after_15s_to_130s"] = _summary(relayed, written)
        if long:
            first += written
            written = _fail_over_time(bootstrap, topics, first, LONG_WAITS_S, FAIL_OVER_S)
            relayed = _collect(reader, range(first, first + written), deadline_s=max(LONG_WAITS_S) + 120)
            results["relayed_retry_after_10min_and_1h"] = _summary(relayed, written)
    finally:
        rc = scheduler.stop()
        reader.close()
        delete_topics(bootstrap, topics.all())
        print(f"scheduler log: {scheduler.log.name}")
    return {
        "benchmark": "retry_lateness",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "lateness": "broker append time of the handed-off record minus due_at",
        "setup": {
            "delay_topics": len(topics.retries),
            "partitions_per_topic": PARTITIONS,
            "scheduler": "one `hookfleet retry-scheduler` process",
            "broker": bootstrap,
            "scheduler_exit_code": rc,
            "scheduler_pythonpath": scheduler_pythonpath,
            "delays_s": DELAYS_S,
        },
        "machine": machine,
        "scenarios": results,
    }


def _print_table(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(
        f"machine: {machine['cores']} cores, {machine['memory_gb']} GB, load {machine['load_avg_1m_at_start']}, "
        f"librdkafka {machine['librdkafka']}, {machine['platform']}"
    )
    print(f"{'scenario':34} {'received':>9} {'early':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'<=1 s':>7}")
    for name, s in report["scenarios"].items():
        print(
            f"{name:34} {s['received']:>9} {s.get('early', '-'):>6} {s.get('p50_ms', '-'):>8} "
            f"{s.get('p99_ms', '-'):>8} {s.get('max_ms', '-'):>8} {s.get('within_1s', '-'):>7}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.retry_lateness", description=__doc__.split("\n")[0])
    parser.add_argument("--long", action="store_true", help="also 10 min and 1 h Retry-After waits (~65 min)")
    parser.add_argument("--scheduler-pythonpath", help="run the scheduler of another checkout, for before/after")
    parser.add_argument("--name", default="retry_lateness", help="results file name: bench/results/<name>.json")
    args = parser.parse_args()
    report = run(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", LOCAL_KAFKA), args.scheduler_pythonpath, args.long)
    out = machine.save_report(args.name, report)
    _print_table(report)
    print(f"written: {out}")
