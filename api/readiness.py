"""The API's readiness: PostgreSQL answers and the secret key is checked. One check, asked by the HTTP `/healthz`
(the readiness probe) and, every `READINESS_EVERY_S`, by the metrics port's `/readyz`, whose `hookfleet_ready`
and `hookfleet_database_up` feed the API and database alerts: without them a PostgreSQL outage paged nobody."""

from __future__ import annotations

import asyncio
import logging

from api.resources import Resources
from hookfleet import metrics

log = logging.getLogger(__name__)

READINESS_EVERY_S = 5.0
"""As often as the readiness probe asks (deploy/k8s/api.yaml periodSeconds)."""


async def check(resources: Resources) -> tuple[bool, str]:
    """(ready, reason); any failure to reach the database means "do not route traffic here"."""
    try:
        await resources.store.ping()
    except Exception as exc:
        return False, f"database: {type(exc).__name__}"
    if not resources.key_verified:  # the database just came back: the secret key check is still running
        return False, "secret key not yet checked"
    return True, "database reachable, secret key checked"


class ReadinessWatch:
    """Runs `check` on the event loop; the health server's thread reads the last answer (a plain tuple)."""

    def __init__(self, resources: Resources, every_s: float = READINESS_EVERY_S) -> None:
        self._resources = resources
        self._every_s = every_s
        self.answer: tuple[bool, str] = (False, "not checked yet")

    def ready(self) -> tuple[bool, str]:
        return self.answer

    async def run(self) -> None:
        while True:
            answer = await check(self._resources)
            if answer[0] != self.answer[0]:
                log.info("event=api_readiness_changed ready=%s reason=%s", answer[0], answer[1])
            self.answer = answer
            metrics.DATABASE_UP.labels("ping").set(0.0 if answer[1].startswith("database:") else 1.0)
            await asyncio.sleep(self._every_s)
