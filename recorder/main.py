"""`hookfleet recorder`: the attempt log and dead letters into PostgreSQL (see recorder/loop.py)."""

from __future__ import annotations

import argparse

from hookfleet import logs, metrics
from hookfleet.kafka import check_broker, new_consumer, new_producer
from hookfleet.retention import LogMaintenance
from hookfleet.settings import RecorderSettings
from hookfleet.shutdown import Shutdown
from recorder.loop import CONSUMER_OPTIONS, Recorder
from recorder.store import RecorderStore


def run(args: argparse.Namespace) -> int:
    settings = RecorderSettings()
    logs.setup(settings.log_level, role="recorder")
    # Fail fast with one line when the broker is unreachable; a database outage is waited out instead.
    check_broker(settings.kafka_bootstrap_servers)
    return run_recorder(settings, Shutdown().install())


def new_recorder(settings: RecorderSettings, shutdown: Shutdown) -> Recorder:
    """A recorder with its real clients: the broker's consumer and producer, PostgreSQL's store."""
    consumer = new_consumer(
        settings.kafka_bootstrap_servers,
        settings.group_id,
        **CONSUMER_OPTIONS,
        stats_cb=metrics.stats_callback(settings.group_id),
    )
    producer = new_producer(settings.kafka_bootstrap_servers)
    store = RecorderStore(settings.database_url.get_secret_value(), settings.retention_days, settings.disable_after)
    return Recorder(settings, shutdown, consumer, producer, store)


def run_recorder(settings: RecorderSettings, shutdown: Shutdown) -> int:
    """Run until `shutdown` is requested; returns the exit code. Callable in-process (tests, benchmarks)."""
    recorder = new_recorder(settings, shutdown)
    health = metrics.HealthServer(settings.metrics_port, recorder.ready).start() if settings.metrics_port else None
    # Day partitions ahead, expired ones dropped, sizes published: on its own thread and connection.
    maintenance = LogMaintenance(
        settings.database_url.get_secret_value(), settings.retention_days, settings.log_maintenance_s
    ).start()
    try:
        return recorder.run()
    finally:
        maintenance.stop()
        if health is not None:
            health.stop()
