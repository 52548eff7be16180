"""The retry scheduler's Kafka side: every consumer and producer call of the role is in this module.

The clients are made by `hookfleet.kafka`'s factories (see `main.new_scheduler`) and handed in; the
scheduler owns them from then on and closes them when it stops.

One synchronous loop. It never sleeps: it polls with a timeout bounded by the next hold's due time, so a
held partition resumes on time while the others keep flowing. Timing rules live in `gate.DueGate`, offset
safety in `ledger.HandOffLedger`; this module applies their answers to librdkafka:

- `pause` purges the partition's prefetched messages and `resume` continues after the last message handed
  to us, so a hold is always pause + seek back to the not-yet-due task (and seek again before resuming).
- A task due later than its topic's delay after it was written (a long `Retry-After`) is relayed: at its
  topic's delay it is written again, to the delay topic for what is left of its wait
  (`delay_index_for_wait`), or, when less than the shortest delay is left, held in memory until due
  (`gate.ShortWaits`). So every delay topic stays in due order and no task waits behind a later one.
- Produce acknowledgements arrive on the producer's poll thread; they are queued and applied here, so the
  gate, the ledger and every consumer call stay on this one thread.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from hookfleet.invalid import invalid_message
from hookfleet.kafka import (
    BrokerState,
    Consumer,
    Headers,
    KafkaError,
    KafkaException,
    KafkaProducer,
    Message,
    PartitionKey,
    TopicPartition,
    message_headers,
    topic_partition,
    written_ms,
)
from hookfleet.metrics import INVALID_EVENTS, PARTITIONS_PAUSED, RETRY_LATENESS, Heartbeat
from hookfleet.settings import RetrySchedulerSettings
from hookfleet.shutdown import Shutdown
from retry_scheduler.gate import DueGate, Hold, ShortWaits, Step, hold_plan, to_nudge
from retry_scheduler.ledger import HandOffLedger
from retry_scheduler.tasks import Invalid, read_task
from schemas.retry_schedule import STAGES, Stage, delay_index_for_wait, delay_of, stage_of

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5
"""Longest poll when nothing is due: bounds how long a stop request waits for the loop."""
BUSY_WAIT_S = 0.05
"""Longest poll while acknowledgements are outstanding, so offsets are stored promptly."""
BATCH = 500
"""Messages taken per loop turn after the first (consume(0) returns only what is already queued)."""
REVOKE_FLUSH_S = 5.0
"""How long a revoke waits for outstanding hand-offs of the partitions it takes away."""
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
SUMMARY_EVERY_S = 30.0
LEADERS_REFRESH_S = 60.0
"""Partition leaders move rarely; a stale map costs at most one late resume (see `_nudge`)."""
NUDGE_TIMEOUT_S = 1.0
SHORT_WAITS_MAX = 10_000
SHORT_WAITS_MAX_BYTES = 64 * 1024 * 1024
"""Bounds of the relayed waits' last seconds held in memory (`gate.ShortWaits`). Only relayed
`Retry-After` waits end there, so they are rarely reached; past them a task goes to the shortest delay
topic instead (late by at most that delay, never early)."""
CONSUMER_OPTIONS: dict[str, Any] = {
    # librdkafka keeps one Fetch in flight per broker, and a partition resumed meanwhile waits for it. A
    # Fetch with nothing to return long-polls for `fetch.wait.max.ms` (default 500 ms, half the accuracy
    # target), so keep that short...
    "fetch.wait.max.ms": 50,
    # ...and do not prefetch past what is queued: by default, right after a resumed partition's data
    # arrives librdkafka asks for more from the log end, a long-poll that every later resume then waits
    # behind, while we are about to pause that partition again anyway. With these two, a partition is
    # fetched again only once its queued messages are consumed (measured: p99 lateness 340 ms -> 65 ms).
    "queued.min.messages": 1,
    "fetch.queue.backoff.ms": 5,
    "statistics.interval.ms": 5000,
}
"""The role's own consumer options, on top of `hookfleet.kafka.consumer_config`'s defaults."""


@dataclass(frozen=True, slots=True)
class HandOff:
    """A message on its way out of a delay topic: to deliveries when due, to invalid when malformed."""

    source: PartitionKey
    offset: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    due_at_ms: int | None
    """None for a malformed message (no lateness to measure)."""
    stage: Stage
    tries: int = 0
    """Produce attempts that failed so far (the producer retries internally first)."""


@dataclass(frozen=True, slots=True)
class _Ack:
    hand_off: HandOff
    error: KafkaError | None
    acked_at: float


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _position(message: Message) -> tuple[PartitionKey, int]:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:  # only on error events, filtered before
        raise ValueError("consumed message without a topic, partition or offset")
    return (topic, partition), offset


class _Summary:
    """Counts between two info summary lines (per-task lines are debug)."""

    def __init__(self) -> None:
        self.handed_off = 0
        self.relayed = 0
        self.invalid = 0
        self.lateness_max_ms = 0
        self.since = time.monotonic()


class RetryScheduler:
    def __init__(
        self,
        settings: RetrySchedulerSettings,
        shutdown: Shutdown,
        consumer: Consumer,
        producer: KafkaProducer,
        broker: BrokerState | None = None,
        *,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        """`consumer` must have been made with `CONSUMER_OPTIONS`; `broker`, when given, must be fed by its
        callbacks (its `up` feeds /readyz); `heartbeat` is beaten every turn of the loop (/livez)."""
        self._settings = settings
        self._heartbeat = heartbeat
        self._topics = settings.topics
        self._shutdown = shutdown
        self._gate = DueGate()
        self._short_waits: ShortWaits[HandOff] = ShortWaits(SHORT_WAITS_MAX, SHORT_WAITS_MAX_BYTES)
        self._ledger = HandOffLedger()
        self._acks: queue.SimpleQueue[_Ack] = queue.SimpleQueue()
        self._failed: deque[tuple[float, HandOff]] = deque()
        self._reapply: dict[PartitionKey, Hold] = {}
        self._leaders: dict[PartitionKey, int] = {}
        self._leaders_due = float("inf")
        self._summary = _Summary()
        # Read by the health server thread: plain values only, replaced never mutated.
        self._assigned_count = 0
        self._assignment_known = False
        self._broker = broker or BrokerState()
        self._consumer = consumer
        self._producer = producer

    # ------------------------------------------------------------------------------------------ lifecycle

    def ready(self) -> tuple[bool, str]:
        """For /readyz (and /healthz): assigned partitions known and the broker reachable."""
        if not self._broker.up:
            return False, f"kafka broker at {self._settings.kafka_bootstrap_servers} unreachable"
        if not self._assignment_known:
            return False, "waiting for a partition assignment"
        return True, f"assigned partitions: {self._assigned_count}"

    def run(self) -> None:
        self._consumer.subscribe(
            list(self._topics.retries), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info(
            "event=retry_scheduler_started group=%s topics=%s deliveries=%s",
            self._settings.group_id,
            ",".join(self._topics.retries),
            self._topics.deliveries,
        )
        try:
            while not self._shutdown.requested.is_set():
                self._tick()
        finally:
            self._stop()

    def _stop(self) -> None:
        """Stop taking work, wait (bounded) for acknowledgements, store and commit their offsets, close."""
        remaining = self._settle(self._settings.drain_timeout_s)
        self._commit()
        self._consumer.close()  # runs the revoke callback, which has nothing left to wait for
        self._producer.close(timeout_s=1.0)
        PARTITIONS_PAUSED.set(0)
        self._log_summary(force=True)
        log.info("event=retry_scheduler_stopped unacknowledged=%d", remaining)

    # ------------------------------------------------------------------------------------------- the loop

    def _tick(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.beat()  # liveness: every turn of this loop, whatever the broker does
        now_ms = _now_ms()
        self._resume_due(now_ms)
        self._release_short_waits(now_ms)
        self._retry_failed()
        idle = BUSY_WAIT_S if (self._unacknowledged() or self._failed) else IDLE_WAIT_S
        wait_s = self._gate.wait_s(now_ms, idle)
        short_due = self._short_waits.next_due_ms()
        if short_due is not None:
            wait_s = max(0.0, min(wait_s, (short_due - now_ms) / 1000))
        first = self._consumer.poll(wait_s)
        if self._reapply:
            self._reapply_holds()
        if time.monotonic() >= self._leaders_due:
            self._load_leaders()
        if first is not None:
            batch = [first, *self._consumer.consume(BATCH - 1, timeout=0)]
            now_ms = _now_ms()
            reheld: set[PartitionKey] = set()
            for message in batch:
                self._handle(message, now_ms, reheld)
        self._drain_acks()
        PARTITIONS_PAUSED.set(self._gate.held_count)
        self._log_summary()

    def _handle(self, message: Message, now_ms: int, reheld: set[PartitionKey]) -> None:
        error = message.error()
        if error is not None:
            log.warning("event=consume_error code=%s reason=%s", error.name(), error.str())
            return
        partition, offset = _position(message)
        hold = self._gate.hold_of(partition)
        if hold is not None:
            # Fetched before the pause took effect, or the partition was un-paused behind our back:
            # make sure it is paused at the held task (once per batch); this message is read again later.
            if partition not in reheld:
                reheld.add(partition)
                self._apply_hold(partition, hold, quiet=True)
            return
        if self._ledger.already_started(partition, offset):
            return
        task = read_task(message.value())
        if isinstance(task, Invalid):
            self._route_invalid(message, partition, offset, task)
            return
        stage = stage_of(self._topics, partition[0])
        due_ms, relay = hold_plan(
            task.due_at,
            written_ms(message),
            delay_of(stage, self._settings.retry_delays_s),
            self._settings.max_hold_slack_s,
            self._settings.retry_after_cap_s,
        )
        if due_ms != task.due_at and not relay:
            log.warning(
                "event=task_due_at_bounded topic=%s partition=%d offset=%d due_at=%d held_until=%d",
                partition[0],
                partition[1],
                offset,
                task.due_at,
                due_ms,
            )
        step = self._gate.on_message(partition, offset, due_ms, now_ms)
        if step is Step.HOLD:
            held = self._gate.hold_of(partition)
            assert held is not None
            self._apply_hold(partition, held)
            reheld.add(partition)
        elif step is Step.HAND_OFF and relay:
            self._relay(message, partition, offset, task.due_at, stage, now_ms)
        elif step is Step.HAND_OFF:
            self._start(
                HandOff(
                    partition,
                    offset,
                    self._topics.deliveries,
                    message.key(),
                    message.value(),
                    message_headers(message),
                    due_ms,
                    stage,
                )
            )

    def _relay(
        self, message: Message, partition: PartitionKey, offset: int, due_at_ms: int, stage: Stage, now_ms: int
    ) -> None:
        """Due later than this topic holds (a long Retry-After): written again, unchanged, to the delay topic
        for what is left of the wait, or held here until due when less than the shortest delay is left."""
        index = delay_index_for_wait((due_at_ms - now_ms) / 1000, self._settings.retry_delays_s)
        value = message.value()
        self._summary.relayed += 1
        if index is None:
            hand_off = HandOff(
                partition, offset, self._topics.deliveries, message.key(), value, message_headers(message), due_at_ms,
                stage,
            )  # fmt: skip
            self._ledger.start(partition, offset)
            if self._short_waits.add(partition, due_at_ms, len(value or b""), hand_off):
                log.debug("event=task_held topic=%s partition=%d offset=%d due_at=%d", *partition, offset, due_at_ms)
                return
            log.warning(
                "event=short_waits_full topic=%s partition=%d offset=%d held=%d held_bytes=%d",
                *partition,
                offset,
                len(self._short_waits),
                self._short_waits.bytes,
            )
            self._produce(replace(hand_off, topic=self._topics.retries[0], due_at_ms=None))
            return
        target = self._topics.retries[index]
        log.debug(
            "event=task_relayed topic=%s partition=%d offset=%d to=%s due_at=%d", *partition, offset, target, due_at_ms
        )
        headers = message_headers(message)
        self._start(HandOff(partition, offset, target, message.key(), value, headers, None, STAGES[index]))

    def _release_short_waits(self, now_ms: int) -> None:
        for hand_off in self._short_waits.pop_due(now_ms):
            if self._ledger.is_pending(hand_off.source, hand_off.offset):  # else revoked since: not ours
                self._produce(hand_off)

    def _unacknowledged(self) -> int:
        """Hand-offs produced and not yet acknowledged (the short waits are pending too, but not produced)."""
        return self._ledger.pending_count - len(self._short_waits)

    def _route_invalid(self, message: Message, partition: PartitionKey, offset: int, invalid: Invalid) -> None:
        log.warning(
            "event=invalid_task topic=%s partition=%d offset=%d kind=%s reason=%r",
            partition[0],
            partition[1],
            offset,
            invalid.kind,
            invalid.reason,
        )
        INVALID_EVENTS.labels(invalid.kind).inc()
        self._summary.invalid += 1
        value, key, headers = invalid_message(
            message.value(), message.key(), invalid.reason, partition, offset, "retry-scheduler"
        )
        self._start(
            HandOff(
                partition, offset, self._topics.invalid, key, value, headers, None, stage_of(self._topics, partition[0])
            )
        )

    # ---------------------------------------------------------------------------------------------- holds

    def _apply_hold(self, partition: PartitionKey, hold: Hold, quiet: bool = False) -> None:
        # Pause first, then seek: a seek before the pause can be overridden by the pause's own position.
        tp = topic_partition(partition, hold.offset)
        self._consumer.pause([tp])
        try:
            self._consumer.seek(tp)
        except KafkaException as exc:
            # Resuming re-seeks to the hold, so a failed seek here costs nothing but this line.
            log.warning("event=seek_failed topic=%s partition=%d offset=%d reason=%s", *partition, hold.offset, exc)
        if not quiet:
            log.debug(
                "event=partition_paused topic=%s partition=%d offset=%d until=%d in_ms=%d",
                *partition,
                hold.offset,
                hold.due_at_ms,
                hold.due_at_ms - _now_ms(),
            )

    def _reapply_holds(self) -> None:
        """After a rebalance: librdkafka un-pauses the partitions we keep, so pause them again."""
        reapply, self._reapply = self._reapply, {}
        for partition, hold in reapply.items():
            if self._gate.hold_of(partition) != hold:
                continue  # released or revoked since
            self._apply_hold(partition, hold, quiet=True)
            log.info("event=partition_pause_reapplied topic=%s partition=%d until=%d", *partition, hold.due_at_ms)

    def _resume_due(self, now_ms: int) -> None:
        released = self._gate.release_due(now_ms)
        for partition, hold in released:
            tp = topic_partition(partition, hold.offset)
            try:
                self._consumer.seek(tp)  # paused, so nothing was fetched past the hold; this makes it certain
            except KafkaException as exc:
                log.warning("event=seek_failed topic=%s partition=%d offset=%d reason=%s", *partition, hold.offset, exc)
            self._consumer.resume([tp])
            log.debug("event=partition_resumed topic=%s partition=%d offset=%d", *partition, hold.offset)
        for partition in to_nudge((p for p, _ in released), self._leaders):
            self._nudge(partition)

    def _nudge(self, partition: PartitionKey) -> None:
        """Wake the fetcher thread of the partition's leader, which `resume` alone does not (`gate` doc).

        A watermark query is a request to exactly that broker: queuing it and its reply each wake the thread,
        which then sees the resumed partition and fetches it. It takes one round trip (about a millisecond
        here), or up to `fetch.wait.max.ms` behind a long-poll Fetch in flight. The timeout stays well above
        that: librdkafka drops the connection when a request times out in flight. (Sent from another
        thread, the query was measured to wait for this loop's `poll` to return, so it is sent from here.)
        """
        started = time.monotonic()
        try:
            self._consumer.get_watermark_offsets(topic_partition(partition), timeout=NUDGE_TIMEOUT_S, cached=False)
        except KafkaException as exc:  # the request went out, which is all the wake needs
            log.debug("event=nudge_failed topic=%s partition=%d reason=%s", *partition, exc)
        log.debug(
            "event=fetcher_nudged topic=%s partition=%d took_ms=%.1f", *partition, (time.monotonic() - started) * 1000
        )

    def _load_leaders(self) -> None:
        self._leaders_due = time.monotonic() + LEADERS_REFRESH_S
        leaders: dict[PartitionKey, int] = {}
        try:
            for topic in self._topics.retries:
                metadata = self._consumer.list_topics(topic, timeout=5.0).topics[topic]
                leaders.update({(topic, p): meta.leader for p, meta in metadata.partitions.items()})
        except KafkaException as exc:
            log.warning("event=leaders_unknown reason=%s", exc)  # resumes nudge every broker meanwhile
            return
        self._leaders = leaders

    # ------------------------------------------------------------------------------------------ hand-offs

    def _start(self, hand_off: HandOff) -> None:
        self._ledger.start(hand_off.source, hand_off.offset)
        self._produce(hand_off)

    def _produce(self, hand_off: HandOff) -> None:
        acks = self._acks

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            # Producer poll thread: only queue it; the loop thread owns the ledger and the consumer.
            acks.put(_Ack(hand_off, error, time.time()))

        self._producer.produce(
            hand_off.topic, hand_off.value or b"", key=hand_off.key, headers=hand_off.headers, on_delivery=on_delivery
        )

    def _drain_acks(self) -> None:
        to_store: dict[PartitionKey, int] = {}
        while True:
            try:
                ack = self._acks.get_nowait()
            except queue.Empty:
                break
            hand_off = ack.hand_off
            if ack.error is not None:
                self._on_failed(hand_off, ack.error)
                continue
            stored = self._ledger.ack(hand_off.source, hand_off.offset)
            if stored is not None:
                to_store[hand_off.source] = stored
            if hand_off.due_at_ms is not None:
                self._on_handed_off(hand_off, ack.acked_at)
        if to_store:
            try:
                self._consumer.store_offsets(offsets=[topic_partition(p, o) for p, o in to_store.items()])
            except KafkaException as exc:  # revoked meanwhile: the next owner re-reads, at least once
                log.warning("event=store_offsets_failed reason=%s", exc)

    def _on_handed_off(self, hand_off: HandOff, acked_at: float) -> None:
        assert hand_off.due_at_ms is not None
        lateness_ms = int(acked_at * 1000) - hand_off.due_at_ms
        RETRY_LATENESS.labels(hand_off.stage).observe(lateness_ms / 1000)
        self._summary.handed_off += 1
        self._summary.lateness_max_ms = max(self._summary.lateness_max_ms, lateness_ms)
        log.debug(
            "event=retry_handed_off topic=%s partition=%d offset=%d stage=%s lateness_ms=%d",
            *hand_off.source,
            hand_off.offset,
            hand_off.stage,
            lateness_ms,
        )

    def _on_failed(self, hand_off: HandOff, error: KafkaError) -> None:
        """The producer gave up on a message: produce it again later; its offset stays unstored meanwhile."""
        if not self._ledger.is_pending(hand_off.source, hand_off.offset):
            return  # the partition was revoked: its next owner hands the task off
        tries = hand_off.tries + 1
        backoff = RETRY_BACKOFF_S[min(tries, len(RETRY_BACKOFF_S)) - 1]
        log.error(
            "event=hand_off_failed topic=%s partition=%d offset=%d to=%s code=%s reason=%s retry_in_s=%g",
            *hand_off.source,
            hand_off.offset,
            hand_off.topic,
            error.name(),
            error.str(),
            backoff,
        )
        self._failed.append((time.monotonic() + backoff, replace(hand_off, tries=tries)))

    def _retry_failed(self) -> None:
        now = time.monotonic()
        for _ in range(len(self._failed)):
            not_before, hand_off = self._failed.popleft()
            if not self._ledger.is_pending(hand_off.source, hand_off.offset):
                continue
            if not_before > now:
                self._failed.append((not_before, hand_off))
                continue
            self._produce(hand_off)

    def _settle(self, timeout_s: float) -> int:
        """Wait (bounded) for every outstanding hand-off's acknowledgement and store what it allows.

        Returns how many hand-offs are still unacknowledged. Outside the loop only (stop, revoke). Tasks held
        in memory are not waited for: their offsets stay unstored, so whoever reads the partition next holds
        them again.
        """
        deadline = time.monotonic() + timeout_s
        if self._unacknowledged():
            self._producer.flush(timeout_s)
        # The last delivery callbacks may still be on their way from the producer's poll thread.
        while True:
            self._drain_acks()
            if not self._unacknowledged() or time.monotonic() >= deadline:
                return self._unacknowledged()
            try:
                self._acks.put(self._acks.get(timeout=min(0.05, max(0.0, deadline - time.monotonic()))))
            except queue.Empty:
                continue

    def _commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError._NO_OFFSET:
                log.warning("event=commit_failed code=%s reason=%s", error.name(), error.str())

    # ------------------------------------------------------------------------------------------ rebalance

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Applied after this callback returns, once librdkafka has really assigned the partitions.
        self._reapply.update(self._gate.assign((tp.topic, tp.partition) for tp in partitions))
        self._leaders_due = 0.0  # new partitions: learn their leaders on the next tick
        self._assigned_count = len(self._gate.assigned)
        self._assignment_known = True
        self._broker.up = True
        log.info("event=partitions_assigned added=%d assigned=%d", len(partitions), self._assigned_count)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Store and commit what was handed off before the partitions go; forget their holds."""
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        self._settle(REVOKE_FLUSH_S)
        self._commit()
        self._forget(revoked)
        log.info("event=partitions_revoked removed=%d assigned=%d", len(revoked), self._assigned_count)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Lost (session expired): another member may own them already, so commit nothing."""
        lost = [(tp.topic, tp.partition) for tp in partitions]
        self._forget(lost)
        log.warning("event=partitions_lost removed=%d assigned=%d", len(lost), self._assigned_count)

    def _forget(self, partitions: list[PartitionKey]) -> None:
        gone = set(partitions)
        self._gate.revoke(partitions)
        self._short_waits.revoke(partitions)
        self._ledger.revoke(partitions)
        self._failed = deque(item for item in self._failed if item[1].source not in gone)
        self._assigned_count = len(self._gate.assigned)
        PARTITIONS_PAUSED.set(self._gate.held_count)

    # ------------------------------------------------------------------------------------------- summary

    def _log_summary(self, force: bool = False) -> None:
        summary = self._summary
        if not force and time.monotonic() - summary.since < SUMMARY_EVERY_S:
            return
        if summary.handed_off or summary.relayed or summary.invalid or force:
            log.info(
                "event=retry_summary handed_off=%d relayed=%d invalid=%d lateness_max_ms=%d paused=%d held=%d "
                "assigned=%d pending=%d",
                summary.handed_off,
                summary.relayed,
                summary.invalid,
                summary.lateness_max_ms,
                self._gate.held_count,
                len(self._short_waits),
                self._assigned_count,
                self._ledger.pending_count,
            )
        self._summary = _Summary()
