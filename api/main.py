"""`hookfleet api`: serve the management API and the settings page until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging

from aiohttp import web

from api.app import build_app
from api.readiness import ReadinessWatch
from api.resources import RESOURCES
from hookfleet import logs, tracing
from hookfleet.metrics import HealthServer, Heartbeat
from hookfleet.settings import ApiSettings
from hookfleet.shutdown import Shutdown

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
"""In-flight requests get this long after SIGTERM (a Test may wait for a slow receiver)."""
BEAT_EVERY_S = 1.0


async def _beat(heartbeat: Heartbeat) -> None:
    """Liveness of the API is its event loop turning: a blocked loop stops this task, and `/livez` fails."""
    while True:
        heartbeat.beat()
        await asyncio.sleep(BEAT_EVERY_S)


async def serve(settings: ApiSettings) -> None:
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    heartbeat = Heartbeat()
    beating = asyncio.create_task(_beat(heartbeat))
    # Opens the database pool; an unreachable database is retried in the background (api/store.py), and so
    # is the secret key check (api/resources.py): the API serves, unready on its HTTP /healthz, and
    # recovers by itself.
    await runner.setup()
    health = None
    watching: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        if settings.metrics_port:
            # The same check as the HTTP /healthz (database reachable, key checked), so hookfleet_ready and
            # hookfleet_database_up tell the alerts when the API cannot serve.
            watch = ReadinessWatch(app[RESOURCES])
            watching = asyncio.create_task(watch.run())
            health = HealthServer(settings.metrics_port, watch.ready, heartbeat).start()
        stop = asyncio.Event()
        Shutdown().install(asyncio.get_running_loop()).on_request(stop.set)
        app[RESOURCES].on_fatal(stop.set)  # the key check deferred by a database outage refused the key
        log.info("event=api_started host=%s port=%d", settings.host, settings.port)
        await stop.wait()
    finally:
        beating.cancel()
        if watching is not None:
            watching.cancel()
        if health is not None:
            health.stop()
        await runner.cleanup()
        log.info("event=api_stopped")
    fatal = app[RESOURCES].fatal
    if fatal is not None:
        raise fatal  # one line and exit 1, as when the key is refused at startup


def run(args: argparse.Namespace) -> int:
    settings = ApiSettings()
    logs.setup(settings.log_level, role="api")
    tracing.setup("api", send_to_receivers=settings.trace_receivers)  # Test deliveries and replays
    asyncio.run(serve(settings))
    return 0
