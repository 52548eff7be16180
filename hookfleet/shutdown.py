"""Graceful shutdown shared by every role.

The first SIGTERM/SIGINT asks the role to stop: stop taking work, drain in-flight work for a bound that
sits below the orchestrator's grace period, store offsets, flush producers, exit 0. A second signal
exits at once (code 130): the operator has decided not to wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Shutdown:
    def __init__(self) -> None:
        self.requested = threading.Event()
        self.exit_code = 0
        """What the role exits with once stopped: 0 for a requested stop, or what the first request said
        (a stuck group join asks to be started afresh: hookfleet/stream/watchdog.py)."""
        self._callbacks: list[Callable[[], None]] = []

    def on_request(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def request(self, reason: str = "requested", exit_code: int = 0) -> None:
        if self.requested.is_set():
            log.warning("event=shutdown_forced reason=%s", reason)
            os._exit(130)
        log.info("event=shutdown_requested reason=%s", reason)
        self.exit_code = exit_code
        self.requested.set()
        for callback in self._callbacks:
            callback()

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> Shutdown:
        """Route SIGTERM and SIGINT here (on the loop when given, so callbacks run on the loop thread)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            if loop is not None:
                loop.add_signal_handler(sig, self.request, signal.Signals(sig).name)
            else:
                signal.signal(sig, lambda signum, _frame: self.request(signal.Signals(signum).name))
        return self
