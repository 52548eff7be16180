"""`hookfleet api`: serve the management API and the settings page until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging

from aiohttp import web

from api.app import build_app
from hookfleet import logs
from hookfleet.metrics import HealthServer
from hookfleet.settings import ApiSettings
from hookfleet.shutdown import Shutdown

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
"""In-flight requests get this long after SIGTERM (a Test may wait for a slow receiver)."""


async def serve(settings: ApiSettings) -> None:
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()  # opens the database pool: an unreachable database fails here, with its address
    health = None
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        if settings.metrics_port:
            health = HealthServer(settings.metrics_port, lambda: (True, "serving")).start()
        stop = asyncio.Event()
        Shutdown().install(asyncio.get_running_loop()).on_request(stop.set)
        log.info("event=api_started host=%s port=%d", settings.host, settings.port)
        await stop.wait()
    finally:
        if health is not None:
            health.stop()
        await runner.cleanup()
        log.info("event=api_stopped")


def run(args: argparse.Namespace) -> int:
    settings = ApiSettings()
    logs.setup(settings.log_level, role="api")
    asyncio.run(serve(settings))
    return 0
