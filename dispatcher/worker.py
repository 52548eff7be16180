"""The dispatcher: a fan-out stage and a delivery stage over one consumer (docs/architecture.md#dispatcher).

- Fan-out consumes `webhooks.events` (key = account) and writes one `DeliveryTask` per subscribed active
  webhook to `webhooks.deliveries` (key = webhook id); an event's offset is finished when the broker has
  acknowledged all of its tasks.
- Delivery consumes `webhooks.deliveries`. A webhook's tasks all land on one partition, so the dispatcher
  that owns the partition owns the webhook: one `Lane` per webhook (lanes.py) decides concurrency, rate,
  order, parking and backpressure locally and exactly.
`HOOKFLEET_STAGES` runs either stage alone, so each can be scaled on its own.

Concurrency model: one asyncio loop owns all state. The blocking confluent-kafka calls that can invoke
rebalance callbacks (`consume`, `commit`, `close`) run on one dedicated thread, so the loop stays free to
drain revoked partitions while the callback waits for it.

Offsets: per partition, the commit is the oldest unfinished offset, and its metadata names the offsets
above it that are already finished (hookfleet/stream/offset_codec.py); a new owner skips those. "Finished" means the
outcome is durable: the 2xx attempt record, or the retry / park / dead-letter task, acknowledged by the
broker. So a crash re-sends at most the requests open at the crash plus what finished since the last
commit (`commit_interval_s`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from delivery.deliverer import Deliverer, DeliveryResult, record_json
from delivery.endpoint import Endpoint
from delivery.wire_json import attempt_json, event_bytes, task_json
from dispatcher.fanout import FanoutJob, apply_filters, recipients
from dispatcher.gone import GoneWebhooks
from dispatcher.idempotency import KeyStore, Verdict, digest
from dispatcher.lanes import Admission, Lane, LanePolicy, TokenBucket
from dispatcher.recent_answers import RecentAnswers
from dispatcher.routing import PARKS_HEADER, Decision, decide, parks_of, route_park
from dispatcher.stage_consumer import StageConsumer
from dispatcher.subscriptions import SubscriptionIndex
from hookfleet import metrics, tracing
from hookfleet.kafka import (
    Consumer,
    Headers,
    KafkaError,
    KafkaProducer,
    Message,
    PartitionKey,
    message_headers,
)
from hookfleet.settings import DispatcherSettings
from hookfleet.stream.diversion import Invalid, divert, handler_error, read_as
from hookfleet.stream.ledger import Claim
from hookfleet.stream.record_batch import RecordBatcher
from hookfleet.stream.sender import Outgoing, send_until_acked
from schemas.idempotency import FirstSight, InvalidIdempotencyKey, changelog_key, key_from_headers
from schemas.ids import new_attempt_id
from schemas.models import DeliveryTask, Event, Outcome

log = logging.getLogger(__name__)

TP = PartitionKey

ChangelogReader = Callable[[str, int, int], Iterable[tuple[bytes | None, bytes | None]]]
"""(topic, partition, last) -> the records of its last `last` offsets, up to its end
(hookfleet/stream/changelog.py `read_partition`)."""


def _no_changelog(_topic: str, _partition: int, _last: int) -> Iterable[tuple[bytes | None, bytes | None]]:
    return ()


GC_THRESHOLDS = (50_000, 20, 20)
"""Collector thresholds while dispatching (CPython's defaults are 700, 10, 10): see `settle_heap`."""

_GONE = ("webhook gone: its endpoint answered 410 Gone", "gone")
"""The drop of a task for a webhook that answered 410 here (its log row's error, its metric reason)."""

SWEEP_INTERVAL_S = 0.25
"""How often stalled webhooks' queues are parked and held-back partitions re-checked."""
GATED_POLL_S = 1.0
"""While the global bound gates a stage, it still polls (one message) this often: rebalance callbacks are
served only by polls, and a consumer that does not poll for `max.poll.interval.ms` leaves its group."""
POLL_BATCH = 500
"""Messages taken per poll at most; fewer near HOOKFLEET_MAX_IN_FLIGHT (`_poll_size`)."""


def settle_heap() -> None:
    """Tune the cyclic garbage collector for a loop with thousands of deliveries in flight.

    Each in-flight delivery holds a few hundred objects (task, coroutine frames, futures, HTTP request
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


@dataclass(slots=True)
class _Job:
    """One consumed delivery task on its way through its webhook's lane."""

    task: DeliveryTask
    body: bytes  # the event's bytes as consumed: signed, sent, and copied into every record of this task
    claim: Claim  # its offset, finished when the task's outcome is durable
    parks: int = 0  # how often this task was parked before (routing.PARKS_HEADER)
    trace: Any = field(default_factory=tracing.current)  # the task's trace context (None when tracing is off)


class Dispatcher:
    def __init__(
        self,
        settings: DispatcherSettings,
        consumers: Mapping[str, Consumer],
        producer: KafkaProducer,
        deliverer: Deliverer,
        index: SubscriptionIndex,
        heartbeat: metrics.Heartbeat | None = None,
        read_changelog: ChangelogReader = _no_changelog,
        attempt_partitions: int = 1,
        record_producer: KafkaProducer | None = None,
    ) -> None:
        """`consumers`: one per stage this process runs ("fanout", "delivery"), all in one group;
        `heartbeat` is beaten on every turn of every stage's loop (what `/livez` reads); `read_changelog`
        restores an assigned events partition's idempotency keys; `attempt_partitions` is the attempts
        topic's partition count (attempt records are batched per partition: hookfleet/stream/record_batch.py);
        `producer` writes the fan-out's tasks (on every event's path: no linger), `record_producer` everything
        written after a delivery (attempt records, retry tasks, dead letters, diversions: batched by a linger),
        the same producer when not given."""
        self._settings = settings
        self._topics = settings.topics
        topic_of = {"fanout": self._topics.events, "delivery": self._topics.deliveries}
        self._read_changelog = read_changelog
        self._keys: dict[TP, KeyStore] = {}  # per owned events partition (dispatcher/idempotency.py)
        self._stages = {
            stage: StageConsumer(
                stage,
                consumer,
                topic_of[stage],
                self._drain,
                settings.drain_timeout_s,
                on_assigned=self._restore_keys if stage == "fanout" else None,
            )
            for stage, consumer in consumers.items()
        }
        self._delivery = self._stages.get("delivery")
        self._producer = producer
        self._records = record_producer or producer
        self._attempts = RecordBatcher(self._records, self._topics.attempts, attempt_partitions)
        self._deliverer = deliverer
        self._index = index
        self._heartbeat = heartbeat or metrics.Heartbeat()
        self._lanes: dict[str, Lane[_Job]] = {}
        self._tasks: dict[asyncio.Task[None], TP] = {}  # open requests, parks, drops, invalid-topic writes
        self._waiting_in_lane: dict[asyncio.Task[Any], TP] = {}  # ordered webhooks' retries, waiting their turn
        self._held = 0  # delivery tasks accepted and not yet finished (queued, open or being routed)
        self._open_requests = 0  # started and not yet durable: what a crash now would send twice
        self._fanout_pending = 0  # tasks produced by fan-out and not yet acknowledged
        self._widest_fanout = 1  # most tasks one event made in the last poll that made any (`_poll_size`)
        self._widest_in_poll = 0
        self._holds: dict[TP, set[str]] = {}  # partition -> webhooks whose full queue holds it back
        self._gone = GoneWebhooks()  # webhooks that answered 410 here: nothing more is sent to them (gone.py)
        self._answered = RecentAnswers()  # webhooks heard from lately: a new lane for them is not probed
        self._stopping = False
        self._next_sweep = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        metrics.IN_FLIGHT.set_function(lambda: self._open_requests)  # read at scrape time, not set per request
        metrics.IDEMPOTENCY_KEYS.set_function(lambda: sum(len(store) for store in list(self._keys.values())))

    @property
    def consumer_stuck(self) -> bool:
        """A stage's consumer did not close within its bound (stage_consumer.CLOSE_BOUND_S)."""
        return any(stage.close_stuck for stage in self._stages.values())

    @property
    def assigned(self) -> set[TP]:
        return {key for stage in self._stages.values() for key in stage.partitions}

    @property
    def joined(self) -> bool:
        """Every stage's consumer has had an assignment from the group (possibly empty)."""
        return all(stage.joined for stage in self._stages.values())

    # ------------------------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain within the configured bound and close."""
        self._loop = asyncio.get_running_loop()
        settle_heap()
        for stage in self._stages.values():
            stage.subscribe(self._loop)
        await asyncio.gather(*(self._consume(stage, stop) for stage in self._stages.values()))
        await self._shutdown()

    async def _consume(self, stage: StageConsumer, stop: asyncio.Event) -> None:
        next_commit = 0.0
        consumed = metrics.EVENTS_CONSUMED.labels("events" if stage.stage == "fanout" else "deliveries")
        while not stop.is_set():
            if stage.paused:
                await self._gated(stage, stop)
            messages = await stage.poll(self._poll_size(stage))
            self._heartbeat.beat()
            consumed.inc(len(messages))
            for message in messages:
                with tracing.consumed(message, stage.stage):  # hookfleet/tracing.py: a no-op when tracing is off
                    self._accept(stage, message)
            if stage is not self._delivery and self._widest_in_poll:
                self._widest_fanout, self._widest_in_poll = self._widest_in_poll, 0
            now = time.monotonic()
            if stage is self._delivery and now >= self._next_sweep:
                self._sweep(now)
                self._next_sweep = now + SWEEP_INTERVAL_S
            self._apply_global_bound(stage)
            if now >= next_commit:
                stage.commit_soon()
                next_commit = now + self._settings.commit_interval_s

    async def _shutdown(self) -> None:
        self._stopping = True  # no lane starts another request
        log.info(
            "event=dispatcher_draining open_requests=%d held=%d bound_s=%.1f",
            self._open_requests,
            self._held,
            self._settings.drain_timeout_s,
        )
        assert self._loop is not None
        self._give_up_waits(None)
        await self._wait_for(list(self._tasks), "dispatcher_drain_incomplete", cancel=True)
        # Fan-out tasks the broker has not acknowledged yet: wait for them, so their events count as done.
        await self._loop.run_in_executor(None, self._producer.flush, self._settings.drain_timeout_s)
        if self._records is not self._producer:
            await self._loop.run_in_executor(None, self._records.flush, self._settings.drain_timeout_s)
        await asyncio.sleep(0.05)  # let the last acknowledgement callbacks reach the loop
        for stage in self._stages.values():
            await stage.close()
        log.info("event=dispatcher_stopped")

    async def _wait_for(self, pending: list[asyncio.Task[None]], event: str, cancel: bool) -> None:
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=self._settings.drain_timeout_s)
        if still:
            log.warning(
                "event=%s abandoned=%d (their offsets stay uncommitted: redone by the next owner)", event, len(still)
            )
            if cancel:
                for task in still:
                    task.cancel()
                await asyncio.gather(*still, return_exceptions=True)

    async def _drain(self, keys: set[TP]) -> None:
        """Revoked partitions: their webhooks' queued work is left to the next owner, open requests finish
        within the drain bound (the stage then prepares each partition's final commit)."""
        for webhook_id, lane in list(self._lanes.items()):
            if lane.partition in keys:
                self._held -= len(lane.queue)
                lane.queue.clear()
                self._release(webhook_id, lane)
                if lane.idle():
                    del self._lanes[webhook_id]
        self._give_up_waits(keys)
        self._gone.forget(keys)
        pending = [task for task, key in self._tasks.items() if key in keys]
        await self._wait_for(pending, "revoke_abandoned", cancel=False)
        for key in keys:
            self._holds.pop(key, None)
            self._keys.pop(key, None)  # the next owner restores them from the changelog

    def _give_up_waits(self, keys: set[TP] | None) -> None:
        """Ordered webhooks waiting minutes for their next retry are not drained: they stop waiting now
        (their offset stays unfinished, so the next owner delivers that event again, before the later ones)."""
        for task, key in list(self._waiting_in_lane.items()):
            if keys is None or key in keys:
                task.cancel()

    # ------------------------------------------------------------------------------------ per message

    def _accept(self, stage: StageConsumer, message: Message) -> None:
        error = message.error()
        if error is not None:
            log.warning("event=consume_error stage=%s code=%s reason=%s", stage.stage, error.name(), error.str())
            return
        key: TP = (message.topic() or "", message.partition() or 0)
        claim = stage.ledger.claim(key, message.offset() or 0)
        if claim is None:  # revoked in the same batch, read again, or finished by the previous owner
            return
        try:
            if stage.stage == "fanout":
                self._fan_out(message, claim)
            else:
                self._take(message, claim)
        except Exception as exc:  # the runtime's poison rule: diverted with its reason, never a crash
            self._spawn(self._finish_after(self._to_invalid(message, handler_error(exc)), claim), key)

    def _finish(self, claim: Claim) -> None:
        """The outcome of this message is durable: its offset may be committed (a claim of an ownership that
        has ended counts for nothing)."""
        stage = self._delivery if claim.partition[0] == self._topics.deliveries else self._stages.get("fanout")
        if stage is not None:
            stage.ledger.finish(claim)

    def _spawn(self, work: Coroutine[Any, Any, None], key: TP) -> None:
        task = asyncio.ensure_future(work)
        self._tasks[task] = key
        task.add_done_callback(self._tasks.pop)

    async def _finish_after(self, work: Awaitable[None], claim: Claim) -> None:
        await work
        self._finish(claim)

    # ------------------------------------------------------------------------------------ fan-out stage

    def _fan_out(self, message: Message, claim: Claim) -> None:
        key = claim.partition
        event = read_as(Event, message.value())
        if isinstance(event, Invalid):
            self._spawn(self._finish_after(self._to_invalid(message, event), claim), key)
            return
        now_ms = int(time.time() * 1000)
        first_sight: Outgoing | None = None
        if message.headers() is not None:  # no headers, no key: the common case costs one call
            judged = self._judge_key(message, event, claim, now_ms)
            if isinstance(judged, Invalid):
                self._spawn(self._finish_after(self._to_invalid(message, judged), claim), key)
                return
            if judged is Verdict.DUPLICATE:
                self._finish(claim)
                return
            first_sight = judged if isinstance(judged, Outgoing) else None
        filtered = apply_filters(event, recipients(event, self._index.match(event.account_id, event.type)))
        if filtered.filtered_out:
            metrics.FILTERED_OUT.labels(event.type.value).inc(filtered.filtered_out)
        if filtered.failed:
            metrics.FILTER_ERRORS.labels(event.type.value).inc(filtered.failed)
        endpoints = filtered.endpoints
        if not endpoints:
            if first_sight is None:
                self._finish(claim)
            else:  # no webhook now, but the key is spent: a later publish of it is still a duplicate
                self._spawn(self._finish_after(send_until_acked(self._producer, first_sight), claim), key)
            return
        assert self._loop is not None
        body = event.body()
        loop = self._loop

        def to_loop(done: FanoutJob) -> None:
            loop.call_soon_threadsafe(self._fanned_out, done)

        outputs = len(endpoints) + (first_sight is not None)
        job = FanoutJob(key, claim.epoch, claim.offset, outputs, to_loop, trace=tracing.current())
        self._fanout_pending += outputs
        self._widest_in_poll = max(self._widest_in_poll, outputs)
        if first_sight is not None:
            # Acknowledged before the event's offset is finished, as its tasks are: a crash before both
            # leaves the event unfinished, so it is read again (and judged READ_AGAIN or NEW, never DUPLICATE).
            job.first_sight = first_sight

            def sight_acked(error: KafkaError | None, _: Message) -> None:
                job.acked_first_sight(error is None)

            self._producer.produce(
                first_sight.topic,
                first_sight.value,
                key=first_sight.key,
                on_delivery=sight_acked,
                partition=first_sight.partition,
            )
        for endpoint in endpoints:
            value = task_json(body, endpoint.id, 1, now_ms)
            webhook_id = endpoint.id

            def acked(error: KafkaError | None, _: Message, webhook_id: str = webhook_id, value: bytes = value) -> None:
                job.acked(webhook_id, value, error is None)

            self._producer.produce(self._topics.deliveries, value, key=webhook_id, on_delivery=acked)
        metrics.FANNED_OUT.inc(len(endpoints))

    def _judge_key(
        self, message: Message, event: Event, claim: Claim, now_ms: int
    ) -> Verdict | Outgoing | Invalid | None:
        """An event's idempotency key: None without one; DUPLICATE (drop it); READ_AGAIN (the first publish
        read again: fan out, its key is recorded already); or, for a NEW key, recorded now (so a second
        publish right behind it is a duplicate), the changelog record to write with its tasks."""
        try:
            idempotency_key = key_from_headers(message_headers(message))
        except InvalidIdempotencyKey as exc:
            return Invalid("invalid_value", str(exc))
        if idempotency_key is None:
            return None
        store = self._keys.get(claim.partition)
        if store is None:  # assigned without a restore (a stage built without the hook): start empty
            store = self._keys[claim.partition] = self._new_key_store()
        record_key = changelog_key(event.account_id, idempotency_key)
        hashed = digest(record_key)
        expired, bound = store.evicted_expired, store.evicted_bound
        verdict = store.judge(hashed, claim.offset, now_ms)
        if verdict is Verdict.DUPLICATE:
            metrics.IDEMPOTENT_DUPLICATES.inc()
            log.info(
                "event=idempotent_duplicate account_id=%s event_id=%s partition=%d offset=%d",
                event.account_id,
                event.id,
                claim.partition[1],
                claim.offset,
            )
        elif verdict is Verdict.NEW:
            store.record(hashed, claim.offset, now_ms)
        if store.evicted_expired != expired:
            metrics.IDEMPOTENCY_EVICTED.labels("expired").inc(store.evicted_expired - expired)
        if store.evicted_bound != bound:
            metrics.IDEMPOTENCY_EVICTED.labels("bound").inc(store.evicted_bound - bound)
        if verdict is not Verdict.NEW:
            return verdict
        sight = FirstSight(event.account_id, idempotency_key, event.id, claim.offset, now_ms)
        return Outgoing(self._topics.idempotency, sight.to_json(), record_key, partition=claim.partition[1])

    def _new_key_store(self) -> KeyStore:
        return KeyStore(self._settings.idempotency_window_s * 1000, self._settings.idempotency_max_keys)

    def _restore_keys(self, partitions: list[TP]) -> None:
        """Newly assigned events partitions: their idempotency keys, read from the changelog before any of
        their events is consumed (this runs on the fan-out stage's thread, inside the assign callback)."""
        for partition in partitions:
            started = time.monotonic()
            store = self._new_key_store()
            now_ms = int(time.time() * 1000)
            records = unreadable = 0
            # Each key is written once, so the last max_keys records are the newest keys: all a full store keeps.
            last = self._settings.idempotency_max_keys
            for raw_key, value in self._read_changelog(self._topics.idempotency, partition[1], last):
                records += 1
                try:
                    sight = FirstSight.from_json(value or b"")
                except (ValueError, KeyError, TypeError):
                    unreadable += 1  # not ours: a record written by hand; it protects no key
                    continue
                store.restore(digest(raw_key or b""), sight.events_offset, sight.first_seen_ms, now_ms)
            self._keys[partition] = store
            log.info(
                "event=idempotency_keys_restored partition=%d records=%d keys=%d unreadable=%d seconds=%.2f",
                partition[1],
                records,
                len(store),
                unreadable,
                time.monotonic() - started,
            )

    def _fanned_out(self, job: FanoutJob) -> None:
        """Every task of one event is acknowledged, or failed: finish the event, or produce those again."""
        failed, job.failed = job.failed, []
        sight = job.first_sight if job.first_sight_failed else None
        job.first_sight_failed = False
        again_count = len(failed) + (sight is not None)
        self._fanout_pending -= job.total - again_count
        fanout = self._stages.get("fanout")
        if fanout is not None and fanout.paused:  # the room it waits for may be free now
            self._apply_global_bound(fanout)
        if not again_count:
            self._finish(Claim(job.partition, job.offset, job.generation))
            return

        async def again() -> None:
            tracing.adopt(job.trace)  # produced under the fan-out's span, as the first try was
            resend = [send_until_acked(self._producer, Outgoing(self._topics.deliveries, v, w)) for w, v in failed]
            if sight is not None:
                resend.append(send_until_acked(self._producer, sight))
            await asyncio.gather(*resend)
            self._fanout_pending -= again_count

        claim = Claim(job.partition, job.offset, job.generation)
        self._spawn(self._finish_after(again(), claim), job.partition)

    # ------------------------------------------------------------------------------------ delivery stage

    def _take(self, message: Message, claim: Claim) -> None:
        key = claim.partition
        raw = message.value() or b""
        task = read_as(DeliveryTask, raw)
        if isinstance(task, Invalid):
            self._spawn(self._finish_after(self._to_invalid(message, task), claim), key)
            return
        body = event_bytes(raw, task)
        endpoint = self._index.get(task.webhook_id)
        if endpoint is not None and task.event.account_id != endpoint.account_id:
            # Never signed for a webhook of another account (whoever can write to the deliveries topic could
            # otherwise have any event signed with any webhook's secret), nor logged in that webhook's log.
            mismatch = f"event.account_id: {task.event.account_id} is not the account of webhook {task.webhook_id}"
            invalid = self._to_invalid(message, Invalid("account_mismatch", mismatch))
            self._spawn(self._finish_after(invalid, claim), key)
            return
        reason = self._drop_reason(endpoint, task)
        if reason is not None:
            self._spawn(self._finish_after(self._drop(task, body, *reason), claim), key)
            return
        assert endpoint is not None
        job = _Job(task, body, claim, parks_of(message_headers(message)) if task.parked else 0)
        lane = self._lane(endpoint, key)
        self._held += 1
        now = time.monotonic()
        admission = lane.admit(now, job)
        if admission is Admission.PARK:
            self._parking(endpoint.id, lane, now)
            self._spawn(self._park(job), key)
            return
        if admission is Admission.HOLD_BACK and not lane.held_back:
            self._hold(endpoint.id, lane)
        if not self._stopping:
            self._start(endpoint.id, lane, lane.ready(now))

    def _lane(self, endpoint: Endpoint, key: TP) -> Lane[_Job]:
        policy = LanePolicy(
            concurrency=self._settings.per_endpoint_concurrency,
            queue_limit=self._settings.per_endpoint_queue,
            park_after_s=self._settings.park_after_s,
            slow_after_s=self._settings.slow_after_s,
            rate_limit_per_s=endpoint.rate_limit_per_s,
            fifo=endpoint.ordering == "fifo",
        )
        lane = self._lanes.get(endpoint.id)
        if lane is None:
            now = time.monotonic()
            probing = not self._answered.knows(endpoint.id, now)
            lane = self._lanes[endpoint.id] = Lane(policy, key, now, probing=probing)
        elif lane.policy != policy:  # the webhook's settings changed: keep its queue and its pace
            lane.policy = policy
            rate = policy.rate_limit_per_s
            lane.bucket = TokenBucket(rate, time.monotonic()) if rate else None
        return lane

    def _drop_reason(self, endpoint: Endpoint | None, task: DeliveryTask) -> tuple[str, str] | None:
        """Retries use the webhook's current configuration: disabled, deleted or unsubscribed means drop; so
        does a 410 Gone this dispatcher got from it (gone.py), before the recorder's switch-off comes back."""
        if endpoint is None:
            return "webhook deleted", "deleted"
        if self._gone.holds(task.webhook_id, endpoint):
            return _GONE
        if not endpoint.active:
            return "webhook disabled", "disabled"
        if task.event.type not in endpoint.events:
            return f"webhook no longer subscribed to {task.event.type.value}", "unsubscribed"
        return None

    def _start(self, webhook_id: str, lane: Lane[_Job], jobs: list[_Job]) -> None:
        """Start the deliveries the lane let go (`Lane.ready`); when its rate limit stopped it, ask it again
        when a token is due. An idle lane is dropped by the sweep."""
        for job in jobs:
            self._open_requests += 1
            self._spawn(self._run(webhook_id, lane, job), job.claim.partition)
        if lane.wake_in_s > 0:
            assert self._loop is not None
            self._loop.call_later(lane.wake_in_s, self._wake, webhook_id, lane)
        if lane.held_back and lane.below_release_mark():
            self._release(webhook_id, lane)

    def _wake(self, webhook_id: str, lane: Lane[_Job]) -> None:
        lane.waking = False
        if not self._stopping:
            self._start(webhook_id, lane, lane.ready(time.monotonic()))

    async def _run(self, webhook_id: str, lane: Lane[_Job], job: _Job) -> None:
        tracing.adopt(job.trace)
        task = job.task
        answered = False
        elapsed_s = 0.0
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                ready = lane.finished(time.monotonic(), answered, elapsed_s, take_next=not self._stopping)
                self._start(webhook_id, lane, ready)

        try:
            endpoint = self._index.get(webhook_id)
            reason = self._drop_reason(endpoint, task)
            if reason is not None:
                release()
                await self._drop(task, job.body, *reason)
            elif lane.policy.fifo:
                assert endpoint is not None
                answered = await self._deliver_in_order(endpoint, task, job.body, job.claim.partition)
                release()
            else:
                assert endpoint is not None
                result = await self._deliverer.deliver(endpoint, task.event, task.attempt, job.body)
                answered, elapsed_s = result.outcome is not Outcome.TIMEOUT, result.response_ms / 1000
                decision = self._decide(task.attempt, result)
                if decision.step == "disabled":
                    self._stop_sending(endpoint, job.claim.partition)
                release()  # the next request may start while this outcome is made durable
                await self._record(decision, endpoint, task.event, job.body, task.attempt, result, task.replay_id)
        except asyncio.CancelledError:
            self._held -= 1  # given up (shutdown, revoke): its offset stays unfinished for the next owner
            raise
        finally:
            release()
            self._open_requests -= 1
        self._let_go()
        self._finish(job.claim)

    async def _deliver_in_order(self, endpoint: Endpoint, task: DeliveryTask, body: bytes, key: TP) -> bool:
        """An ordered webhook retries in its lane, so its later events wait behind this one.

        Same schedule and per-status policy as every delivery (10 s / 60 s / 5 min, or a longer
        Retry-After, then dead letter; 410 switches the webhook off); each attempt is logged as it happens.
        Its offset stays unfinished meanwhile, so after a crash the event is delivered again before the
        later ones (restarting its schedule at the attempt consumed)."""
        event, attempt = task.event, task.attempt
        while True:
            result = await self._deliverer.deliver(endpoint, event, attempt, body)
            decision = self._decide(attempt, result)
            if decision.step == "disabled":
                self._stop_sending(endpoint, key)
            await self._record(decision, endpoint, event, body, attempt, result, task.replay_id, queue_retry=False)
            if decision.step != "retry":
                return result.outcome is not Outcome.TIMEOUT
            route = decision.route
            assert route is not None
            current_task = asyncio.current_task()
            assert current_task is not None
            self._waiting_in_lane[current_task] = key
            try:
                await asyncio.sleep(max(0.0, route.due_at_ms / 1000 - time.time()))
            finally:
                del self._waiting_in_lane[current_task]
            current = self._index.get(endpoint.id)
            reason = self._drop_reason(current, task)
            if reason is not None:
                await self._drop(task, body, *reason, attempt=route.next_attempt)
                return True
            assert current is not None
            endpoint, attempt = current, route.next_attempt

    def _decide(self, attempt: int, result: DeliveryResult) -> Decision:
        """The outcome rule (routing.decide) with this dispatcher's schedule and Retry-After cap."""
        return decide(
            attempt,
            result.ok,
            int(time.time() * 1000),
            self._topics,
            self._settings.retry_delays_s,
            status_code=result.status_code,
            retry_after_s=result.retry_after_s,
            cap_s=self._settings.retry_after_cap_s,
        )

    def _count_attempt(self, event: Event, result: DeliveryResult) -> None:
        attempts, duration = metrics.attempt_series(event.type.value, result.outcome.value)
        attempts.inc()
        duration.observe(result.response_ms / 1000)

    async def _record(
        self,
        decision: Decision,
        endpoint: Endpoint,
        event: Event,
        body: bytes,
        attempt: int,
        result: DeliveryResult,
        replay_id: str | None = None,
        queue_retry: bool = True,
    ) -> None:
        """Make an attempt's outcome durable: its log row and, for a retry or a dead letter, its task in the
        delay topic or the dead letters (a replayed delivery keeps its replay id through its retries and in
        every log row). An ordered webhook's retry waits in its lane instead (`queue_retry` False)."""
        self._count_attempt(event, result)
        record = record_json(body, event, endpoint.id, attempt, result, decision.step, replay_id=replay_id)
        route = decision.route
        if decision.step == "done":
            metrics.EVENT_TO_DELIVERED.observe(max(0.0, (result.attempted_at - event.created_at).total_seconds()))
        elif decision.step == "disabled":
            # 410 Gone: nothing more is queued; the recorder switches the webhook off from this record.
            log.warning("event=webhook_gone webhook_id=%s event_id=%s status=410", endpoint.id, event.id)
        elif decision.step == "dead":
            metrics.DEAD_LETTERS.labels(event.type.value).inc()
            log.warning(
                "event=dead_lettered webhook_id=%s event_id=%s last_error=%r", endpoint.id, event.id, result.error
            )
        else:
            assert route is not None
            metrics.RETRIES_SCHEDULED.labels(route.stage).inc()
        if route is None or decision.step == "disabled" or (decision.step == "retry" and not queue_retry):
            await self._attempts.add(record, endpoint.id)
            return
        task = task_json(
            body, endpoint.id, route.next_attempt, route.due_at_ms, last_error=result.error, replay_id=replay_id
        )
        await asyncio.gather(
            self._send_durably(route.topic, task, endpoint.id),
            self._attempts.add(record, endpoint.id),
        )

    def _stop_sending(self, endpoint: Endpoint, key: TP) -> None:
        """A 410 came back: nothing more goes to this webhook from here. Its queued tasks are dropped now,
        and every later one as it comes (`_drop_reason`), without waiting for the recorder's switch-off."""
        if self._gone.mark(endpoint, key):
            log.info("event=webhook_gone_stop webhook_id=%s", endpoint.id)
        lane = self._lanes.get(endpoint.id)
        if lane is None:
            return
        while lane.queue:
            job = lane.queue.popleft()
            self._spawn(self._drop_queued(job, *_GONE), job.claim.partition)
        if lane.held_back:
            self._release(endpoint.id, lane)

    async def _drop_queued(self, job: _Job, reason: str, kind: str) -> None:
        """A queued task that will not be sent: its log row, then its offset."""
        await self._drop(job.task, job.body, reason, kind)
        self._let_go()
        self._finish(job.claim)

    async def _park(self, job: _Job) -> None:
        """Defer a slow or hanging webhook's delivery through a delay topic (not an attempt): 10 s, and longer
        each time the same task is parked again (`route_park`)."""
        task = job.task
        now_ms = int(time.time() * 1000)
        route = route_park(task.attempt, now_ms, self._topics, self._settings.retry_delays_s, parks=job.parks)
        parked = task_json(
            job.body,
            task.webhook_id,
            task.attempt,
            route.due_at_ms,
            parked=True,
            last_error=task.last_error,
            replay_id=task.replay_id,
        )
        metrics.RETRIES_SCHEDULED.labels("parked").inc()
        log.debug(
            "event=delivery_parked webhook_id=%s event_id=%s attempt=%d parks=%d",
            task.webhook_id,
            task.event.id,
            task.attempt,
            job.parks + 1,
        )
        await self._send_durably(route.topic, parked, task.webhook_id, [(PARKS_HEADER, str(job.parks + 1).encode())])
        self._let_go()
        self._finish(job.claim)

    async def _drop(self, task: DeliveryTask, body: bytes, reason: str, kind: str, attempt: int | None = None) -> None:
        """Log that a task was not tried (`attempt`: the one it would have made, when not the task's own)."""
        attempt = task.attempt if attempt is None else attempt
        metrics.DROPPED.labels(kind).inc()
        log.info(
            "event=task_dropped webhook_id=%s event_id=%s attempt=%d reason=%r",
            task.webhook_id,
            task.event.id,
            attempt,
            reason,
        )
        record = attempt_json(  # nothing was tried
            body,
            task.event,
            task.webhook_id,
            attempt,
            attempt_id=new_attempt_id(),
            outcome=Outcome.DROPPED,
            status_code=None,
            error=reason,
            response_ms=None,
            excerpt="",
            attempted_at=datetime.now(UTC),
            next_step="dropped",
            replay_id=task.replay_id,
        )
        await self._attempts.add(record, task.webhook_id)

    async def _to_invalid(self, message: Message, invalid: Invalid) -> None:
        source: TP = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        outgoing = divert(invalid, message.value(), message.key(), source, offset, "dispatcher", self._topics.invalid)
        await send_until_acked(self._records, outgoing)

    async def _send_durably(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None,
        headers: Headers | None = None,
    ) -> None:
        """Produce until the broker acknowledges. The offset of this work is not finished before that, so
        giving up would lose the outcome; waiting only delays the partition's commit."""
        await send_until_acked(self._records, Outgoing(topic, value, key, headers))

    # ------------------------------------------------------------------------------------ flow control

    def _sweep(self, now: float) -> None:
        """Park the queues of webhooks that stopped answering; drop the lanes of webhooks with nothing queued
        or open (a lane lives on for at most one sweep after its last request)."""
        for webhook_id, lane in list(self._lanes.items()):
            if lane.idle():
                del self._lanes[webhook_id]
                if lane.answers:  # a lane made for it again within PROBE_AFTER_S is not probed
                    self._answered.heard(webhook_id, lane.last_progress)
                continue
            if lane.policy.fifo or not lane.queue or not lane.stalled(now):
                continue
            self._parking(webhook_id, lane, now)
            while lane.queue:
                job = lane.queue.popleft()
                self._spawn(self._park(job), job.claim.partition)
            if lane.held_back:
                self._release(webhook_id, lane)

    def _parking(self, webhook_id: str, lane: Lane[_Job], now: float) -> None:
        """Log a park spell once, when it starts (it ends when the lane next admits a task)."""
        if lane.parking:
            return
        lane.parking = True
        log.info(
            "event=webhook_parking webhook_id=%s reason=%s answer_ms=%s queued=%d",
            webhook_id,
            "stalled" if lane.stalled(now) else "slow",
            None if lane.latency_s is None else round(lane.latency_s * 1000),
            len(lane.queue),
        )

    def _hold(self, webhook_id: str, lane: Lane[_Job]) -> None:
        """Backpressure from one webhook that keeps answering but has a full queue: pause its partition."""
        lane.held_back = True
        holders = self._holds.setdefault(lane.partition, set())
        if not holders and self._delivery is not None and not self._delivery.stalled:
            self._delivery.pause([lane.partition])
            log.info("event=partition_held_back topic=%s partition=%d webhook_id=%s", *lane.partition, webhook_id)
        holders.add(webhook_id)
        self._count_paused()

    def _release(self, webhook_id: str, lane: Lane[_Job]) -> None:
        lane.held_back = False
        holders = self._holds.get(lane.partition)
        if holders is None:
            return
        holders.discard(webhook_id)
        if not holders:
            del self._holds[lane.partition]
            delivery = self._delivery
            if delivery is not None and not delivery.stalled and lane.partition in delivery.partitions:
                delivery.resume([lane.partition])
                log.info("event=partition_released topic=%s partition=%d", *lane.partition)
        self._count_paused()

    def _poll_size(self, stage: StageConsumer) -> int:
        """The room left under HOOKFLEET_MAX_IN_FLIGHT, at least 1: the bound is checked between polls, so a
        full poll of 500 would carry the dispatcher past it (measured: 556 fan-out tasks pending against a
        bound of 20, 4 webhooks per event). A delivery task holds one; an event makes as many fan-out tasks as
        it has webhooks, so the fan-out's room is divided by the most one event made in its last poll. What
        is left past the bound: one event's webhooks, when its fan-out is wider than those before it."""
        limit = self._settings.max_in_flight
        if stage is self._delivery:
            return max(1, min(POLL_BATCH, limit - self._held))
        return max(1, min(POLL_BATCH, (limit - self._fanout_pending) // self._widest_fanout))

    def _let_go(self) -> None:
        """A delivery task is finished: below half the bound, a gated delivery stage takes messages again now,
        not at its next look (the lanes ran dry between pauses when the bound was checked only after a poll)."""
        self._held -= 1
        if self._delivery is not None and self._delivery.paused:
            self._apply_global_bound(self._delivery)

    async def _gated(self, stage: StageConsumer, stop: asyncio.Event) -> None:
        """Wait while the global bound holds the stage's intake: until it is down to half the bound, or
        GATED_POLL_S, after which one poll (of one message) serves the group's rebalance callbacks."""
        waits = [asyncio.ensure_future(stage.unblocked.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waits, timeout=GATED_POLL_S, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        if stage.paused and not stage.stalled and not stop.is_set():
            # Gated a whole interval: a stall, not a busy fleet. Pausing now frees the prefetch for its duration
            # (what a refetch at the resume costs is small against a stall).
            stage.stalled = True
            stage.pause([k for k in stage.partitions if k not in self._holds])
            log.info("event=stalled stage=%s held=%d fanout_pending=%d", stage.stage, self._held, self._fanout_pending)

    def _apply_global_bound(self, stage: StageConsumer) -> None:
        """Memory bounds: delivery tasks held in lanes; fan-out tasks the broker has not acknowledged. Over the
        bound a stage stops taking messages (`_gated`) rather than pausing its partitions: librdkafka purges a
        paused partition's prefetched messages and fetches them again at the resume, which behind a backlog
        made every pause cost the broker a refetch (an overload at 2,400/s delivered ~400/s)."""
        limit = self._settings.max_in_flight
        load = self._held if stage is self._delivery else self._fanout_pending
        if not stage.paused and load >= limit:
            stage.paused = True
            stage.unblocked.clear()
        elif stage.paused and load <= limit // 2:
            stage.paused = False
            stage.unblocked.set()
            if stage.stalled:
                stage.stalled = False
                stage.resume([k for k in stage.partitions if k not in self._holds])
        else:
            return
        self._count_paused()
        log.info(
            "event=%s stage=%s held=%d fanout_pending=%d",
            "paused" if stage.paused else "resumed",
            stage.stage,
            self._held,
            self._fanout_pending,
        )

    def _count_paused(self) -> None:
        paused = sum(len(stage.partitions) for stage in self._stages.values() if stage.paused)
        held = 0 if self._delivery is None or self._delivery.paused else len(self._holds)
        metrics.PARTITIONS_PAUSED.set(paused + held)
