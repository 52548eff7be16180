"""One stage's Kafka consumer: its own thread, its partitions' offsets, commits with finished-offset metadata.

Each stage of the dispatcher has its own consumer, all in one consumer group (heterogeneous
subscriptions): the group then balances `webhooks.events` over the fan-out consumers and
`webhooks.deliveries` over the delivery consumers separately. With one consumer for both topics a joining
dispatcher could be handed only events partitions, and one process would own every webhook.

Threading: `consume`, synchronous `commit` and `close` may run rebalance callbacks, so they run on this
stage's dedicated thread; the asyncio loop meanwhile stays free to drain revoked work. The partition
table is changed only inside those callbacks (while this stage's loop code awaits the very call) and
read by the loop between calls, so it needs no lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from hookfleet.kafka import Consumer, Message, PartitionKey, TopicPartition, topic_partition
from hookfleet.stream.assignment import own_from_last_commits
from hookfleet.stream.close import CLOSE_BOUND_S, close_bounded
from hookfleet.stream.commit import commit_offsets, ledger_offsets, retake_failed_commits
from hookfleet.stream.ledger import OffsetLedger

log = logging.getLogger(__name__)

TP = PartitionKey


class StageConsumer:
    def __init__(
        self,
        stage: str,
        consumer: Consumer,
        topic: str,
        drain: Callable[[set[TP]], Awaitable[None]],
        drain_timeout_s: float,
        on_assigned: Callable[[list[TP]], None] | None = None,
    ) -> None:
        """`on_assigned` runs on this stage's thread for newly assigned partitions before any of their
        messages is consumed (the fan-out restores its idempotency keys there)."""
        self.stage = stage
        self._on_assigned = on_assigned
        self.consumer = consumer
        self.topic = topic
        self.ledger = OffsetLedger()
        """The owned partitions' offsets (hookfleet/stream/ledger.py): begun and finished by the dispatcher."""
        retake_failed_commits(consumer, self.ledger)
        self.paused = False
        """Intake gated by the dispatcher's global bound: the stage stops consuming, without a librdkafka pause
        (a pause purges the prefetched messages, fetched again at the resume; librdkafka stops fetching by
        itself at `queued.max.messages.kbytes`)."""
        self.unblocked = asyncio.Event()
        """Set when the global bound lets the stage consume again."""
        self.stalled = False
        """Gated for longer than a poll interval (receivers hanging, not a busy fleet): its partitions are then
        paused too, so librdkafka drops its prefetch for the stall's duration."""
        self._drain = drain
        self._drain_timeout_s = drain_timeout_s
        self._commits: dict[TP, TopicPartition] = {}  # prepared on the loop, committed on the thread
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dispatcher-{stage}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self.close_stuck = False  # `close` did not return within CLOSE_BOUND_S: its thread never ends
        # The group coordinator answered with an assignment, possibly empty: this member has joined. What
        # readiness asks; owning partitions is not (a surge pod beyond the partition count owns none).
        self.joined = False

    # ---------------------------------------------------------------------------------- from the loop

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    async def poll(self, batch: int) -> list[Message]:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._thread, self._poll, batch)

    def commit_soon(self) -> None:
        """Prepare the changed partitions' commits and send them now (asynchronously), from the loop.

        Sent from here rather than at the next poll: under load one loop turn takes hundreds of
        milliseconds, and every one of them widens what a crash would deliver twice. Two calls a
        second do not contend with the consumer thread the way a call per message did."""
        self.prepare_commits()
        self._commit(asynchronous=True)

    @property
    def partitions(self) -> frozenset[TP]:
        """The partitions this stage owns now."""
        return self.ledger.owned

    def prepare_commits(self, keys: set[TP] | None = None, force: bool = False) -> None:
        """The commit of every changed partition, with its finished offsets as metadata."""
        for offset in ledger_offsets(self.ledger.commits(keys, force=force)):
            self._commits[(offset.topic, offset.partition)] = offset

    def pause(self, keys: list[TP]) -> None:
        if keys:
            self.consumer.pause([topic_partition(k) for k in keys])

    def resume(self, keys: list[TP]) -> None:
        if keys:
            self.consumer.resume([topic_partition(k) for k in keys])

    async def close(self) -> None:
        """Commit every partition's final position and leave the group."""
        assert self._loop is not None
        self.prepare_commits(force=True)
        await self._loop.run_in_executor(self._thread, self._commit, False)
        # On this stage's thread, so the revoke callback it runs finds the loop free to drain.
        closed = await self._loop.run_in_executor(
            self._thread, close_bounded, self.consumer, f"dispatcher-{self.stage}", CLOSE_BOUND_S
        )
        self.close_stuck = not closed
        self._thread.shutdown(wait=True)

    # ---------------------------------------------------------------------------------- on the thread

    def _poll(self, batch: int) -> list[Message]:
        """Commit what the loop prepared, then consume.

        `consume(n, timeout)` waits until it has n messages or the timeout passes, so a batch with a
        timeout would hold the first message up to 100 ms whenever fewer than n arrive. Instead: take
        what is already fetched; when nothing is, wait for one message and take what came with it.
        """
        self._commit(asynchronous=True)
        messages: list[Message] = self.consumer.consume(batch, 0)
        if not messages:
            messages = self.consumer.consume(1, 0.1)
            if messages:
                messages += self.consumer.consume(batch - 1, 0)
        return messages

    def _commit(self, asynchronous: bool, keys: set[TP] | None = None) -> None:
        """Commit the prepared offsets (of `keys` only, when given)."""
        if keys is None:
            prepared, self._commits = self._commits, {}  # one atomic swap: the loop may add meanwhile
        else:
            prepared = {k: tp for k in keys if (tp := self._commits.pop(k, None)) is not None}
        if not prepared:
            return
        # One that did not take is taken again with the next (hookfleet/stream/commit.py); a partition lost
        # meanwhile is left to its next owner, which redoes the unfinished work.
        commit_offsets(
            self.consumer,
            self.ledger,
            list(prepared.values()),
            asynchronous=asynchronous,
            role=f"dispatcher-{self.stage}",
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        skipping = own_from_last_commits(self.ledger, consumer, partitions, f"dispatcher-{self.stage}")
        if self._on_assigned is not None and partitions:
            self._on_assigned([(tp.topic, tp.partition) for tp in partitions])
        self.joined = True
        if self.stalled and partitions:
            consumer.pause(partitions)
        log.info(
            "event=partitions_assigned stage=%s count=%d total=%d skipping=%d",
            self.stage,
            len(partitions),
            len(self.ledger.owned),
            skipping,
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        if self._loop is not None and self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._revoke_on_loop(keys), self._loop)
            try:
                future.result(timeout=self._drain_timeout_s + 5)
            except Exception:  # a failed drain only means the next owner redoes more
                log.warning("event=revoke_drain_failed stage=%s", self.stage, exc_info=True)
        self._commit(asynchronous=False, keys=keys)
        self.ledger.revoke(keys)
        log.info(
            "event=partitions_revoked stage=%s count=%d total=%d", self.stage, len(partitions), len(self.ledger.owned)
        )

    async def _revoke_on_loop(self, keys: set[TP]) -> None:
        await self._drain(keys)
        self.prepare_commits(keys, force=True)
        self.ledger.revoke(keys)  # late completions of abandoned work must not count
