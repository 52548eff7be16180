"""The dispatcher's consume -> fan-out -> deliver -> route loop (DESIGN.md §3).

Concurrency model: one asyncio loop owns all state. The blocking confluent-kafka calls that can invoke
rebalance callbacks (`consume`, `close`) run on one dedicated thread, so the loop stays free to drain
revoked partitions while the callback waits for it. Each consumed message becomes one task; a partition's
offset is stored only up to its low-water mark, i.e. only past messages whose every outcome is durable
(2xx attempt record acknowledged, or the retry / dead-letter task acknowledged by the broker).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from dispatcher.delivery import Deliverer, DeliveryResult, attempt_record
from dispatcher.gates import EndpointGates
from dispatcher.offsets import LowWaterMark
from dispatcher.routing import FailureRoute, route_failure, route_park
from dispatcher.subscriptions import Endpoint, SubscriptionIndex
from hookfleet import metrics
from hookfleet.kafka import Consumer, KafkaDeliveryError, KafkaProducer, Message, TopicPartition
from hookfleet.settings import DispatcherSettings
from schemas.ids import new_attempt_id
from schemas.models import AttemptRecord, DeliveryTask, Event, NextStep, Outcome

log = logging.getLogger(__name__)

TP = tuple[str, int]


GC_THRESHOLDS = (50_000, 20, 20)
"""Collector thresholds while dispatching (CPython's defaults are 700, 10, 10): see `settle_heap`."""


def settle_heap() -> None:
    """Tune the cyclic garbage collector for a loop with thousands of deliveries in flight.

    Each in-flight delivery holds a few hundred objects (task, coroutine frames, futures, aiohttp request
    and response) that live for milliseconds, long enough to survive young collections; with the default
    thresholds they keep triggering full collections that scan all of them, each stopping the loop for
    about 100 ms. Everything built before consuming starts (modules, settings, the subscription index,
    the HTTP session) lives as long as the process, so it is frozen out of every pass, and the young
    generation is collected every 50,000 allocations instead of 700. Measured (bench/RESULTS.md, 20,000
    deliveries): CPU per delivery 480 -> 290 us; 20 full collections taking 3.7 s -> 1 taking 0.02 s.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def validation_reason(exc: ValidationError) -> str:
    """`field: message` of the first error: what the invalid topic's `reason` header says."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "value"
    return f"{where}: {first['msg']}"[:200]


@dataclass
class _PartitionState:
    marks: LowWaterMark
    generation: int


class Dispatcher:
    def __init__(
        self,
        settings: DispatcherSettings,
        consumer: Consumer,
        producer: KafkaProducer,
        deliverer: Deliverer,
        index: SubscriptionIndex,
    ) -> None:
        self._settings = settings
        self._topics = settings.topics
        self._consumer = consumer
        self._producer = producer
        self._deliverer = deliverer
        self._index = index
        self._gates = EndpointGates(settings.per_endpoint_concurrency, settings.per_endpoint_queue)
        self._partitions: dict[TP, _PartitionState] = {}
        self._to_store: dict[TP, int] = {}  # committable offsets not yet handed to the consumer
        self._generation = 0
        self._tasks: dict[asyncio.Task[None], TP] = {}
        self._in_flight = 0
        self._paused = False
        self._kafka_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dispatcher-consumer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self.assigned: set[TP] = set()

    # ------------------------------------------------------------------------------------ lifecycle

    def subscribe(self) -> None:
        self._consumer.subscribe(
            [self._topics.events, self._topics.deliveries], on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain within the configured bound and close."""
        self._loop = asyncio.get_running_loop()
        settle_heap()
        self.subscribe()
        batch = 500
        while not stop.is_set():
            messages: list[Message] = await self._loop.run_in_executor(self._kafka_thread, self._poll, batch)
            for message in messages:
                self._accept(message)
            self._apply_backpressure()
        await self._shutdown()

    def _poll(self, batch: int) -> list[Message]:
        """On the consumer thread: store the offsets finished since the last poll, then consume.

        `consume(n, timeout)` waits until it has n messages or the timeout passes, so a batch with a
        timeout would hold the first message up to 100 ms whenever fewer than n arrive. Instead: take
        what is already fetched; when nothing is, wait for one message and take what came with it.
        """
        self._store_offsets(list(self._to_store))
        messages: list[Message] = self._consumer.consume(batch, 0)
        if not messages:
            messages = self._consumer.consume(1, 0.1)
            if messages:
                messages += self._consumer.consume(batch - 1, 0)
        return messages

    def _store_offsets(self, keys: list[TP]) -> None:
        """On the consumer thread. Offsets are stored here in one call per poll rather than from the loop
        per finished message: `store_offsets` contends with the consumer's own locks, and called from
        the loop it held every delivery behind it (16 % of the loop's time at 2,000 deliveries/s)."""
        offsets = []
        for key in keys:
            committable = self._to_store.pop(key, None)  # atomic: the loop thread may add meanwhile
            if committable is not None:
                offsets.append(TopicPartition(key[0], key[1], committable))
        if not offsets:
            return
        try:
            self._consumer.store_offsets(offsets=offsets)
        except Exception:  # a partition lost meanwhile: the next owner redelivers
            log.debug("event=store_offsets_failed partitions=%d", len(offsets), exc_info=True)

    async def _shutdown(self) -> None:
        pending = list(self._tasks)
        log.info("event=dispatcher_draining in_flight=%d bound_s=%.1f", self._in_flight, self._settings.drain_timeout_s)
        if pending:
            _, still = await asyncio.wait(pending, timeout=self._settings.drain_timeout_s)
            for task in still:
                task.cancel()
            if still:
                log.warning("event=dispatcher_drain_incomplete abandoned=%d (redelivered after restart)", len(still))
                await asyncio.gather(*still, return_exceptions=True)
        assert self._loop is not None
        # close() commits the stored offsets and may run the revoke callback: off the loop thread.
        await self._loop.run_in_executor(self._kafka_thread, self._store_offsets, list(self._to_store))
        await self._loop.run_in_executor(self._kafka_thread, self._consumer.close)
        self._kafka_thread.shutdown(wait=True)
        log.info("event=dispatcher_stopped")

    # ------------------------------------------------------------------------------------ rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Called on the consumer thread; plain dict updates are safe because the loop thread is blocked
        # awaiting this very consume() call.
        self._generation += 1
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._partitions[key] = _PartitionState(LowWaterMark(), self._generation)
            self.assigned.add(key)
        if self._paused and partitions:
            consumer.pause(partitions)
        log.info("event=partitions_assigned count=%d total=%d", len(partitions), len(self.assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        if self._loop is not None and self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._drain(keys), self._loop)
            try:
                future.result(timeout=self._settings.drain_timeout_s + 5)
            except Exception:  # a failed drain only means redelivery
                log.warning("event=revoke_drain_failed", exc_info=True)
        self._store_offsets(list(keys))  # what the drain finished, before the final commit
        for key in keys:
            self._partitions.pop(key, None)
            self.assigned.discard(key)
        try:
            consumer.commit(asynchronous=False)
        except Exception:  # nothing stored yet is not an error
            log.debug("event=revoke_commit_skipped", exc_info=True)
        log.info("event=partitions_revoked count=%d total=%d", len(partitions), len(self.assigned))

    async def _drain(self, keys: set[TP]) -> None:
        """Let the revoked partitions' work finish (so their offsets are stored) within the drain bound."""
        pending = [task for task, key in self._tasks.items() if key in keys]
        if pending:
            _, still = await asyncio.wait(pending, timeout=self._settings.drain_timeout_s)
            if still:
                log.warning("event=revoke_abandoned tasks=%d (their offsets stay uncommitted)", len(still))
        for key in keys:
            state = self._partitions.get(key)
            if state is not None:
                state.generation = -1  # late completions of abandoned work must not store offsets

    # ------------------------------------------------------------------------------------ per message

    def _accept(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            log.warning("event=consume_error code=%s reason=%s", error.name(), error.str())
            return
        key: TP = (message.topic() or "", message.partition() or 0)
        state = self._partitions.get(key)
        if state is None:  # a message of a partition revoked in the same batch
            return
        offset = message.offset() or 0
        state.marks.begin(offset)
        if key[0] == self._topics.events:
            metrics.EVENTS_CONSUMED.labels("events").inc()
            work = self._handle_event(message)
        else:
            metrics.EVENTS_CONSUMED.labels("deliveries").inc()
            work = self._handle_task(message)
        task = asyncio.ensure_future(self._settle(work, key, state.generation, offset))
        self._tasks[task] = key
        task.add_done_callback(self._tasks.pop)

    async def _settle(self, work: Awaitable[None], key: TP, generation: int, offset: int) -> None:
        await work
        state = self._partitions.get(key)
        if state is None or state.generation != generation:
            return
        committable = state.marks.finish(offset)
        if committable is not None:
            self._to_store[key] = committable  # stored by the consumer thread before its next poll

    async def _handle_event(self, message: Message) -> None:
        raw = message.value() or b""
        try:
            event = Event.model_validate_json(raw)
        except ValidationError as exc:
            await self._to_invalid(message, validation_reason(exc))
            return
        endpoints = self._index.match(event.account_id, event.type)
        if not endpoints:
            return
        body = event.body()
        if len(endpoints) == 1:  # the common case: no gather, no extra task per delivery
            await self._deliver(endpoints[0], event, 1, body, parked=False)
            return
        await asyncio.gather(*(self._deliver(endpoint, event, 1, body, parked=False) for endpoint in endpoints))

    async def _handle_task(self, message: Message) -> None:
        try:
            task = DeliveryTask.model_validate_json(message.value() or b"")
        except ValidationError as exc:
            await self._to_invalid(message, validation_reason(exc))
            return
        endpoint = self._index.get(task.webhook_id)
        reason = kind = None
        if endpoint is None:
            reason, kind = "webhook deleted", "deleted"
        elif not endpoint.active:
            reason, kind = "webhook disabled", "disabled"
        elif task.event.type not in endpoint.events:
            reason, kind = f"webhook no longer subscribed to {task.event.type.value}", "unsubscribed"
        if reason is not None:
            metrics.DROPPED.labels(kind).inc()
            log.info(
                "event=task_dropped webhook_id=%s event_id=%s attempt=%d reason=%r",
                task.webhook_id,
                task.event.id,
                task.attempt,
                reason,
            )
            record = self._record(task.event, task.webhook_id, task.attempt, None, "dropped", reason)
            await self._send_durably(self._topics.attempts, record.model_dump_json().encode(), task.webhook_id)
            return
        assert endpoint is not None
        await self._deliver(endpoint, task.event, task.attempt, task.event.body(), parked=task.parked)

    # ------------------------------------------------------------------------------------ delivery

    async def _deliver(self, endpoint: Endpoint, event: Event, attempt: int, body: bytes, parked: bool) -> None:
        entered = self._gates.try_enter(endpoint.id)
        if entered is None:
            await self._park(endpoint, event, attempt)
            return
        self._track(+1)
        try:
            try:
                # An open gate needs no timer. A waiting delivery is parked only once its endpoint has
                # finished nothing for park_after_s: a stalled endpoint, not one still working off a burst.
                while not entered.done():
                    try:
                        await asyncio.wait_for(asyncio.shield(entered), self._settings.park_after_s)
                    except TimeoutError:
                        if not entered.done() and self._gates.stalled(endpoint.id, self._settings.park_after_s):
                            entered.cancel()  # gives up its place in the queue
                            await self._park(endpoint, event, attempt)
                            return
            except asyncio.CancelledError:
                if not entered.done():
                    entered.cancel()  # the shielded waiter would otherwise keep its place in the queue
                elif not entered.cancelled():
                    self._gates.leave(endpoint.id)
                raise
            try:
                result = await self._deliverer.deliver(endpoint, event, attempt, body)
            finally:
                self._gates.leave(endpoint.id)
            await self._route(endpoint, event, attempt, result)
        finally:
            self._track(-1)

    async def _route(self, endpoint: Endpoint, event: Event, attempt: int, result: DeliveryResult) -> None:
        metrics.DELIVERIES.labels(event.type.value, result.outcome.value).inc()
        metrics.DELIVERY_DURATION.labels(result.outcome.value).observe(result.response_ms / 1000)
        if result.ok:
            metrics.EVENT_TO_DELIVERED.observe(max(0.0, (result.attempted_at - event.created_at).total_seconds()))
            record = self._record(event, endpoint.id, attempt, result, "done")
            await self._send_durably(self._topics.attempts, record.model_dump_json().encode(), endpoint.id)
            return
        now_ms = int(time.time() * 1000)
        route: FailureRoute = route_failure(attempt, now_ms, self._topics, self._settings.retry_delays_s)
        task = DeliveryTask(
            event=event,
            webhook_id=endpoint.id,
            attempt=route.next_attempt,
            due_at=route.due_at_ms,
            last_error=result.error,
        )
        step: NextStep = "dead" if route.stage == "dead" else "retry"
        record = self._record(event, endpoint.id, attempt, result, step)
        if route.stage == "dead":
            metrics.DEAD_LETTERS.labels(event.type.value).inc()
            log.warning(
                "event=dead_lettered webhook_id=%s event_id=%s last_error=%r", endpoint.id, event.id, result.error
            )
        else:
            metrics.RETRIES_SCHEDULED.labels(route.stage).inc()
        await asyncio.gather(
            self._send_durably(route.topic, task.model_dump_json().encode(), endpoint.id),
            self._send_durably(self._topics.attempts, record.model_dump_json().encode(), endpoint.id),
        )

    async def _park(self, endpoint: Endpoint, event: Event, attempt: int) -> None:
        route = route_park(attempt, int(time.time() * 1000), self._topics, self._settings.retry_delays_s)
        task = DeliveryTask(event=event, webhook_id=endpoint.id, attempt=attempt, due_at=route.due_at_ms, parked=True)
        metrics.RETRIES_SCHEDULED.labels("parked").inc()
        log.debug("event=delivery_parked webhook_id=%s event_id=%s attempt=%d", endpoint.id, event.id, attempt)
        await self._send_durably(route.topic, task.model_dump_json().encode(), endpoint.id)

    def _record(
        self,
        event: Event,
        webhook_id: str,
        attempt: int,
        result: DeliveryResult | None,
        step: NextStep,
        error: str | None = None,
    ) -> AttemptRecord:
        if result is not None:
            return attempt_record(event, webhook_id, attempt, result, step)
        return AttemptRecord(  # a dropped task: nothing was tried
            attempt_id=new_attempt_id(),
            event_id=event.id,
            event_type=event.type,
            account_id=event.account_id,
            webhook_id=webhook_id,
            attempt=attempt,
            outcome=Outcome.DROPPED,
            error=error,
            attempted_at=datetime.now(UTC),
            next_step=step,
            event=event,
        )

    async def _to_invalid(self, message: Message, reason: str) -> None:
        metrics.INVALID_EVENTS.labels("validation").inc()
        log.warning(
            "event=invalid_message topic=%s partition=%s offset=%s reason=%r",
            message.topic(),
            message.partition(),
            message.offset(),
            reason,
        )
        headers: list[tuple[str, str | bytes | None]] = [
            ("reason", reason.encode()),
            ("source_topic", (message.topic() or "").encode()),
            ("source_partition", str(message.partition()).encode()),
            ("source_offset", str(message.offset()).encode()),
        ]
        await self._send_durably(self._topics.invalid, message.value() or b"", message.key(), headers)

    async def _send_durably(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """Produce until the broker acknowledges. The offset of this work is not stored before that, so
        giving up would lose the outcome; waiting only delays the partition's commit."""
        delay = 0.5
        while True:
            try:
                await self._producer.send(topic, value, key=key, headers=headers)
                return
            except KafkaDeliveryError as exc:
                log.error("event=produce_failed topic=%s error=%s retry_in_s=%.1f", topic, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # ------------------------------------------------------------------------------------ backpressure

    def _track(self, delta: int) -> None:
        self._in_flight += delta
        metrics.IN_FLIGHT.set(self._in_flight)

    def _apply_backpressure(self) -> None:
        limit = self._settings.max_in_flight
        if not self._paused and self._in_flight >= limit:
            self._set_paused(True)
        elif self._paused and self._in_flight <= limit // 2:
            self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        partitions = [TopicPartition(t, p) for t, p in self.assigned]
        self._paused = paused
        if partitions:
            (self._consumer.pause if paused else self._consumer.resume)(partitions)
        metrics.PARTITIONS_PAUSED.set(len(partitions) if paused else 0)
        log.info(
            "event=%s in_flight=%d partitions=%d", "paused" if paused else "resumed", self._in_flight, len(partitions)
        )

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def stats(self) -> dict[str, Any]:
        return {"in_flight": self._in_flight, "assigned": len(self.assigned), "paused": self._paused}
