"""Produce, and know that the broker has it: the one way every role writes what its offsets depend on.

Every producer is idempotent with acks=all (`hookfleet.kafka.KafkaProducer`). What differs between callers
is only how they wait, so there are three doors to the one policy:

- `send_all`: a batch, blocking until every message is acknowledged; raises if one is not (the caller
  keeps its offsets and tries the batch again: the recorder, redrive, replay);
- `send_until_acked`: one message from asyncio, produced again after a backoff until acknowledged (the
  dispatcher: giving up would lose an outcome, waiting only delays the partition's commit);
- `TrackedSender`: many messages from one synchronous loop, each with a token; acknowledgements arrive on
  the producer's thread and are handed back on the loop's thread (`settle`), failures produced again after
  a backoff (the retry scheduler).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from hookfleet.kafka import Headers, KafkaDeliveryError, KafkaError, KafkaProducer, KafkaUnavailable, Message

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 30.0
"""How long `send_all` waits for the broker: longer than the producer's own retries of a leader change."""
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits between produces of a message the producer gave up on (its own retries come first)."""

T = TypeVar("T")


class Outgoing(NamedTuple):
    """One message to produce (a tuple: one is made for every message produced, on every delivery's path)."""

    topic: str
    value: bytes
    key: bytes | str | None = None
    headers: Headers | None = None
    partition: int | None = None  # None: the producer's partitioner places it by key


def backoff_s(tries: int) -> float:
    """The wait before produce number `tries + 1` of a message whose `tries` produces failed."""
    return RETRY_BACKOFF_S[min(max(tries, 1), len(RETRY_BACKOFF_S)) - 1]


def send_each(
    producer: KafkaProducer, messages: Sequence[Outgoing], timeout_s: float = ACK_TIMEOUT_S, partial: bool = False
) -> list[KafkaError | None]:
    """Produce every message and wait until the broker settled each: its result, in order, is None
    (acknowledged) or the error (refused locally, or by the broker after the producer's own retries).

    Raises `KafkaUnavailable` when they are not all settled within `timeout_s` (the broker unreachable).
    With `partial`, only when none was: when some were, each unsettled one's result is `_MSG_TIMED_OUT` (one
    partition without a leader holds up only its own messages); it may still reach the broker later."""
    results: list[KafkaError | None] = [None] * len(messages)
    settled: set[int] = set()
    lock = threading.Lock()
    done = threading.Event()

    def settle_one(index: int, error: KafkaError | None) -> None:
        with lock:
            results[index] = error
            settled.add(index)
            if len(settled) == len(messages):
                done.set()

    def callback(index: int) -> Callable[[KafkaError | None, Message], None]:
        return lambda error, _message: settle_one(index, error)

    for index, message in enumerate(messages):
        try:
            producer.produce(
                message.topic, message.value, key=message.key, headers=message.headers, on_delivery=callback(index)
            )
        except KafkaDeliveryError as exc:  # refused locally (e.g. too large): this message's own result
            settle_one(index, exc.error)
    if not messages:
        return results
    started = time.monotonic()
    producer.flush(timeout_s)
    # flush() may return just before the poll thread has run the last callbacks: wait for them.
    if not done.wait(max(0.0, timeout_s - (time.monotonic() - started))):
        topics = ",".join(sorted({m.topic for m in messages}))
        with lock:
            if not partial or not settled:
                raise KafkaUnavailable(f"no broker acknowledgement for {topics} within {timeout_s:g}s")
            waited = KafkaError(KafkaError._MSG_TIMED_OUT, f"no broker acknowledgement within {timeout_s:g}s")
            return [results[index] if index in settled else waited for index in range(len(messages))]
    return results


def send_all(producer: KafkaProducer, messages: Sequence[Outgoing], timeout_s: float = ACK_TIMEOUT_S) -> None:
    """Produce every message and return once the broker acknowledged all of them.

    Raises `KafkaUnavailable` when they are not all acknowledged within `timeout_s`, `KafkaDeliveryError`
    when one was refused: the caller's offsets must then not move past them."""
    for error in send_each(producer, messages, timeout_s):
        if error is not None:
            raise KafkaDeliveryError(error)


async def send_until_acked(producer: KafkaProducer, message: Outgoing) -> None:
    """Produce until the broker acknowledges, backing off between tries (logged, never given up)."""
    tries = 0
    while True:
        try:
            await producer.send(
                message.topic, message.value, key=message.key, headers=message.headers, partition=message.partition
            )
            return
        except KafkaDeliveryError as exc:
            tries += 1
            wait = backoff_s(tries)
            log.error("event=produce_failed topic=%s error=%s retry_in_s=%.1f", message.topic, exc, wait)
            await asyncio.sleep(wait)


@dataclass(frozen=True, slots=True)
class Settled(Generic[T]):
    token: T
    acked_at: float
    """Wall-clock seconds when the acknowledgement arrived."""


class TrackedSender(Generic[T]):
    """Messages of one synchronous loop, each with a token, until the broker acknowledges them.

    Only the loop's thread calls these methods; the producer's thread only queues acknowledgements.
    A message the producer gave up on is produced again after `backoff_s` unless `still_wanted(token)` says
    its work was abandoned meanwhile (its partition revoked)."""

    def __init__(self, producer: KafkaProducer, still_wanted: Callable[[T], bool]) -> None:
        self._producer = producer
        self._still_wanted = still_wanted
        self._acks: queue.SimpleQueue[tuple[Outgoing, T, int, KafkaError | None, float]] = queue.SimpleQueue()
        self._failed: deque[tuple[float, Outgoing, T, int]] = deque()
        self.in_flight = 0

    def send(self, message: Outgoing, token: T, tries: int = 0) -> None:
        acks = self._acks

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            acks.put((message, token, tries, error, time.time()))

        self.in_flight += 1
        try:
            self._producer.produce(
                message.topic, message.value, key=message.key, headers=message.headers, on_delivery=on_delivery
            )
        except KafkaDeliveryError as exc:  # refused locally: as if the broker refused it
            self.in_flight -= 1
            self._retry_later(message, token, tries + 1, exc.error)

    def settle(self) -> list[Settled[T]]:
        """Acknowledged tokens since the last call; failures are scheduled to be produced again."""
        done: list[Settled[T]] = []
        while True:
            try:
                message, token, tries, error, acked_at = self._acks.get_nowait()
            except queue.Empty:
                return done
            self.in_flight -= 1
            if error is None:
                done.append(Settled(token, acked_at))
            else:
                self._retry_later(message, token, tries + 1, error)

    def resend_due(self) -> None:
        """Produce again the failed messages whose backoff is over (and whose work is still wanted)."""
        now = time.monotonic()
        for _ in range(len(self._failed)):
            not_before, message, token, tries = self._failed.popleft()
            if not self._still_wanted(token):
                continue
            if not_before > now:
                self._failed.append((not_before, message, token, tries))
                continue
            self.send(message, token, tries)

    def forget(self, abandoned: Callable[[T], bool]) -> None:
        """Drop the failed messages whose work was abandoned (their partition went to another member)."""
        self._failed = deque(item for item in self._failed if not abandoned(item[2]))

    def wait(self, timeout_s: float) -> list[Settled[T]]:
        """Flush and collect acknowledgements until nothing is in flight or `timeout_s` passed (stop, revoke)."""
        deadline = time.monotonic() + timeout_s
        if self.in_flight:
            self._producer.flush(timeout_s)
        done = self.settle()
        while self.in_flight and time.monotonic() < deadline:
            try:
                item = self._acks.get(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                continue
            self._acks.put(item)
            done += self.settle()
        return done

    @property
    def waiting(self) -> int:
        """Sent and not acknowledged, or failed and waiting to be produced again."""
        return self.in_flight + len(self._failed)

    def _retry_later(self, message: Outgoing, token: T, tries: int, error: KafkaError | None) -> None:
        wait = backoff_s(tries)
        log.error(
            "event=produce_failed topic=%s code=%s reason=%s retry_in_s=%g",
            message.topic,
            error.name() if error is not None else "local",
            error.str() if error is not None else "refused",
            wait,
        )
        self._failed.append((time.monotonic() + wait, message, token, tries))
