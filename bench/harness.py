"""What every end-to-end benchmark shares: the receiver, the broker and database, a fleet per scenario,
publishing (as a burst or at a paced rate) and reading back what the receiver got."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.machine import CpuSample, describe, kafka_broker_pid, save_report
from bench.receiver import Receiver
from bench.stack import BenchStack, cpu_seconds, thread_cpu_seconds
from demo.tls import make_demo_certs
from hookfleet.settings import LOCAL_DATABASE_URL, LOCAL_KAFKA, CommonSettings
from producer.publisher import EventPublisher, build_event
from schemas.catalog import PRODUCT_TYPES, EventType, sample_data
from schemas.models import Event

TYPES = list(PRODUCT_TYPES)


@dataclass
class Harness:
    bootstrap: str
    database_root_url: str
    receiver: Receiver
    ca: Path
    log_dir: Path
    dispatcher_prefix: Sequence[str] = ()
    """A command prefix for the dispatcher process (a profiler), empty for a plain `hookfleet dispatcher`."""
    dispatcher_env: dict[str, str] = field(default_factory=dict)

    def stack(self, name: str, **env: str) -> BenchStack:
        return BenchStack(self.bootstrap, self.database_root_url, self.ca, self.log_dir, name, extra_env=dict(env))

    def publisher(self, stack: BenchStack) -> EventPublisher:
        return EventPublisher(CommonSettings(kafka_bootstrap_servers=self.bootstrap, topic_prefix=stack.prefix))

    def start_dispatcher(self, stack: BenchStack, **env: str) -> int:
        role = stack.start("dispatcher", prefix=self.dispatcher_prefix, **{**self.dispatcher_env, **env})
        return role.pid

    def wait_received(self, expected: int, timeout_s: float, group: str | None = None) -> int:
        """Poll the receiver until it has `expected` requests (in `group`, when given); returns the count."""
        deadline = time.monotonic() + timeout_s
        got = 0
        while time.monotonic() < deadline:
            stats = self.receiver.stats()
            got = int(stats["counts"].get(group, 0)) if group else int(stats["received"])
            if got >= expected:
                return got
            time.sleep(0.1)
        return got


@dataclass
class Arrivals:
    """First arrival time of each expected event id, and what else the receiver got meanwhile."""

    first: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    others: int = 0


def collect(receiver: Receiver, expected: set[str], timeout_s: float) -> Arrivals:
    """Read the receiver's arrivals (since its last reset) until every expected id is in, or the timeout."""
    got = Arrivals()
    cursor = 0
    deadline = time.monotonic() + timeout_s
    while True:
        batch = receiver.arrivals(cursor)
        cursor += len(batch)
        for at, event_id, _ in batch:
            if event_id not in expected:
                got.others += 1
            elif event_id in got.first:
                got.duplicates += 1
            else:
                got.first[event_id] = at
        if len(got.first) >= len(expected) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def event_for(account_id: str, n: int, event_type: EventType | None = None, event_id: str | None = None) -> Event:
    kind = event_type or TYPES[n % len(TYPES)]
    return build_event(account_id, kind, sample_data(kind), event_id=event_id)


def publish_burst(publisher: EventPublisher, events: list[Event]) -> tuple[float, float]:
    """Queue every event as fast as the producer takes them; returns (start, acknowledged) wall times."""
    started = time.time()
    for event in events:
        publisher.publish(event)
    if publisher.flush(60) != 0:
        raise RuntimeError("benchmark publisher could not deliver every event within 60 s")
    return started, time.time()


def publish_paced(
    publisher: EventPublisher, make_event: Callable[[int], Event], rate: float, seconds: float
) -> dict[str, float]:
    """Publish `rate` events/s for `seconds`, evenly; returns event id -> wall time just before publish."""
    published: dict[str, float] = {}
    started = time.monotonic()
    n = 0
    total = int(rate * seconds)
    while n < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        while n < due:
            event = make_event(n)
            published[event.id] = time.time()
            publisher.publish(event)
            n += 1
        time.sleep(0.001)
    if publisher.flush(60) != 0:
        raise RuntimeError("benchmark publisher could not deliver every event within 60 s")
    return published


class PacedStream(threading.Thread):
    """`publish_paced` for long runs: publishes `rate` events/s on its own thread while the caller reads the
    receiver, and keeps each event's publish time in a compact array indexed by its number (`make_event(n)`
    must carry n in the event id), so millions of events hold 8 bytes each instead of a dict entry."""

    def __init__(self, publisher: EventPublisher, make_event: Callable[[int], Event], rate: float, seconds: float):
        super().__init__(name="paced-publisher", daemon=True)
        self.total = int(rate * seconds)
        self.rate = rate
        self.sent_at = array("d", bytes(8 * self.total))
        self.published = 0
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.ended_at = 0.0
        self._publisher = publisher
        self._make_event = make_event
        self._stop_requested = threading.Event()

    def run(self) -> None:
        try:
            self._publish()
        except Exception as exc:  # handed to the caller, who reports it
            self.error = exc
            self.ended_at = self.ended_at or time.time()

    def _publish(self) -> None:
        self.started_at = time.time()
        started = time.monotonic()
        n = 0
        while n < self.total and not self._stop_requested.is_set():
            due = min(self.total, int((time.monotonic() - started) * self.rate) + 1)
            while n < due:
                event = self._make_event(n)
                self.sent_at[n] = time.time()
                self._publisher.publish(event)
                n += 1
                self.published = n
            time.sleep(0.001)
        self.ended_at = time.time()
        if self._publisher.flush(60) != 0:
            raise RuntimeError("benchmark publisher could not deliver every event within 60 s")

    def stop(self) -> None:
        self._stop_requested.set()

    def achieved_per_s(self) -> float:
        span = (self.ended_at or time.time()) - self.started_at
        return round(self.published / span, 1) if span > 0 else 0.0


def _postgres_pids() -> list[int]:
    """Every PostgreSQL process on the machine (postmaster, backends, background workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:  # gone meanwhile (a PostgreSQL backend that ended)
        return 0.0


class CpuMeter:
    """CPU seconds used by named processes over a window, and how busy the whole machine was.

    Besides the processes named by the caller: the Kafka broker, every PostgreSQL process (summed; a
    backend that ends inside the window loses its share) and this benchmark process itself, which
    publishes the events and collects the receiver's arrivals."""

    def __init__(self, pids: dict[str, int]) -> None:
        broker = kafka_broker_pid()
        self._pids = {**pids, **({"kafka broker": broker} if broker else {}), "bench (publisher)": os.getpid()}
        self._start = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        self._postgres = {pid: _cpu_or_zero(pid) for pid in _postgres_pids()}
        self._dispatcher = pids.get("dispatcher")
        self._threads = thread_cpu_seconds(self._dispatcher) if self._dispatcher else {}
        self._machine = CpuSample.now()
        self._wall = time.monotonic()

    def read(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._wall
        used = {name: round(cpu_seconds(pid) - self._start[name], 2) for name, pid in self._pids.items()}
        postgres = sum(max(0.0, _cpu_or_zero(pid) - self._postgres.get(pid, 0.0)) for pid in _postgres_pids())
        if postgres or self._postgres:
            used["postgresql"] = round(postgres, 2)
        threads = {}
        if self._dispatcher:
            now = thread_cpu_seconds(self._dispatcher)
            threads = {k: round(v - self._threads.get(k, 0.0), 2) for k, v in sorted(now.items())}
        return {
            "window_s": round(elapsed, 2),
            "cpu_s": used,
            "dispatcher_threads_cpu_s": {k: v for k, v in threads.items() if v > 0},
            "machine_busy": CpuSample.now().busy_since(self._machine),
        }


def per_second(times: list[float], start: float) -> list[int]:
    """Arrivals in each second after `start`: shows stalls that a single rate hides."""
    counts: list[int] = []
    for at in times:
        second = max(0, int(at - start))
        counts.extend([0] * (second + 1 - len(counts)))
        counts[second] += 1
    return counts


def steady_rate(times: list[float]) -> float:
    """Requests per second between the 10th and the 90th percentile arrival: excludes ramp-up and tail."""
    ordered = sorted(times)
    if len(ordered) < 20:
        return 0.0
    low, high = len(ordered) // 10, len(ordered) * 9 // 10
    span = ordered[high] - ordered[low]
    return round((high - low) / span, 1) if span > 0 else 0.0


@contextmanager
def bench_session(kind: str, name: str, slow_ms: int = 2_000) -> Iterator[tuple[Harness, dict[str, Any]]]:
    """A benchmark module's run: its own folder, certificates and receiver, the broker and database of the
    environment (`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`), and a report noting the machine that is saved as
    bench/results/<name>.json however the run ends (its duration and the load at the end included)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"hookfleet-{kind}-"))
    ca, cert, key = make_demo_certs(workdir / "tls")
    receiver = Receiver(cert, key, ca, workdir, slow_ms)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", LOCAL_KAFKA)
    database_url = os.environ.get("DATABASE_URL", LOCAL_DATABASE_URL)
    report: dict[str, Any] = {"benchmark": kind, "machine": describe(), "logs": str(workdir)}
    began = time.monotonic()
    try:
        yield Harness(bootstrap, database_url, receiver, ca, workdir), report
    finally:
        receiver.stop()
        report["duration_s"] = round(time.monotonic() - began, 1)
        report["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
        report["written"] = str(save_report(name, report))


def parse_trees(specs: Sequence[str]) -> list[tuple[str, str | None]]:
    """`name=path` checkouts to compare (`.` or nothing: this one) -> (name, path or None)."""
    trees = [(spec.partition("=")[0], spec.partition("=")[2]) for spec in specs] or [("this tree", ".")]
    return [(name, None if path in ("", ".") else path) for name, path in trees]


def alternating(trees: Sequence[tuple[str, str | None]], pairs: int) -> Iterator[tuple[int, str, str | None]]:
    """(pair number, name, path) for `pairs` rounds over the trees, every other round in reverse order: a
    machine that gets busier during the run weighs on every tree alike."""
    for pair in range(pairs):
        for name, path in trees if pair % 2 == 0 else list(reversed(trees)):
            yield pair + 1, name, path
