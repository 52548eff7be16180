"""The retry scheduler's Kafka side: every consumer and producer call of the role is in this module.

The clients are made by `hookfleet.kafka`'s factories (see `main.new_scheduler`) and handed in; the
scheduler owns them from then on and closes them when it stops.

One synchronous loop on the stream runtime (`hookfleet.stream`). It never sleeps: it polls with a timeout
bounded by the next hold's due time, so a held partition resumes on time while the others keep flowing.
Timing rules live in `gate.DueGate`; offsets in the runtime's `OffsetLedger` (committed every
`COMMIT_EVERY_S` with the finished offsets above the committed one, so a restart hands off again only what
was in flight); acknowledgements in its `TrackedSender`. This module applies their answers to librdkafka:

- `pause` purges the partition's prefetched messages and `resume` continues after the last message handed
  to us, so a hold is always pause + seek back to the not-yet-due task (and seek again before resuming).
- A task due later than its topic's delay after it was written (a long `Retry-After`) is relayed: at its
  topic's delay it is written again, to the delay topic for what is left of its wait
  (`delay_index_for_wait`), or, when less than the shortest delay is left, held in memory until due
  (`gate.ShortWaits`). So every delay topic stays in due order and no task waits behind a later one.
- Produce acknowledgements arrive on the producer's poll thread; `TrackedSender` queues them and hands
  them back here, so the gate, the ledger and every consumer call stay on this one thread.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from hookfleet.kafka import (
    BrokerState,
    Consumer,
    KafkaException,
    KafkaProducer,
    Message,
    PartitionKey,
    TopicPartition,
    message_headers,
    topic_partition,
    written_ms,
)
from hookfleet.metrics import PARTITIONS_PAUSED, RETRY_LATENESS, Heartbeat
from hookfleet.settings import RetrySchedulerSettings
from hookfleet.shutdown import Shutdown
from hookfleet.stream.assignment import own_from_last_commits
from hookfleet.stream.close import close_bounded
from hookfleet.stream.commit import commit_offsets, ledger_offsets, retake_failed_commits
from hookfleet.stream.diversion import Invalid, divert, handler_error, read_as
from hookfleet.stream.ledger import Claim, OffsetLedger
from hookfleet.stream.membership import exit_if_fenced
from hookfleet.stream.sender import Outgoing, TrackedSender
from hookfleet.stream.watchdog import JoinWatchdog, replace_if_stuck
from retry_scheduler.gate import DueGate, Hold, ShortWaits, Step, hold_plan, to_nudge
from schemas.models import DeliveryTask
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
COMMIT_EVERY_S = 0.5
"""Commit cadence: a crash hands off again at most what was acknowledged since (plus what was in flight)."""
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
    "enable.auto.commit": False,  # committed here, with the finished offsets as metadata
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
    """A message on its way out of a delay topic: to deliveries when due, to another delay topic when
    relayed, to invalid when malformed."""

    claim: Claim
    """Its source offset, finished when the broker acknowledges the hand-off."""
    message: Outgoing
    due_at_ms: int | None
    """When it was due, to measure lateness; None for a relay or a malformed message."""
    stage: Stage


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
        self._ledger = OffsetLedger()
        retake_failed_commits(consumer, self._ledger)
        self._sender: TrackedSender[HandOff] = TrackedSender(producer, lambda h: self._ledger.is_pending(h.claim))
        self._commit_due = 0.0
        self._watchdog = JoinWatchdog()
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
        self._commit(force=True)
        close_bounded(self._consumer, "retry-scheduler")  # runs the revoke callback, which has nothing left to wait for
        self._producer.close(timeout_s=1.0)
        PARTITIONS_PAUSED.set(0)
        self._log_summary(force=True)
        log.info("event=retry_scheduler_stopped unacknowledged=%d", remaining)

    # ------------------------------------------------------------------------------------------- the loop

    def _tick(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.beat()  # liveness: every turn of this loop, whatever the broker does
        if exit_if_fenced("retry-scheduler", [self._broker], self._shutdown) or replace_if_stuck(
            self._watchdog, "retry-scheduler", [self._broker], self._shutdown
        ):
            return
        now_ms = _now_ms()
        self._resume_due(now_ms)
        self._release_short_waits(now_ms)
        self._sender.resend_due()
        idle = BUSY_WAIT_S if self._sender.waiting else IDLE_WAIT_S
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
                self._handle_isolated(message, now_ms, reheld)
        self._drain_acks()
        if time.monotonic() >= self._commit_due:
            self._commit_due = time.monotonic() + COMMIT_EVERY_S
            self._commit()
        PARTITIONS_PAUSED.set(self._gate.held_count)
        self._log_summary()

    def _handle_isolated(self, message: Message, now_ms: int, reheld: set[PartitionKey]) -> None:
        """`_handle`, under the runtime's poison rule: a message whose handling raises is diverted, not a crash
        (and not a crash loop: its offset is finished like any other's)."""
        try:
            self._handle(message, now_ms, reheld)
        except Exception as exc:
            partition, offset = _position(message)
            if self._ledger.already_begun(partition, offset) or not self._ledger.owns(partition):
                raise  # its hand-off is under way, or it is no longer ours: nothing to divert
            self._route_invalid(message, partition, offset, handler_error(exc))

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
        if self._ledger.already_begun(partition, offset):
            return
        if self._ledger.finished_before(partition, offset):
            # Handed off by the previous owner after its last commit's offset (its commit metadata says so).
            self._ledger.finish(self._ledger.begin(partition, offset))
            return
        task = read_as(DeliveryTask, message.value())
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
            value, key, headers = message.value() or b"", message.key(), message_headers(message)
            outgoing = Outgoing(self._topics.deliveries, value, key, headers)
            self._send(HandOff(self._ledger.begin(partition, offset), outgoing, due_ms, stage))

    def _relay(
        self, message: Message, partition: PartitionKey, offset: int, due_at_ms: int, stage: Stage, now_ms: int
    ) -> None:
        """Due later than this topic holds (a long Retry-After): written again, unchanged, to the delay topic
        for what is left of the wait, or held here until due when less than the shortest delay is left."""
        index = delay_index_for_wait((due_at_ms - now_ms) / 1000, self._settings.retry_delays_s)
        value = message.value() or b""
        self._summary.relayed += 1
        claim = self._ledger.begin(partition, offset)
        if index is None:
            outgoing = Outgoing(self._topics.deliveries, value, message.key(), message_headers(message))
            hand_off = HandOff(claim, outgoing, due_at_ms, stage)
            if self._short_waits.add(partition, due_at_ms, len(value), hand_off):
                log.debug("event=task_held topic=%s partition=%d offset=%d due_at=%d", *partition, offset, due_at_ms)
                return
            log.warning(
                "event=short_waits_full topic=%s partition=%d offset=%d held=%d held_bytes=%d",
                *partition,
                offset,
                len(self._short_waits),
                self._short_waits.bytes,
            )
            relayed = outgoing._replace(topic=self._topics.retries[0])
            self._sender.send(relayed, replace(hand_off, message=relayed, due_at_ms=None))
            return
        target = self._topics.retries[index]
        log.debug(
            "event=task_relayed topic=%s partition=%d offset=%d to=%s due_at=%d", *partition, offset, target, due_at_ms
        )
        outgoing = Outgoing(target, value, message.key(), message_headers(message))
        self._send(HandOff(claim, outgoing, None, STAGES[index]))

    def _release_short_waits(self, now_ms: int) -> None:
        for hand_off in self._short_waits.pop_due(now_ms):
            if self._ledger.is_pending(hand_off.claim):  # else revoked since: not ours
                self._send(hand_off)

    def _route_invalid(self, message: Message, partition: PartitionKey, offset: int, invalid: Invalid) -> None:
        """The runtime's poison rule: aside to the invalid topic with its reason; the partition moves on."""
        self._summary.invalid += 1
        outgoing = divert(
            invalid, message.value(), message.key(), partition, offset, "retry-scheduler", self._topics.invalid
        )
        self._send(HandOff(self._ledger.begin(partition, offset), outgoing, None, stage_of(self._topics, partition[0])))

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

    def _send(self, hand_off: HandOff) -> None:
        self._sender.send(hand_off.message, hand_off)

    def _drain_acks(self) -> None:
        for settled in self._sender.settle():
            self._finished(settled.token, settled.acked_at)

    def _finished(self, hand_off: HandOff, acked_at: float) -> None:
        self._ledger.finish(hand_off.claim)
        if hand_off.due_at_ms is not None:
            self._on_handed_off(hand_off, acked_at)

    def _on_handed_off(self, hand_off: HandOff, acked_at: float) -> None:
        assert hand_off.due_at_ms is not None
        lateness_ms = int(acked_at * 1000) - hand_off.due_at_ms
        RETRY_LATENESS.labels(hand_off.stage).observe(lateness_ms / 1000)
        self._summary.handed_off += 1
        self._summary.lateness_max_ms = max(self._summary.lateness_max_ms, lateness_ms)
        log.debug(
            "event=retry_handed_off topic=%s partition=%d offset=%d stage=%s lateness_ms=%d",
            *hand_off.claim.partition,
            hand_off.claim.offset,
            hand_off.stage,
            lateness_ms,
        )

    def _settle(self, timeout_s: float) -> int:
        """Wait (bounded) for every outstanding hand-off's acknowledgement and finish what it allows.

        Returns how many hand-offs are still unacknowledged. Outside the loop only (stop, revoke). Tasks held
        in memory are not waited for: their offsets stay unfinished, so whoever reads the partition next
        holds them again.
        """
        for settled in self._sender.wait(timeout_s):
            self._finished(settled.token, settled.acked_at)
        return self._sender.in_flight

    def _commit(self, partitions: list[PartitionKey] | None = None, force: bool = False) -> None:
        """Commit the ledger's low-water marks with their finished offsets; synchronous when forced (stop,
        revoke), asynchronous on the loop's cadence. A commit that did not take is taken again on the next
        cadence (hookfleet/stream/commit.py); a partition revoked meanwhile is left to its next owner, which
        hands its unfinished tasks off again, at least once."""
        offsets = ledger_offsets(self._ledger.commits(partitions, force=force))
        commit_offsets(self._consumer, self._ledger, offsets, asynchronous=not force, role="retry-scheduler")

    # ------------------------------------------------------------------------------------------ rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        skipping = own_from_last_commits(self._ledger, consumer, partitions, "retry-scheduler")
        # Applied after this callback returns, once librdkafka has really assigned the partitions.
        self._reapply.update(self._gate.assign((tp.topic, tp.partition) for tp in partitions))
        self._leaders_due = 0.0  # new partitions: learn their leaders on the next tick
        self._assigned_count = len(self._gate.assigned)
        self._assignment_known = True
        self._broker.up = True
        log.info(
            "event=partitions_assigned added=%d assigned=%d skipping=%d",
            len(partitions),
            self._assigned_count,
            skipping,
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Store and commit what was handed off before the partitions go; forget their holds."""
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        self._settle(REVOKE_FLUSH_S)
        self._commit(revoked, force=True)
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
        self._sender.forget(lambda hand_off: hand_off.claim.partition in gone)
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
                self._sender.in_flight,
            )
        self._summary = _Summary()
