"""What the figures were measured on, and how busy the machine was meanwhile: a 2-core machine shared
with other work gives different absolute numbers than a quiet one, so every report carries both."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from confluent_kafka import libversion as librdkafka_version

KAFKA_PID_FILE = Path(__file__).resolve().parent.parent / "deploy" / "local" / ".cache" / "kafka.pid"
RESULTS = Path(__file__).resolve().parent / "results"


def save_report(name: str, report: dict[str, Any]) -> Path:
    """Write a benchmark's report to bench/results/<name>.json (git-ignored) and return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out


def describe() -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    model = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "librdkafka": librdkafka_version()[0],
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def kafka_broker_pid() -> int | None:
    """The broker the benchmark runs against (its CPU belongs in the picture): the process listening on the
    port of `KAFKA_BOOTSTRAP_SERVERS` when that is set (a broker of the benchmark's own, which no other work
    uses), else the local stack's."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        port = int(bootstrap.split(",")[0].rpartition(":")[2])
        return listener_pid(port)
    try:
        pid = int(KAFKA_PID_FILE.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def listener_pid(port: int) -> int | None:
    """The process listening on a local TCP `port` (from /proc: the socket's inode, then whose fd it is)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


@dataclass(frozen=True)
class CpuSample:
    busy: int
    total: int

    @classmethod
    def now(cls) -> CpuSample:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return cls(busy=sum(fields) - idle, total=sum(fields))

    def busy_since(self, earlier: CpuSample) -> float:
        """Fraction of all cores busy between `earlier` and this sample (0..1)."""
        total = self.total - earlier.total
        return round((self.busy - earlier.busy) / total, 3) if total else 0.0
