"""The recorder's consume -> write -> commit loop: every Kafka call of the role lives here.

The clients and the store are made in `main.new_recorder` and handed in; the recorder closes them when
it stops.

Offsets are committed only after the batch's transaction committed, so a crash or a database outage
loses nothing; it only delays the log. While PostgreSQL is unreachable the assigned partitions are
paused (no unbounded buffering) but the consumer keeps polling, so it stays in its group, and the write
is retried with capped backoff on a fresh connection.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from hookfleet import metrics, tracing
from hookfleet.db import DatabaseUnavailable, describe
from hookfleet.kafka import (
    BrokerState,
    Consumer,
    KafkaDeliveryError,
    KafkaError,
    KafkaException,
    KafkaProducer,
    KafkaUnavailable,
    Message,
    PartitionKey,
    TopicPartition,
    message_headers,
    topic_partition,
    transient,
)
from hookfleet.mail import send_mail
from hookfleet.settings import RecorderSettings
from hookfleet.shutdown import Shutdown
from hookfleet.stream.assignment import own_from_last_commits
from hookfleet.stream.close import close_bounded
from hookfleet.stream.commit import commit_offsets, ledger_offsets
from hookfleet.stream.diversion import divert, handler_error
from hookfleet.stream.ledger import Claim, OffsetLedger
from hookfleet.stream.membership import exit_if_fenced
from hookfleet.stream.poison import ItemFailure, item_failed, run_item
from hookfleet.stream.sender import Outgoing, send_all, send_each
from hookfleet.stream.watchdog import JoinWatchdog, replace_if_stuck
from recorder.batch import Batch, Unreadable, parse_records
from recorder.health import mail_text
from recorder.outcomes import WebhookOutcomes
from recorder.store import OutboxFailed, OutboxItem, RecorderStore, RedriveItem, RedriveSent, WriteResult
from schemas.catalog import EventType
from schemas.models import DeliveryTask, Event, Outcome
from schemas.redrive import fresh_attempt

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 5.0
CONSUMER_OPTIONS: dict[str, Any] = {
    "enable.auto.commit": False,  # committed explicitly, after the transaction
    "statistics.interval.ms": 5000,
    # A fetch waits for 1 MiB or 200 ms (the batch's own wait) instead of returning each new record at once:
    # the broker answers a fraction of the fetches, and a batch still fills in its wait (bench/RESULTS.md).
    "fetch.min.bytes": 1_048_576,
    "fetch.wait.max.ms": 200,
}
"""The role's own consumer options, on top of `hookfleet.kafka.consumer_config`'s defaults."""
CONSUME_SLICE = 64
"""Messages taken per consume call while a batch fills: a message may carry up to 100 attempt records
(hookfleet/stream/record_batch.py), so a batch overshoots `batch_max` by at most one slice's records."""
_IDLE_POLL_S = 0.5
_OUTAGE_POLL_S = 0.2
FAILING_REFRESH_S = 30.0
"""Every replica re-reads the failing count this often, so none keeps reporting a stale figure."""
OUTCOMES_PUBLISH_S = 15.0
_OUTBOX_CHECK_S = 10.0
"""How often unsent operational events are looked for when no batch wrote any (a crash between the
transaction and the send leaves them for whichever recorder looks next)."""

REDRIVE_CHECK_S = 1.0
"""How often queued dead letters (redrive on recovery) are looked for when the last look sent none: rows
queued by another recorder or the API's Test, or left by a crash, wait at most this long."""
_REDRIVE_BUSY_S = 0.1
_REDRIVE_FAILED_S = 5.0

_DB_ERRORS = (psycopg.Error, DatabaseUnavailable)
_OUTBOX_TRANSIENT: tuple[type[BaseException], ...] = (*_DB_ERRORS, KafkaDeliveryError, KafkaUnavailable)
"""Failures of the whole outbox batch, not of one item: the batch waits, no row is marked failed."""


class ShutdownDuringOutage(Exception):
    """The drain bound passed while PostgreSQL was still unreachable."""


class Recorder:
    def __init__(
        self,
        settings: RecorderSettings,
        shutdown: Shutdown,
        consumer: Consumer,
        producer: KafkaProducer,
        store: RecorderStore,
        *,
        heartbeat: metrics.Heartbeat | None = None,
        broker: BrokerState | None = None,
    ) -> None:
        """`consumer` must have been made with `CONSUMER_OPTIONS` (offsets are committed here, by hand);
        `broker`, when given, must be fed by the consumer's callbacks (its `up` feeds /readyz)."""
        self.settings = settings
        self.heartbeat = heartbeat or metrics.Heartbeat()
        self.broker = broker or BrokerState()
        self.outcomes = WebhookOutcomes()
        self._failing_due = 0.0
        self._outcomes_due = 0.0
        self._top_reported: set[str] = set()
        self.topics = settings.topics
        self.shutdown = shutdown
        self.store = store
        self.batch = Batch()
        self.spans = tracing.RecordSpans()  # `record` spans (hookfleet/tracing.py): nothing when tracing is off
        self.ledger = OffsetLedger()
        self._claims: list[Claim] = []
        """The current batch's offsets, finished together when its transaction commits."""
        self.joined = False  # an assignment came from the group, possibly empty: what readiness asks
        self.db_up = True
        self._drain_deadline: float | None = None
        self._next_outbox_check = 0.0
        self._next_redrive_check = 0.0
        self._redrive_gap = timedelta(seconds=1 / settings.recovery_redrive_rate)
        self._watchdog = JoinWatchdog()
        metrics.ITEM_FAILURES.labels("outbox")  # the series exists at 0 from the start, so its panel and rate work
        metrics.ITEM_FAILURES.labels("recovery_redrive")
        self.consumer = consumer
        self.producer = producer

    # ----------------------------------------------------------------------------------------- lifecycle

    def ready(self) -> tuple[bool, str]:
        """For /readyz: the broker reachable and the group joined (a database outage is only reported: the
        role waits it out with its partitions paused). Owning partitions is not asked: a replica beyond the
        partition count owns none, and a rollout's surge pod must still turn ready."""
        db = "up" if self.db_up else "unavailable"
        if not self.broker.up:
            return False, f"kafka broker at {self.settings.kafka_bootstrap_servers} unreachable; postgresql {db}"
        if not self.joined:
            return False, f"waiting to join the consumer group; postgresql {db}"
        return True, f"partitions={len(self.assigned)} postgresql {db}"

    def run(self) -> int:
        self.consumer.subscribe(
            [self.topics.attempts, self.topics.dead],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info(
            "event=recorder_started group=%s topics=%s,%s database=%s batch_max=%d batch_wait_ms=%d",
            self.settings.group_id,
            self.topics.attempts,
            self.topics.dead,
            describe(self.settings.database_url.get_secret_value()),
            self.settings.batch_max,
            self.settings.batch_wait_ms,
        )
        try:
            while not self.shutdown.requested.is_set():
                self.heartbeat.beat()  # liveness: every turn, whatever the broker and the database do
                if exit_if_fenced("recorder", [self.broker], self.shutdown) or replace_if_stuck(
                    self._watchdog, "recorder", [self.broker], self.shutdown
                ):
                    break
                self._periodic()
                self._fill()
                if self.batch.size:
                    self._flush()
                if time.monotonic() >= self._next_outbox_check:
                    self._send_outbox()
                if time.monotonic() >= self._next_redrive_check:
                    self._send_redrives()
            if self.batch.size:
                self._flush()
        except ShutdownDuringOutage:
            log.warning("event=shutdown_unwritten messages=%d reason=postgresql_unavailable", self.batch.size)
        finally:
            self.close()
        log.info("event=recorder_stopped exit_code=%d", self.shutdown.exit_code)
        return self.shutdown.exit_code

    def close(self) -> None:
        close_bounded(self.consumer, "recorder")
        self.producer.close(timeout_s=5.0)
        self.store.close()

    # ----------------------------------------------------------------------------------------- consuming

    def _fill(self) -> None:
        """Consume until the batch is full or the oldest held message waited batch_wait_ms."""
        first = self.consumer.poll(_IDLE_POLL_S)
        if first is None:
            return
        self._take(first)
        deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
        while self.batch.size < self.settings.batch_max and not self.shutdown.requested.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # consume() returns only when full or timed out: short slices keep shutdown prompt.
            wanted = min(self.settings.batch_max - self.batch.size, CONSUME_SLICE)
            for message in self.consumer.consume(wanted, timeout=min(left, _IDLE_POLL_S)):
                self._take(message)

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("event=consume_error code=%s reason=%s", error.name(), error.str())
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:  # only error events lack these
            return
        key = (topic, partition)
        claim = self.ledger.claim(key, offset)
        if claim is None:
            return  # revoked in the same batch, read again (already held), or stored before the last commit
        self._claims.append(claim)
        try:
            records = parse_records(self.topics, topic, message.key(), message.value(), message_headers(message))
        except Exception as exc:  # the runtime's poison rule: diverted with the batch, never a crash
            records = [Unreadable(topic, message.key(), message.value(), handler_error(exc))]
        for parsed in records:
            self.batch.add(topic, partition, offset, parsed)
        self.spans.take(message)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        own_from_last_commits(self.ledger, consumer, partitions, "recorder")
        self.joined = True
        self.broker.up = True  # an assignment came from the group coordinator: the broker answers
        log.info("event=partitions_assigned count=%d", len(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.ledger.revoke(revoked)
        # Their next owner re-reads from the last commit and every write is idempotent, so dropping the
        # uncommitted share is safe; flushing here would stall the rebalance during an outage.
        dropped = self.batch.drop(revoked)
        log.info("event=partitions_revoked count=%d dropped_uncommitted=%d", len(partitions), dropped)

    @property
    def assigned(self) -> frozenset[PartitionKey]:
        return self.ledger.owned

    # ------------------------------------------------------------------------------------------ flushing

    def _flush(self) -> None:
        """Make the batch durable, then commit its offsets; waits out a database outage."""
        backoff = RETRY_INITIAL_S
        outage_started: float | None = None
        failures = 0
        paused = False
        while True:
            try:
                self._route_invalid()
                result = self.store.write(self.batch)
                break
            except _DB_ERRORS as exc:
                failures += 1
                metrics.RECORDER_DB_ERRORS.inc()
                if outage_started is None:
                    outage_started = time.monotonic()
                    self.db_up = False
                    log.error(
                        "event=db_unavailable database=%s error=%s held_messages=%d action=pause_and_retry",
                        describe(self.settings.database_url.get_secret_value()),
                        type(exc).__name__,
                        self.batch.size,
                    )
            except (KafkaDeliveryError, KafkaUnavailable) as exc:
                log.error("event=invalid_route_failed error=%s", exc)
            paused = True
            self._wait_paused(backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)
        if paused:
            self.consumer.resume(self._assignment())
        if outage_started is not None:
            self.db_up = True
            log.info("event=db_recovered outage_s=%.1f failed_writes=%d", time.monotonic() - outage_started, failures)
        self._committed(result)

    def _wait_paused(self, seconds: float) -> None:
        """Sleep between retries while polling, so the group keeps this member; partitions stay paused."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.heartbeat.beat()
            if self.shutdown.requested.is_set():
                if self._drain_deadline is None:
                    self._drain_deadline = time.monotonic() + self.settings.drain_timeout_s
                elif time.monotonic() > self._drain_deadline:
                    raise ShutdownDuringOutage
            # Re-applied each round: a rebalance may have assigned partitions that are not paused yet.
            self.consumer.pause(self._assignment())
            message = self.consumer.poll(_OUTAGE_POLL_S)
            if message is not None:
                # Pausing drops prefetched messages and resume continues after the last one handed out,
                # so a message that still arrives belongs in this batch.
                self._take(message)

    def _assignment(self) -> list[TopicPartition]:
        return [topic_partition(key) for key in sorted(self.assigned)]

    def _route_invalid(self) -> None:
        invalid = self.batch.invalid
        if not invalid:
            return
        send_all(
            self.producer,
            [
                divert(item.invalid, item.value, item.key, source, offset, "recorder", self.topics.invalid)
                for source, offset, item in invalid
            ],
        )
        self.batch.clear_invalid()

    def _committed(self, result: WriteResult) -> None:
        """The batch is durable: record metrics, commit offsets, start a new batch."""
        now = datetime.now(UTC)
        attempts = self.batch.attempts
        metrics.RECORDER_BATCH.observe(self.batch.size)
        clock = time.time()
        for record in attempts:
            metrics.RECORDER_LAG.observe(max(0.0, (now - record.attempted_at).total_seconds()))
            if record.test:
                continue
            ok = record.outcome is Outcome.SUCCESS
            self.outcomes.add(record.webhook_id, ok, clock, record.account_id)
            if ok and record.event is not None:
                settled = (record.attempted_at - record.event.created_at).total_seconds()
                metrics.DELIVERY_SETTLED.labels("delivered").observe(max(0.0, settled))
        for letter in self.batch.dead_letters:
            settled = (letter.dead_at - letter.task.event.created_at).total_seconds()
            metrics.DELIVERY_SETTLED.labels("dead_lettered").observe(max(0.0, settled))
        for claim in self._claims:  # the batch is durable: every message in it is finished
            self.ledger.finish(claim)
        self._claims = []
        self.batch = Batch()
        self.spans.committed()
        self._commit()
        for webhook_id, state in result.status_changes.items():
            log.info(
                "event=webhook_status_changed webhook_id=%s status=%s at=%s",
                webhook_id,
                state.status,
                state.changed_at.isoformat(),
            )
        if result.status_changes:
            self._refresh_failing()
            self._failing_due = time.monotonic() + FAILING_REFRESH_S
        if result.notifications:
            self._send_outbox()
        if result.redrives_queued:
            self._next_redrive_check = 0.0  # the first ones are due now
        log.debug(
            "event=batch_committed attempts=%d inserted=%d dead_letters=%d",
            len(attempts),
            result.attempts_inserted,
            result.dead_letters_written,
        )

    def _commit(self) -> None:
        """Commit every partition finished since the last commit, or whose last commit did not take (a
        rebalance under it: taken again here on the next turn). The rows are in either way; a commit still
        lost only means a replay, which inserts nothing new."""
        commits = self.ledger.commits()
        if not commits:
            return
        try:
            # Stored too, so the stats callback reports lag against them.
            self.consumer.store_offsets(offsets=[topic_partition(p, offset) for p, offset, _ in commits])
        except KafkaException as exc:  # a partition revoked meanwhile: not ours to store
            log.debug("event=offset_store_failed reason=%s", exc)
        # Committed with the runtime's finished-offset metadata (empty here: a batch finishes in order).
        commit_offsets(self.consumer, self.ledger, ledger_offsets(commits), asynchronous=False, role="recorder")

    def _periodic(self) -> None:
        """The failing count and the outcome gauges, refreshed on a clock rather than only on changes; a
        commit that did not take, taken again."""
        self._commit()
        now = time.monotonic()
        if now >= self._failing_due:
            self._failing_due = now + FAILING_REFRESH_S
            self._refresh_failing()
        if now >= self._outcomes_due:
            self._outcomes_due = now + OUTCOMES_PUBLISH_S
            self._publish_outcomes()

    def _publish_outcomes(self) -> None:
        summary = self.outcomes.summary(time.time(), metrics.TOP_FAILING_WEBHOOKS)
        metrics.WEBHOOKS_ATTEMPTED.set(summary.attempted)
        metrics.WEBHOOKS_SUCCEEDING.set(summary.succeeding)
        metrics.ACCOUNTS_ATTEMPTED.set(summary.accounts_attempted)
        metrics.ACCOUNTS_SUCCEEDING.set(summary.accounts_succeeding)
        minutes = self.outcomes.judge_closed_minutes(time.time())
        metrics.HEALTHY_WEBHOOK_MINUTES.labels("good").inc(minutes.good)
        metrics.HEALTHY_WEBHOOK_MINUTES.labels("bad").inc(minutes.bad)
        top = {webhook_id for webhook_id, _ in summary.worst}
        for webhook_id, failures in summary.worst:
            metrics.WEBHOOK_FAILURES_TOP.labels(webhook_id).set(failures)
        for gone in self._top_reported - top:  # bounded: a webhook leaving the top N loses its series
            metrics.WEBHOOK_FAILURES_TOP.remove(gone)
        self._top_reported = top

    def _send_outbox(self) -> None:
        """Publish operational events (webhook.failing / .recovered / .disabled) like any product event,
        and mail the account's notification address when SMTP is configured."""
        self._next_outbox_check = time.monotonic() + _OUTBOX_CHECK_S
        try:
            while self.store.drain_outbox(self._publish_operational) and not self.shutdown.requested.is_set():
                pass
        except (*_DB_ERRORS, KafkaDeliveryError, KafkaUnavailable) as exc:
            log.warning("event=operational_events_deferred error=%s", type(exc).__name__)

    def _send_redrives(self) -> None:
        """Redrive on recovery: queue again, at the recovery's pace, the dead letters a recovery queued."""
        held = 0

        def publish(items: list[RedriveItem]) -> RedriveSent:
            nonlocal held
            outcome = self._publish_redrives(items)
            held = len(outcome.held)
            return outcome

        try:
            sent = self.store.drain_redrives(publish, self._redrive_gap)
        except (*_DB_ERRORS, KafkaDeliveryError, KafkaUnavailable) as exc:
            log.warning("event=recovery_redrives_deferred error=%s", type(exc).__name__)
            self._next_redrive_check = time.monotonic() + _REDRIVE_FAILED_S
            return
        # Rows held (a partition refused them for now): every try waits up to 30 s for the broker, so wait too.
        wait = _REDRIVE_FAILED_S if held else _REDRIVE_BUSY_S if sent else REDRIVE_CHECK_S
        self._next_redrive_check = time.monotonic() + wait

    def _publish_redrives(self, items: list[RedriveItem]) -> RedriveSent:
        """Produce each dead letter as a fresh attempt 1, in order, waiting for the broker. Returns the items
        that can never be sent (the poison-item rule) and those held for the next drain: a webhook whose
        partition refused a task for now (a retriable error) holds it and every later one of its own, which
        keeps its order; the other webhooks' tasks go out. The broker unreachable is raised: all wait."""
        now_ms = int(time.time() * 1000)
        ready: list[tuple[RedriveItem, Outgoing]] = []
        refused: list[RedriveItem] = []
        for item in items:
            try:
                task = fresh_attempt(DeliveryTask.model_validate_json(item.task_json), now_ms)
            except ValueError as exc:
                item_failed("recovery_redrive", item.event_id, exc)
                refused.append(item)
                continue
            ready.append((item, Outgoing(self.topics.deliveries, task.model_dump_json().encode(), item.webhook_id)))
        results = send_each(self.producer, [outgoing for _, outgoing in ready], partial=True)
        counts: dict[str, int] = {}
        held: dict[str, list[RedriveItem]] = {}
        for (item, _), error in zip(ready, results, strict=True):
            if item.webhook_id in held:
                held[item.webhook_id].append(item)  # sent again from its first held task on, in order
            elif error is not None and transient(error):
                log.warning("event=recovery_redrives_deferred webhook_id=%s error=%s", item.webhook_id, error.name())
                held[item.webhook_id] = [item]
            elif error is None:
                counts[item.webhook_id] = counts.get(item.webhook_id, 0) + 1
            else:
                item_failed("recovery_redrive", item.event_id, KafkaDeliveryError(error))
                refused.append(item)
        for webhook_id, count in counts.items():
            log.info("event=recovery_redriven webhook_id=%s count=%d", webhook_id, count)
        return RedriveSent(refused, [item for waiting in held.values() for item in waiting])

    def _publish_operational(self, items: list[OutboxItem]) -> list[OutboxFailed]:
        """Produce the items' events (waiting for the broker), then mail them; one item's own failure
        (`hookfleet/stream/poison.py`) is returned, never raised, so it cannot stop the recorder. The broker or
        the database unreachable is raised: nothing is wrong with the items, the batch waits."""
        failed: dict[str, OutboxFailed] = {}
        unpublished = [item for item in items if not item.published]
        events = [Outgoing(self.topics.events, item.event_json.encode(), item.account_id) for item in unpublished]
        for item, error in zip(unpublished, send_each(self.producer, events), strict=True):
            if error is None:
                continue
            if transient(error):  # the broker, not the item: the whole batch waits
                raise KafkaDeliveryError(error)
            failure = item_failed("outbox", item.event_id, KafkaDeliveryError(error))
            failed[item.event_id] = OutboxFailed(item.event_id, False, failure)
        for item in items:
            if item.event_id in failed:
                continue
            if not item.published:
                log.info("event=operational_event_published event_id=%s account_id=%s", item.event_id, item.account_id)
            if item.notify_email and self.settings.smtp_url is not None:
                mailed = run_item(
                    "outbox",
                    item.event_id,
                    lambda item=item: self._mail(item),  # type: ignore[misc]
                    transient=_OUTBOX_TRANSIENT,
                    secrets=self._smtp_secrets(),
                )
                if isinstance(mailed, ItemFailure):
                    failed[item.event_id] = OutboxFailed(item.event_id, True, mailed)
        return list(failed.values())

    def _mail(self, item: OutboxItem) -> None:
        """Mail one operational event; raises whatever the mail library or the server raise."""
        assert self.settings.smtp_url is not None and item.notify_email is not None
        event = Event.model_validate_json(item.event_json)
        subject, text = mail_text(EventType(event.type), event.data)
        smtp_url = self.settings.smtp_url.get_secret_value()
        send_mail(smtp_url, self.settings.smtp_from, item.notify_email, subject, text)
        log.info("event=notification_mail_sent event_id=%s account_id=%s", item.event_id, item.account_id)

    def _smtp_secrets(self) -> tuple[str, ...]:
        """What must never reach an outbox row's error or a log line: the SMTP URL and its password."""
        if self.settings.smtp_url is None:
            return ()
        url = self.settings.smtp_url.get_secret_value()
        password = urlsplit(url).password
        return (url, password, unquote(password)) if password else (url,)

    def _refresh_failing(self) -> None:
        try:
            metrics.FAILING_WEBHOOKS.set(self.store.count_failing())
            backlog = self.store.outbox_backlog()
            metrics.set_outbox_backlog(backlog.pending, backlog.failed, backlog.given_up, backlog.oldest_due_s)
            redrives = self.store.redrive_backlog(self._redrive_gap)
            metrics.set_recovery_redrive_backlog(redrives.queued, redrives.oldest_overdue_s)
        except _DB_ERRORS as exc:
            log.warning("event=failing_count_skipped error=%s", type(exc).__name__)
