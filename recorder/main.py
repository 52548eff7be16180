"""`hookfleet recorder`: the attempt log and dead letters into PostgreSQL (see recorder/loop.py)."""

from __future__ import annotations

import argparse

from hookfleet import broker_lag, logs, metrics, tracing
from hookfleet.kafka import monitored_consumer, new_producer, wait_for_broker
from hookfleet.retention import LogMaintenance
from hookfleet.settings import RecorderSettings
from hookfleet.shutdown import Shutdown
from hookfleet.stream.membership import consumer_instance_id
from recorder.loop import CONSUMER_OPTIONS, Recorder
from recorder.store import RecorderStore


def run(args: argparse.Namespace) -> int:
    settings = RecorderSettings()
    logs.setup(settings.log_level, role="recorder")
    tracing.setup("recorder")
    # A broker or database outage is waited out, alive and unready (see run_recorder).
    return run_recorder(settings, Shutdown().install())


def new_recorder(
    settings: RecorderSettings, shutdown: Shutdown, heartbeat: metrics.Heartbeat | None = None
) -> Recorder:
    """A recorder with its real clients: the broker's consumer and producer, PostgreSQL's store; the
    consumer's callbacks feed lag metrics and broker health."""
    consumer, broker = monitored_consumer(
        settings.kafka_bootstrap_servers,
        settings.group_id,
        metrics.stats_callback(settings.group_id),
        instance_id=consumer_instance_id(settings.instance_id, "recorder"),
        **CONSUMER_OPTIONS,
    )
    producer = new_producer(settings.kafka_bootstrap_servers)
    store = RecorderStore(settings.database_url.get_secret_value(), settings.retention_days, settings.disable_after)
    return Recorder(settings, shutdown, consumer, producer, store, heartbeat=heartbeat, broker=broker)


def run_recorder(settings: RecorderSettings, shutdown: Shutdown) -> int:
    """Run until `shutdown` is requested; returns the exit code. Callable in-process (tests, benchmarks).

    The health server starts first: with the broker unreachable the role waits alive and unready, and
    starts by itself once the broker answers. The broker-side lag exporter runs beside the loop.
    """
    heartbeat = metrics.Heartbeat()
    recorder = new_recorder(settings, shutdown, heartbeat)
    metrics.PARTITIONS_ASSIGNED.set_function(lambda: len(recorder.assigned))
    metrics.DATABASE_UP.labels("write").set_function(lambda: 1.0 if recorder.db_up else 0.0)
    health = None
    if settings.metrics_port:
        health = metrics.HealthServer(settings.metrics_port, recorder.ready, heartbeat).start()
    lag_stop = None
    # Day partitions ahead, expired ones dropped, sizes published: on its own thread and connection.
    maintenance = LogMaintenance(
        settings.database_url.get_secret_value(), settings.retention_days, settings.log_maintenance_s
    ).start()
    try:
        if (
            wait_for_broker(settings.kafka_bootstrap_servers, shutdown.requested, heartbeat.beat)
            and settings.lag_export_s
        ):
            lag_stop = broker_lag.start_exporter(
                settings.kafka_bootstrap_servers, settings.topic_prefix, settings.lag_groups, settings.lag_export_s
            )
        return recorder.run()
    finally:
        maintenance.stop()
        if lag_stop is not None:
            lag_stop.set()
        if health is not None:
            health.stop()
