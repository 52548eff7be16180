"""`hookfleet retry-scheduler`: hold failed deliveries in the delay topics until due, then hand them back."""

from __future__ import annotations

import argparse

from hookfleet import logs
from hookfleet.kafka import wait_for_broker
from hookfleet.metrics import HealthServer, Heartbeat
from hookfleet.settings import RetrySchedulerSettings
from hookfleet.shutdown import Shutdown
from retry_scheduler.scheduler import RetryScheduler


def run(args: argparse.Namespace) -> int:
    settings = RetrySchedulerSettings()
    logs.setup(settings.log_level, role="retry-scheduler")
    return run_scheduler(settings, Shutdown().install())


def run_scheduler(settings: RetrySchedulerSettings, shutdown: Shutdown) -> int:
    """Run until `shutdown` is requested; returns the exit code. Callable in-process (tests, benchmarks).

    The health server starts first: while the broker is unreachable the role is alive and unready, and
    it starts consuming by itself once the broker answers.
    """
    heartbeat = Heartbeat()
    scheduler = RetryScheduler(settings, shutdown, heartbeat)
    health = HealthServer(settings.metrics_port, scheduler.ready, heartbeat).start() if settings.metrics_port else None
    try:
        wait_for_broker(settings.kafka_bootstrap_servers, shutdown.requested, heartbeat.beat)
        scheduler.run()
    finally:
        if health is not None:
            health.stop()
    return 0
