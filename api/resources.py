"""What the API holds while it runs: the database pool, the secret box, the delivery session used by
Test (the dispatcher's own), the Kafka producer used by Redeliver, Recover and Replay, and the running replays.

Created on startup inside the running loop and closed on cleanup. The holder itself exists before the
app starts, because aiohttp freezes the application's mapping once it is running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from api.quotas import SlidingWindow
from api.replay import ReplayRunner
from api.store import Store
from api.url_check import HostChecker
from delivery.deliverer import Deliverer
from hookfleet import secret_keys, secretbox
from hookfleet.db import DatabaseUnavailable
from hookfleet.kafka import KafkaProducer
from hookfleet.settings import ApiSettings

log = logging.getLogger(__name__)


@dataclass
class Resources:
    settings: ApiSettings
    _store: Store | None = None
    _box: secretbox.SecretBox | None = None
    _deliverer: Deliverer | None = None
    _producer: KafkaProducer | None = None
    _hosts: HostChecker | None = None
    _replays: ReplayRunner | None = None
    _closing: list[str] = field(default_factory=list)
    _key_check: asyncio.Task[None] | None = None
    _key_check_stop: asyncio.Event | None = None
    _on_fatal: list[Callable[[], None]] = field(default_factory=list)
    fatal: BaseException | None = None
    """Set when the key check deferred by a database outage refused the key: the API then stops (exit 1)."""
    create_rate: SlidingWindow = field(init=False)
    test_rate: SlidingWindow = field(init=False)
    redeliver_rate: SlidingWindow = field(init=False)
    recover_rate: SlidingWindow = field(init=False)
    url_change_rate: SlidingWindow = field(init=False)
    filter_preview_rate: SlidingWindow = field(init=False)

    def __post_init__(self) -> None:
        self.create_rate = SlidingWindow(self.settings.creates_per_minute)
        self.test_rate = SlidingWindow(self.settings.tests_per_minute)
        self.redeliver_rate = SlidingWindow(self.settings.redeliveries_per_minute)
        self.recover_rate = SlidingWindow(self.settings.recovers_per_minute)
        self.url_change_rate = SlidingWindow(self.settings.url_changes_per_minute)
        self.filter_preview_rate = SlidingWindow(self.settings.filter_previews_per_minute)

    @property
    def store(self) -> Store:
        assert self._store is not None, "resources used before startup"
        return self._store

    @property
    def box(self) -> secretbox.SecretBox:
        """The verified key; while the database was unreachable since startup it is not verified yet, and
        a request needing it is a 503 like any other database outage."""
        if self._box is None:
            raise DatabaseUnavailable("the secret key is not yet checked against the database")
        return self._box

    @property
    def key_verified(self) -> bool:
        return self._box is not None

    def on_fatal(self, callback: Callable[[], None]) -> None:
        """`callback` runs if the deferred key check refuses the key (see `fatal`), at once if it already has."""
        self._on_fatal.append(callback)
        if self.fatal is not None:
            callback()

    @property
    def deliverer(self) -> Deliverer:
        assert self._deliverer is not None, "resources used before startup"
        return self._deliverer

    @property
    def producer(self) -> KafkaProducer:
        assert self._producer is not None, "resources used before startup"
        return self._producer

    @property
    def hosts(self) -> HostChecker:
        assert self._hosts is not None, "resources used before startup"
        return self._hosts

    @property
    def replays(self) -> ReplayRunner:
        assert self._replays is not None, "resources used before startup"
        return self._replays

    @property
    def database_url(self) -> str:
        return self.settings.database_url.get_secret_value()

    async def start(self) -> None:
        box = secret_keys.configured_box(self.settings)  # a missing key fails before anything is opened
        self._store = await Store.open(self.database_url)
        try:
            await asyncio.to_thread(secret_keys.verify_against_database, self.database_url, box)
        except DatabaseUnavailable:
            # Serve unready instead of exiting (a database outage during a rollout must not crash-loop the
            # API); the key is checked as soon as PostgreSQL answers, and a wrong one still stops the API.
            self._key_check_stop = asyncio.Event()
            self._key_check = asyncio.create_task(self._check_key_later(self._key_check_stop))
        else:
            self._box = box
        self._deliverer = Deliverer(self.settings)
        self._producer = KafkaProducer(self.settings.kafka_bootstrap_servers)
        self._hosts = HostChecker(
            self.settings.allow_networks, self.settings.dns_workers, self.settings.dns_lookups_per_account
        )
        self._replays = ReplayRunner(
            self.database_url,
            self._producer,
            self.settings.topics,
            self.settings.replay_rate_per_s,
            per_account=self.settings.replays_per_account,
            max_running=self.settings.max_replays_running,
        )

    async def _check_key_later(self, stop: asyncio.Event) -> None:
        try:
            box = await secret_keys.wait_for_verified_box(self.settings, stop)
        except Exception as exc:  # a wrong key or an unmigrated schema: what would have stopped the start
            log.error("event=secret_key_refused reason=%r action=stop", str(exc))
            self.fatal = exc
            for callback in self._on_fatal:
                callback()
            return
        if box is not None:
            self._box = box
            log.info("event=secret_key_verified after=db_unavailable_at_start")

    async def close(self) -> None:
        if self._key_check is not None and self._key_check_stop is not None:
            self._key_check_stop.set()
            await asyncio.gather(self._key_check, return_exceptions=True)
        if self._hosts is not None:
            self._hosts.close()
        if self._deliverer is not None:
            await self._deliverer.close()
        if self._replays is not None:
            await asyncio.to_thread(self._replays.close)
        if self._producer is not None:
            await asyncio.to_thread(self._producer.close, 10.0)
        if self._store is not None:
            await self._store.close()


RESOURCES = web.AppKey("resources", Resources)


def resources_of(request: web.Request) -> Resources:
    return request.app[RESOURCES]


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: start everything, and close whatever did start, in reverse order."""
    resources = app[RESOURCES]
    try:
        await resources.start()
        yield
    finally:
        await resources.close()
