"""`hookfleet retry-scheduler`: hold failed deliveries in the delay topics until due, then hand them back."""

from __future__ import annotations

import argparse

from hookfleet import logs, tracing
from hookfleet.kafka import monitored_consumer, new_producer, wait_for_broker
from hookfleet.metrics import HealthServer, Heartbeat, stats_callback
from hookfleet.settings import RetrySchedulerSettings
from hookfleet.shutdown import Shutdown
from hookfleet.stream.membership import consumer_instance_id
from retry_scheduler.scheduler import CONSUMER_OPTIONS, RetryScheduler


def run(args: argparse.Namespace) -> int:
    settings = RetrySchedulerSettings()
    logs.setup(settings.log_level, role="retry-scheduler")
    tracing.setup("retry-scheduler")
    # A broker outage is waited out, alive and unready (see run_scheduler).
    return run_scheduler(settings, Shutdown().install())


def new_scheduler(
    settings: RetrySchedulerSettings, shutdown: Shutdown, heartbeat: Heartbeat | None = None
) -> RetryScheduler:
    """A scheduler with its real clients; the consumer's callbacks feed lag metrics and broker health."""
    consumer, broker = monitored_consumer(
        settings.kafka_bootstrap_servers,
        settings.group_id,
        stats_callback(settings.group_id),
        instance_id=consumer_instance_id(settings.instance_id, "retry-scheduler"),
        **CONSUMER_OPTIONS,
    )
    producer = new_producer(settings.kafka_bootstrap_servers)
    return RetryScheduler(settings, shutdown, consumer, producer, broker, heartbeat=heartbeat)


def run_scheduler(settings: RetrySchedulerSettings, shutdown: Shutdown) -> int:
    """Run until `shutdown` is requested; returns the exit code (`shutdown.exit_code`: 0 unless the role
    stopped itself, e.g. for a stuck group join). Callable in-process (tests, benchmarks).

    The health server starts first: while the broker is unreachable the role is alive and unready, and
    it starts consuming by itself once the broker answers.
    """
    heartbeat = Heartbeat()
    scheduler = new_scheduler(settings, shutdown, heartbeat)
    health = HealthServer(settings.metrics_port, scheduler.ready, heartbeat).start() if settings.metrics_port else None
    try:
        wait_for_broker(settings.kafka_bootstrap_servers, shutdown.requested, heartbeat.beat)
        scheduler.run()
    finally:
        if health is not None:
            health.stop()
    return shutdown.exit_code
