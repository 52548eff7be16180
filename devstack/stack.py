"""The local stack without Docker: Apache Kafka (KRaft) from Maven Central jars and a private PostgreSQL.

`hookfleet dev up|down|status`; `hookfleet dev up --brokers 3` starts a 3-node KRaft cluster (combined
broker+controller roles, deploy/local/cluster.properties.template) instead of the single broker, on its
own ports and data directory, so both can run side by side. Everything lives in deploy/local/.cache
(git-ignored): the jars, the broker's data and config, PostgreSQL's data directory, logs and pid files.
One exception: run as root from a checkout the `postgres` user cannot enter, PostgreSQL's data
directory and its log live under /var/lib/hookfleet/<hash of the checkout path>/ instead, since the
server itself writes both. Start is idempotent (a running component is left alone) and waits until each
component answers; on failure the tool's own error output, the log path and its last lines are printed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import Template

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from hookfleet.kafka import KafkaUnavailable, check_broker

KAFKA_PORT = 19092
CONTROLLER_PORT = 19093
PG_PORT = 55432
CLUSTER_BASE_PORT = 29092  # node n (1..3): broker on base + n - 1, controller on base + 100 + n - 1
# All below Linux's ephemeral range (32768+): a client reconnecting to a stopped broker on a port in that
# range can be given that very port as its own source port and connect to itself, and the broker then
# cannot bind it when it restarts.


class DevStackError(RuntimeError):
    """A component could not be installed or started; the message says which and where its log is."""


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


@dataclass(frozen=True)
class Paths:
    local: Path  # deploy/local in the checkout

    @property
    def cache(self) -> Path:
        return self.local / ".cache"

    @property
    def logs(self) -> Path:
        return self.cache / "logs"

    @property
    def kafka_libs(self) -> Path:
        return self.cache / "kafka-libs"

    @property
    def kafka_dir(self) -> Path:
        return self.cache / "kafka"

    @property
    def kafka_pid(self) -> Path:
        return self.cache / "kafka.pid"


def default_paths() -> Path:
    env = os.environ.get("HOOKFLEET_DEV_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "deploy" / "local"


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join("    " + line for line in text)


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


# --------------------------------------------------------------------------------------------- Kafka


def fetch_kafka_jars(paths: Paths) -> None:
    """Fetch once per pom.xml content: a changed pom (another Kafka version, a pinned jar) refetches."""
    pom_sha = hashlib.sha256((paths.local / "pom.xml").read_bytes()).hexdigest()
    stamp = paths.kafka_libs / ".pom-sha256"
    if stamp.exists() and stamp.read_text() == pom_sha and any(paths.kafka_libs.glob("kafka_2.13-*.jar")):
        return
    shutil.rmtree(paths.kafka_libs, ignore_errors=True)
    if shutil.which("mvn") is None:
        raise DevStackError("maven (mvn) is needed once to fetch the Kafka jars: apt-get install -y maven")
    say(f"fetching Apache Kafka jars from Maven Central into {paths.kafka_libs} (once)")
    log = paths.logs / "maven.log"
    with log.open("w") as out:
        rc = subprocess.call(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(paths.local / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={paths.kafka_libs}",
                "-DincludeScope=runtime",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if rc != 0:
        shutil.rmtree(paths.kafka_libs, ignore_errors=True)
        raise DevStackError(f"maven could not fetch the Kafka jars (exit {rc}); log: {log}\n{_tail(log)}")
    stamp.write_text(pom_sha)


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java:
        raise DevStackError("java 17+ is needed for the Kafka broker: apt-get install -y openjdk-17-jre-headless")
    return java


def _kafka_java_cmd(paths: Paths, main: str, *args: str, heap: str = "-Xmx256m") -> list[str]:
    return [
        _java(),
        heap,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={paths.local / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={paths.logs}",
        "-cp",
        f"{paths.kafka_libs}/*",
        main,
        *args,
    ]


def new_cluster_id() -> str:
    """A Kafka cluster id (base64url of a UUID). Like Kafka's own Uuid.randomUuid, never one starting with
    '-': the storage tool would read it as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_up(paths: Paths, bootstrap: str) -> None:
    try:
        check_broker(bootstrap, timeout_s=2)
        say(f"kafka already up at {bootstrap}")
        return
    except KafkaUnavailable:
        pass
    fetch_kafka_jars(paths)
    paths.kafka_dir.mkdir(parents=True, exist_ok=True)
    data = paths.kafka_dir / "data"
    props = paths.kafka_dir / "server.properties"
    template = Template((paths.local / "server.properties.template").read_text())
    props.write_text(template.substitute(broker_port=KAFKA_PORT, controller_port=CONTROLLER_PORT, data_dir=str(data)))
    if not (data / "meta.properties").exists():
        cluster_id = new_cluster_id()
        log = paths.logs / "kafka-format.log"
        with log.open("w") as out:
            rc = subprocess.call(
                _kafka_java_cmd(
                    paths, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props)
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if rc != 0:
            raise DevStackError(f"kafka storage format failed (exit {rc}); log: {log}\n{_tail(log)}")
    log = paths.logs / "kafka.out"
    say(f"starting kafka (KRaft) on {bootstrap}; logs in {paths.logs}")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            _kafka_java_cmd(paths, "kafka.Kafka", str(props), heap="-Xmx1g"),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    paths.kafka_pid.write_text(str(proc.pid))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevStackError(
                f"kafka exited with code {proc.returncode}; log: {paths.logs / 'kafka.log'}\n"
                f"{_tail(log)}\n{_tail(paths.logs / 'kafka.log')}"
            )
        try:
            check_broker(bootstrap, timeout_s=2)
            say(f"kafka up at {bootstrap} (pid {proc.pid})")
            return
        except KafkaUnavailable:
            time.sleep(0.5)
    raise DevStackError(f"kafka did not answer within 90s; log: {paths.logs / 'kafka.log'}\n{_tail(log)}")


def kafka_down(paths: Paths) -> None:
    pid = _alive(paths.kafka_pid)
    if pid is None:
        say("kafka not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(paths.kafka_pid):
        time.sleep(0.2)
    if _alive(paths.kafka_pid):
        os.kill(pid, signal.SIGKILL)
        say("kafka did not stop within 30s; killed")
    paths.kafka_pid.unlink(missing_ok=True)
    say("kafka stopped")


# ------------------------------------------------------------------------------------ Kafka cluster


@dataclass(frozen=True)
class Cluster:
    """A local KRaft cluster of `size` nodes, each broker and controller. `directory` holds each node's
    config, data, log and pid file; the jars are shared with the single broker. Tests give their own
    `directory` and `base_port`, so they never touch a developer's running cluster."""

    paths: Paths
    size: int = 3
    base_port: int = CLUSTER_BASE_PORT
    directory: Path | None = None

    @property
    def root(self) -> Path:
        return self.directory or self.paths.cache / "kafka-cluster"

    def broker_port(self, node: int) -> int:
        return self.base_port + node - 1

    def controller_port(self, node: int) -> int:
        return self.base_port + 100 + node - 1

    @property
    def nodes(self) -> range:
        return range(1, self.size + 1)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.broker_port(n)}" for n in self.nodes)

    def node_dir(self, node: int) -> Path:
        return self.root / f"node-{node}"

    def pid_file(self, node: int) -> Path:
        return self.node_dir(node) / "kafka.pid"

    def log(self, node: int) -> Path:
        return self.node_dir(node) / "kafka.log"

    def pid(self, node: int) -> int | None:
        pid = _alive(self.pid_file(node))
        return None if pid is None or _gone(pid) else pid

    def _props(self, node: int) -> Path:
        voters = ",".join(f"{n}@127.0.0.1:{self.controller_port(n)}" for n in self.nodes)
        props = self.node_dir(node) / "server.properties"
        template = Template((self.paths.local / "cluster.properties.template").read_text())
        props.write_text(
            template.substitute(
                node_id=node,
                voters=voters,
                broker_port=self.broker_port(node),
                controller_port=self.controller_port(node),
                data_dir=str(self.node_dir(node) / "data"),
            )
        )
        return props

    def _format(self) -> None:
        """Format every node that has no data yet with one cluster id (static quorum: the voters are
        in the config). A half-formatted cluster (some nodes with data) keeps the id it has."""
        ids = {
            line.split("=", 1)[1]
            for n in self.nodes
            if (meta := self.node_dir(n) / "data" / "meta.properties").exists()
            for line in meta.read_text().splitlines()
            if line.startswith("cluster.id=")
        }
        cluster_id = next(iter(ids)) if ids else new_cluster_id()
        running = []
        for node in self.nodes:
            if (self.node_dir(node) / "data" / "meta.properties").exists():
                continue
            props = self._props(node)
            out = (self.node_dir(node) / "format.log").open("w")
            cmd = _kafka_java_cmd(self.paths, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}")
            running.append((node, out, subprocess.Popen([*cmd, "-c", str(props)], stdout=out, stderr=out)))
        for node, out, proc in running:
            rc = proc.wait()
            out.close()
            if rc != 0:
                log = self.node_dir(node) / "format.log"
                raise DevStackError(f"kafka storage format of node {node} failed (exit {rc}); log: {log}\n{_tail(log)}")

    def start_node(self, node: int) -> int:
        """Start one node (idempotent) without waiting; returns its pid."""
        pid = self.pid(node)
        if pid is not None:
            return pid
        props = self._props(node)
        with (self.node_dir(node) / "kafka.out").open("ab") as out:
            cmd = _kafka_java_cmd(self.paths, "kafka.Kafka", str(props), heap="-Xmx512m")
            cmd[cmd.index(f"-Dkafka.logs.dir={self.paths.logs}")] = f"-Dkafka.logs.dir={self.node_dir(node)}"
            # Three JVMs on a laptop: the quick JIT tier and the serial collector halve start-up CPU, which
            # is what a rolling restart waits for; throughput stays far above what the local stack needs.
            cmd[cmd.index("-XX:+UseG1GC")] = "-XX:+UseSerialGC"
            cmd.insert(1, "-XX:TieredStopAtLevel=1")
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.pid_file(node).write_text(str(proc.pid))
        return proc.pid

    def stop_node(self, node: int, kill: bool = False, timeout_s: float = 60.0) -> None:
        """SIGTERM (a controlled shutdown: leadership moves away first) or, with `kill`, SIGKILL."""
        pid = self.pid(node)
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _gone(pid) is False:
            time.sleep(0.1)
        if _gone(pid) is False:
            os.kill(pid, signal.SIGKILL)
            say(f"kafka node {node} did not stop within {timeout_s:g}s; killed")
        self.pid_file(node).unlink(missing_ok=True)

    def wait_healthy(self, timeout_s: float = 120.0) -> None:
        """Until every node is registered and no partition lacks a replica in its in-sync set."""
        deadline = time.monotonic() + timeout_s
        problem: str | None = "no answer"
        while time.monotonic() < deadline:
            for node in self.nodes:
                if self.pid(node) is None:
                    raise DevStackError(f"kafka node {node} exited; log: {self.log(node)}\n{_tail(self.log(node))}")
            problem = cluster_problem(self.bootstrap, self.size)
            if problem is None:
                return
            time.sleep(0.5)
        raise DevStackError(f"kafka cluster not healthy within {timeout_s:g}s ({problem}); logs under {self.root}")

    def up(self, timeout_s: float = 120.0) -> None:
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        fetch_kafka_jars(self.paths)
        for node in self.nodes:
            self.node_dir(node).mkdir(parents=True, exist_ok=True)
        self._format()
        say(f"starting a {self.size}-node kafka cluster (KRaft, combined roles) on {self.bootstrap}")
        for node in self.nodes:
            self.start_node(node)
        self.wait_healthy(timeout_s)
        say(f"kafka cluster up at {self.bootstrap}; logs under {self.root}")

    def down(self) -> None:
        running = [n for n in self.nodes if self.pid(n) is not None]
        for node in running:  # all at once: one by one, the last two would wait for a quorum that is gone
            os.kill(self.pid(node) or 0, signal.SIGTERM)
        for node in running:
            self.stop_node(node, timeout_s=30.0)
        if running:
            say("kafka cluster stopped")


def _gone(pid: int) -> bool:
    """Whether `pid` has exited (reaping it if it is our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def cluster_problem(bootstrap: str, brokers: int) -> str | None:
    """None when `brokers` brokers answer and every partition has its full in-sync set, else what is not."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=3)
    except KafkaException:
        return "no answer"
    if len(metadata.brokers) < brokers:
        return f"{len(metadata.brokers)} of {brokers} brokers registered"
    for topic in metadata.topics.values():
        for partition in topic.partitions.values():
            if partition.leader < 0 or len(partition.isrs) < len(partition.replicas):
                return f"{topic.topic}[{partition.id}] under-replicated"
    return None


# ---------------------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True):
        return candidate.parent
    if os.geteuid() != 0:
        raise DevStackError("postgresql server not installed: sudo apt-get install -y postgresql")
    say("installing postgresql from Debian packages (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        if subprocess.call(cmd, env=env, stdout=subprocess.DEVNULL) != 0:
            raise DevStackError(f"{' '.join(cmd)} failed")
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True):
        return candidate.parent
    raise DevStackError("postgresql installed but pg_ctl not found under /usr/lib/postgresql")


def _as_pg_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the `postgres` system user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def pg_data_dir(paths: Paths) -> Path:
    """The private data folder; as root, one the `postgres` user can reach even if the checkout can't be
    (a checkout under a 0700 `mktemp -d` directory, or root's home)."""
    preferred = paths.cache / "pgdata"
    if os.geteuid() != 0:
        return preferred
    paths.cache.mkdir(parents=True, exist_ok=True)
    if subprocess.call(_as_pg_user(["test", "-x", str(paths.cache)]), stderr=subprocess.DEVNULL, cwd="/") == 0:
        return preferred
    digest = hashlib.sha256(str(paths.local).encode()).hexdigest()[:12]
    return Path("/var/lib/hookfleet") / digest / "pgdata"


def pg_log_path(paths: Paths, data: Path) -> Path:
    """PostgreSQL's log, written by the server itself (`pg_ctl -l`), so it must be where the `postgres` user
    can write: beside a relocated data folder, else in the checkout's log folder."""
    return paths.logs / "postgres.log" if data.is_relative_to(paths.cache) else data.parent / "postgres.log"


def _pg_ready(bin_dir: Path, port: int = PG_PORT) -> bool:
    rc = subprocess.call(
        [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return rc == 0


def _run_as_pg(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    # cwd "/": the `postgres` user may not be allowed into the caller's working directory.
    return subprocess.run(_as_pg_user(cmd), capture_output=True, text=True, cwd="/")


def _pg_owned(*paths: Path) -> None:
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, "postgres", "postgres")


def server_options(port: int, socket_dir: Path) -> str:
    """The `postgres` options `pg_ctl -o` passes on: pg_ctl starts the server through a shell, so the socket
    folder (inside the checkout, whose path may hold spaces or quotes) is quoted for it."""
    return (
        f"-p {port} -c listen_addresses=127.0.0.1 -k {shlex.quote(str(socket_dir))}"
        " -c max_connections=200 -c fsync=off"
    )


def postgres_up(paths: Paths, port: int = PG_PORT) -> None:
    bin_dir = _pg_bin()
    data = pg_data_dir(paths)
    log = pg_log_path(paths, data)
    if _pg_ready(bin_dir, port):
        say(f"postgresql already up on 127.0.0.1:{port}")
    else:
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            _pg_owned(data)
            say(f"initialising postgresql data directory {data}")
            out = _run_as_pg(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", "hookfleet", "--auth=trust", "-E", "UTF8"]
            )
            if out.returncode != 0:
                raise DevStackError(f"initdb failed: {(out.stderr or out.stdout).strip()[-800:]}")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        _pg_owned(log)
        options = server_options(port, data)
        out = _run_as_pg(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"]
        )
        if out.returncode != 0:
            said = "\n".join("    " + line for line in (out.stderr + out.stdout).strip().splitlines()[-15:])
            raise DevStackError(
                f"postgresql did not start (pg_ctl exit {out.returncode}); pg_ctl said:\n{said}\n"
                f"log: {log}\n{_tail(log)}"
            )
        say(f"postgresql up on 127.0.0.1:{port}; data in {data}; log {log}")
    exists = _psql("SELECT 1 FROM pg_database WHERE datname = 'hookfleet'", port)
    if exists.stdout.strip() != "1":
        created = _psql("CREATE DATABASE hookfleet", port)
        if created.returncode != 0:
            raise DevStackError(f"could not create database hookfleet: {created.stderr.strip()[-400:]}")


def _psql(sql: str, port: int = PG_PORT) -> subprocess.CompletedProcess[str]:
    """One statement against the local server's maintenance database."""
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "hookfleet", "-d", "postgres", "-tAc", sql],
        capture_output=True,
        text=True,
    )


def postgres_down(paths: Paths, port: int = PG_PORT) -> None:
    bin_dir = _pg_bin()
    data = pg_data_dir(paths)
    if not _pg_ready(bin_dir, port) or not (data / "PG_VERSION").exists():
        say("postgresql not running")
        return
    _run_as_pg([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
    say("postgresql stopped")


# ------------------------------------------------------------------------------------------- actions


def up(local: Path | None = None, bootstrap: str = f"127.0.0.1:{KAFKA_PORT}", brokers: int = 1) -> None:
    """PostgreSQL and either the single broker or, with `brokers` > 1, the local cluster."""
    paths = Paths(local or default_paths())
    paths.logs.mkdir(parents=True, exist_ok=True)
    postgres_up(paths)
    if brokers == 1:
        kafka_up(paths, bootstrap)
        return
    cluster = Cluster(paths, size=brokers)
    cluster.up()
    say(f"use it with: export KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap}")


def down(local: Path | None = None) -> None:
    paths = Paths(local or default_paths())
    kafka_down(paths)
    Cluster(paths).down()
    postgres_down(paths)


def status(local: Path | None = None, bootstrap: str = f"127.0.0.1:{KAFKA_PORT}") -> bool:
    paths = Paths(local or default_paths())
    try:
        brokers = check_broker(bootstrap, timeout_s=2)
        say(f"kafka       up   {bootstrap} ({brokers} broker)")
        kafka_ok = True
    except KafkaUnavailable:
        say(f"kafka       down {bootstrap}")
        kafka_ok = False
    cluster = Cluster(paths)
    running = [n for n in cluster.nodes if cluster.pid(n) is not None]
    if running:
        problem = cluster_problem(cluster.bootstrap, cluster.size)
        say(f"cluster     {len(running)}/{cluster.size} nodes {cluster.bootstrap} ({problem or 'healthy'})")
        kafka_ok = kafka_ok or problem is None
    pg_ok = _pg_ready(_pg_bin())
    say(f"postgresql  {'up  ' if pg_ok else 'down'} 127.0.0.1:{PG_PORT} (log {pg_log_path(paths, pg_data_dir(paths))})")
    say(f"logs        {paths.logs}")
    return kafka_ok and pg_ok


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0 if status() else 1)
