"""`hookfleet dispatcher`: wires settings, the subscription index, Kafka, HTTP and metrics together."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import threading

import uvloop

from delivery.deliverer import Deliverer
from dispatcher.subscription_store import SubscriptionSync
from dispatcher.subscriptions import SubscriptionIndex
from dispatcher.worker import Dispatcher
from hookfleet import logs, metrics, secret_keys, tracing
from hookfleet.db import describe
from hookfleet.kafka import (
    BrokerState,
    Consumer,
    KafkaUnavailable,
    monitored_consumer,
    new_producer,
    partition_count,
    wait_for_broker,
)
from hookfleet.settings import DispatcherSettings
from hookfleet.shutdown import Shutdown
from hookfleet.stream.changelog import read_partition
from hookfleet.stream.membership import consumer_instance_id, exit_if_fenced
from hookfleet.stream.watchdog import JoinWatchdog, replace_if_stuck
from schemas.catalog import EventType
from schemas.models import Outcome

log = logging.getLogger(__name__)

HOP_LINGER_MS = 1
"""The fan-out's producer waits 1 ms for company: its tasks are on every event's way to its receiver, so
each millisecond of linger is one of publish-to-receive latency, while at 0 every task is a request of its
own at low load and the broker answers a fetch per task (bench/RESULTS.md: 5 ms cost the hop 7 ms at p50)."""
RECORD_LINGER_MS = 25
"""What is written after a delivery (attempt records, retry tasks, dead letters) waits up to 25 ms for
company: no receiver waits for it, and fewer, fuller produce requests are most of the broker's saving."""

JOIN_CHECK_S = 1.0


async def serve(
    settings: DispatcherSettings,
    stop: asyncio.Event,
    stopping: threading.Event | None = None,
    shutdown: Shutdown | None = None,
) -> bool:
    """Run one dispatcher until `stop` is set; True when a consumer's thread was left stuck in `close`.
    `shutdown`, when given, is what the stuck-join watchdog asks to stop (with its exit code); its requests
    must set `stop`.
    Consumption starts only once the subscription index is loaded: an event consumed against an empty
    index would be acknowledged with no delivery.

    The health server starts first: while the broker, the database or the index is not there yet the
    dispatcher is alive (its heartbeat beats) and unready, and starts by itself when they answer."""
    heartbeat = metrics.Heartbeat()
    running: list[Dispatcher] = []

    brokers: list[BrokerState] = []

    def ready() -> tuple[bool, str]:
        """Loop running, broker reachable, every stage's consumer joined the group. Owning partitions is not
        asked (hookfleet_partitions_assigned shows it): a pod beyond the partition count, such as the surge
        pod of a rollout at maxReplicaCount, owns none and must still turn ready or the rollout deadlocks."""
        if not running:
            return False, "waiting for the broker, the secret key check and the subscription index"
        if not all(broker.up for broker in brokers):
            return False, f"kafka broker at {settings.kafka_bootstrap_servers} unreachable"
        if not running[0].joined:
            return False, "waiting to join the consumer group"
        return True, f"joined; partitions={len(running[0].assigned)}"

    health = metrics.HealthServer(settings.metrics_port, ready, heartbeat).start() if settings.metrics_port else None
    metrics.IN_FLIGHT_LIMIT.set(settings.max_in_flight)
    try:
        if shutdown is None:
            shutdown = Shutdown()
            shutdown.on_request(stop.set)
        await _serve(settings, stop, stopping or threading.Event(), heartbeat, running, brokers, shutdown)
    finally:
        if health is not None:
            health.stop()
    return bool(running) and running[0].consumer_stuck


async def _partitions_of(
    bootstrap: str, topic: str, stop: asyncio.Event, heartbeat: metrics.Heartbeat, retry_s: float = 5.0
) -> int | None:
    """The partition count of `topic` (attempt records are batched per partition), waiting while the topic
    does not exist yet; None when stopped meanwhile."""
    logged = False
    while not stop.is_set():
        heartbeat.beat()
        try:
            return await asyncio.to_thread(partition_count, bootstrap, topic)
        except KafkaUnavailable as exc:
            if not logged:
                log.warning(
                    "event=topic_unavailable_at_start topic=%s reason=%r action=wait_and_retry", topic, str(exc)
                )
                logged = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retry_s)
    return None


async def _serve(
    settings: DispatcherSettings,
    stop: asyncio.Event,
    stopping: threading.Event,
    heartbeat: metrics.Heartbeat,
    running: list[Dispatcher],
    brokers: list[BrokerState],
    shutdown: Shutdown,
) -> None:
    if not await asyncio.to_thread(wait_for_broker, settings.kafka_bootstrap_servers, stopping, heartbeat.beat):
        return
    box = await secret_keys.wait_for_verified_box(settings, stop)
    if box is None:
        return
    database_url = settings.database_url.get_secret_value()
    index = SubscriptionIndex()
    sync = SubscriptionSync(database_url, box, index, settings.subscriptions_reload_s)
    sync_stop = asyncio.Event()
    sync_task = asyncio.create_task(sync.run(sync_stop))
    log.info("event=waiting_for_subscriptions database=%s", describe(database_url))
    loaded = asyncio.create_task(sync.loaded.wait())
    stopped = asyncio.create_task(stop.wait())
    while not (loaded.done() or stopped.done()):
        heartbeat.beat()
        await asyncio.wait([loaded, stopped], return_when=asyncio.FIRST_COMPLETED, timeout=1.0)
    loaded.cancel()
    stopped.cancel()
    if stop.is_set():
        sync_stop.set()
        await sync_task
        return

    attempt_partitions = await _partitions_of(
        settings.kafka_bootstrap_servers, settings.topics.attempts, stop, heartbeat
    )
    if attempt_partitions is None:
        sync_stop.set()
        await sync_task
        return
    producer = new_producer(settings.kafka_bootstrap_servers, **{"linger.ms": HOP_LINGER_MS})
    record_producer = new_producer(settings.kafka_bootstrap_servers, **{"linger.ms": RECORD_LINGER_MS})
    consumers: dict[str, Consumer] = {}
    for stage in settings.stages:
        consumers[stage], broker = monitored_consumer(
            settings.kafka_bootstrap_servers,
            settings.group_id,
            metrics.stats_callback(settings.group_id),
            instance_id=consumer_instance_id(settings.instance_id, "dispatcher", stage),
            **{
                "client.id": f"hookfleet-{stage}",
                "statistics.interval.ms": 5000,
                "queued.max.messages.kbytes": 16384,  # bounds prefetch memory per dispatcher
                "enable.auto.commit": False,  # committed by the stage itself, with finished offsets as metadata
            },
        )
        brokers.append(broker)
    deliverer = Deliverer(settings)
    metrics.init_label_values([t.value for t in EventType], [o.value for o in Outcome])
    bootstrap = settings.kafka_bootstrap_servers
    dispatcher = Dispatcher(
        settings,
        consumers,
        producer,
        deliverer,
        index,
        heartbeat,
        read_changelog=lambda topic, partition, last: read_partition(bootstrap, topic, partition, last),
        attempt_partitions=attempt_partitions,
        record_producer=record_producer,
    )
    running.append(dispatcher)
    metrics.PARTITIONS_ASSIGNED.set_function(lambda: len(dispatcher.assigned))
    watch = asyncio.create_task(_watch_consumers(brokers, stop, shutdown))
    try:
        await dispatcher.run(stop)
    finally:
        watch.cancel()
        await deliverer.close()
        loop = asyncio.get_running_loop()
        unflushed = await loop.run_in_executor(None, producer.close)
        unflushed += await loop.run_in_executor(None, record_producer.close)
        sync_stop.set()
        await sync_task
        log.info("event=dispatcher_exit unflushed=%d", unflushed)


async def _watch_consumers(brokers: list[BrokerState], stop: asyncio.Event, shutdown: Shutdown) -> None:
    """The stuck-join watchdog for every stage's consumer (hookfleet/stream/watchdog.py), and the exit of a
    fenced one (hookfleet/stream/membership.py)."""
    watchdog = JoinWatchdog()
    while not stop.is_set():
        if exit_if_fenced("dispatcher", brokers, shutdown):
            return
        if replace_if_stuck(watchdog, "dispatcher", brokers, shutdown):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), JOIN_CHECK_S)


def run(args: argparse.Namespace) -> int:
    settings = DispatcherSettings()
    logs.setup(settings.log_level, role="dispatcher")
    if getattr(args, "processes", "1") != "1":  # one process per core: dispatcher/processes.py
        from dispatcher.processes import process_count, supervise

        return supervise(process_count(args.processes), settings.metrics_port, settings.instance_id)
    tracing.setup("dispatcher", send_to_receivers=settings.trace_receivers)

    shutdown = Shutdown()

    async def main() -> bool:
        stop = asyncio.Event()
        shutdown.install(asyncio.get_running_loop())
        shutdown.on_request(stop.set)
        return await serve(settings, stop, shutdown.requested, shutdown)

    # uvloop: its C event loop and TLS transport take 9 % less CPU per delivery (bench/RESULTS.md).
    if uvloop.run(main()):
        # Everything is committed and flushed; only a consumer thread hangs in librdkafka, and the
        # interpreter would wait for it at exit forever.
        logging.shutdown()
        os._exit(shutdown.exit_code)
    return shutdown.exit_code
