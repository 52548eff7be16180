"""`hookfleet retry-scheduler`: hold failed deliveries in the delay topics until due, then hand them back."""

from __future__ import annotations

import argparse

from hookfleet import logs
from hookfleet.kafka import BrokerState, check_broker, new_consumer, new_producer
from hookfleet.metrics import HealthServer, stats_callback
from hookfleet.settings import RetrySchedulerSettings
from hookfleet.shutdown import Shutdown
from retry_scheduler.scheduler import CONSUMER_OPTIONS, RetryScheduler


def run(args: argparse.Namespace) -> int:
    settings = RetrySchedulerSettings()
    logs.setup(settings.log_level, role="retry-scheduler")
    check_broker(settings.kafka_bootstrap_servers)  # fail fast with one line instead of a silent wait
    return run_scheduler(settings, Shutdown().install())


def new_scheduler(settings: RetrySchedulerSettings, shutdown: Shutdown) -> RetryScheduler:
    """A scheduler with its real clients; the consumer's callbacks feed lag metrics and broker health."""
    broker = BrokerState()
    lag_stats = stats_callback(settings.group_id)

    def on_stats(raw: str) -> None:
        lag_stats(raw)
        broker.on_stats(raw)

    consumer = new_consumer(
        settings.kafka_bootstrap_servers,
        settings.group_id,
        **CONSUMER_OPTIONS,
        stats_cb=on_stats,
        error_cb=broker.on_error,
    )
    return RetryScheduler(settings, shutdown, consumer, new_producer(settings.kafka_bootstrap_servers), broker)


def run_scheduler(settings: RetrySchedulerSettings, shutdown: Shutdown) -> int:
    """Run until `shutdown` is requested; returns the exit code. Callable in-process (tests, benchmarks)."""
    scheduler = new_scheduler(settings, shutdown)
    health = HealthServer(settings.metrics_port, scheduler.ready).start() if settings.metrics_port else None
    try:
        scheduler.run()
    finally:
        if health is not None:
            health.stop()
    return 0
