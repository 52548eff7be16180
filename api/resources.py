"""What the API holds while it runs: the database pool, the secret box, the delivery session used by
Test (the dispatcher's own), the Kafka producer used by Redeliver, Recover and Replay, and the running replays.

Created on startup inside the running loop and closed on cleanup. The holder itself exists before the
app starts, because aiohttp freezes the application's mapping once it is running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from api.quotas import SlidingWindow
from api.store import Store
from api.url_check import HostChecker
from dispatcher.delivery import Deliverer
from hookfleet import secret_keys, secretbox
from hookfleet.kafka import KafkaProducer
from hookfleet.replay import ReplayRunner
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
    create_rate: SlidingWindow = field(init=False)
    test_rate: SlidingWindow = field(init=False)

    def __post_init__(self) -> None:
        self.create_rate = SlidingWindow(self.settings.creates_per_minute)
        self.test_rate = SlidingWindow(self.settings.tests_per_minute)

    @property
    def store(self) -> Store:
        assert self._store is not None, "resources used before startup"
        return self._store

    @property
    def box(self) -> secretbox.SecretBox:
        assert self._box is not None, "resources used before startup"
        return self._box

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
        await asyncio.to_thread(secret_keys.verify_against_database, self.database_url, box)
        self._box = box
        self._deliverer = Deliverer(self.settings)
        self._producer = KafkaProducer(self.settings.kafka_bootstrap_servers)
        self._hosts = HostChecker(self.settings.allow_networks, self.settings.dns_workers)
        self._replays = ReplayRunner(
            self.database_url, self._producer, self.settings.topics, self.settings.replay_rate_per_s
        )

    async def close(self) -> None:
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
