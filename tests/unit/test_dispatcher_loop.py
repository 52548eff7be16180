"""The dispatcher's real loop on the in-memory broker: fan-out, drop, route, park and commit paths in
milliseconds. The HTTP side is a stub deliverer answering what each test says (no network)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from delivery.deliverer import DeliveryResult
from delivery.endpoint import Endpoint
from delivery.wire_json import task_json
from dispatcher.routing import PARKS_HEADER
from dispatcher.subscriptions import SubscriptionIndex
from dispatcher.worker import Dispatcher
from hookfleet.kafka import Headers, message_headers
from hookfleet.settings import DispatcherSettings
from hookfleet.stream.offset_codec import decode_finished
from hookfleet.stream.record_batch import split_batch
from producer.publisher import build_event
from schemas.catalog import EventType
from schemas.models import DeliveryTask, Event, Outcome
from tests.support.memory_kafka import (
    MemoryBroker,
    MemoryConsumer,
    MemoryProducer,
    RebalancedCommitConsumer,
    headers_of,
)
from tests.support.waiting import wait_until_async


def result(outcome: Outcome = Outcome.SUCCESS, status: int | None = 200) -> DeliveryResult:
    error = None if outcome is Outcome.SUCCESS else f"HTTP {status}" if status else outcome.value
    return DeliveryResult(outcome, status, error, 3, "ok", datetime.now(UTC))


class StubDeliverer:
    """Answers each delivery with `answer(endpoint, event, attempt)`; records what was asked."""

    def __init__(self, answer: Callable[[Endpoint, Event, int], DeliveryResult] | None = None) -> None:
        self.answer = answer or (lambda *_: result())
        self.calls: list[tuple[str, str, int]] = []
        self.gate: asyncio.Event | None = None  # when set, deliveries of "wh_slow" wait for it

    async def deliver(
        self, endpoint: Endpoint, event: Event, attempt: int, body: bytes | None = None
    ) -> DeliveryResult:
        self.calls.append((endpoint.id, event.id, attempt))
        if endpoint.id == "wh_slow" and self.gate is not None:
            await self.gate.wait()
        return self.answer(endpoint, event, attempt)

    async def close(self) -> None:
        pass


def endpoint(webhook_id: str, account: str = "acct_1", active: bool = True, **extra: object) -> Endpoint:
    return Endpoint(
        id=webhook_id,
        account_id=account,
        url=f"https://example.com/{webhook_id}",
        events=frozenset(EventType),
        active=active,
        secret="whsec_test",
        **extra,  # type: ignore[arg-type]
    )


ROOT = Path(__file__).resolve().parents[2]
MISMATCH = {"role": "dispatcher", "reason": "account_mismatch"}
SETTINGS = DispatcherSettings(topic_prefix="u.", park_after_s=0.3, commit_interval_s=0.05, drain_timeout_s=0.2)


@asynccontextmanager
async def dispatcher_running(dispatcher: Dispatcher, broker: MemoryBroker) -> AsyncIterator[asyncio.Task[None]]:
    """`dispatcher` running on this loop while the block runs (for tests that act mid-run), then stopped:
    stopping commits every partition's final position (StageConsumer.close)."""
    stop = asyncio.Event()
    runner = asyncio.create_task(dispatcher.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        broker.wake()
        await asyncio.wait_for(runner, 5)


async def run_until(
    broker: MemoryBroker,
    index: SubscriptionIndex,
    deliverer: StubDeliverer,
    done: Callable[[], bool],
    settings: DispatcherSettings = SETTINGS,
    stages: tuple[str, ...] = ("fanout", "delivery"),
    producer: MemoryProducer | None = None,
) -> Dispatcher:
    consumers = {stage: MemoryConsumer(broker, settings.group_id) for stage in stages}
    producer = producer or MemoryProducer(broker)
    dispatcher = Dispatcher(settings, consumers, producer, deliverer, index)  # type: ignore[arg-type]
    async with dispatcher_running(dispatcher, broker):
        await wait_until_async(done, 10, "the dispatcher to reach the test's condition")
    return dispatcher


def tasks(broker: MemoryBroker, topic: str) -> list[DeliveryTask]:
    return [DeliveryTask.model_validate_json(m.value() or b"") for m in broker.messages(topic)]


def records(broker: MemoryBroker) -> list[dict[str, object]]:
    """Every attempt record, out of the batches that carry them (hookfleet/stream/record_batch.py)."""
    return [
        json.loads(value or b"")
        for m in broker.messages(SETTINGS.topics.attempts)
        for value in split_batch(m.value(), message_headers(m))
    ]


async def test_fan_out_writes_one_task_per_subscribed_webhook_keyed_by_webhook() -> None:
    # Given an account with two active webhooks and an inactive one
    broker = MemoryBroker()
    index = SubscriptionIndex([endpoint("wh_a"), endpoint("wh_b"), endpoint("wh_off", active=False)])
    event = build_event("acct_1", EventType.MESSAGE_SENT, {"n": 1})
    broker.append(SETTINGS.topics.events, event.body(), key="acct_1")
    # When only the fan-out stage runs
    deliverer = StubDeliverer()
    await run_until(broker, index, deliverer, lambda: len(broker.messages(SETTINGS.topics.deliveries)) == 2,
                    stages=("fanout",))  # fmt: skip
    # Then one attempt-1 task per active webhook, keyed by webhook id, and nothing delivered here
    written = broker.messages(SETTINGS.topics.deliveries)
    assert sorted((m.key(), DeliveryTask.model_validate_json(m.value() or b"").attempt) for m in written) == [
        (b"wh_a", 1),
        (b"wh_b", 1),
    ]
    assert all(DeliveryTask.model_validate_json(m.value() or b"").event == event for m in written)
    assert deliverer.calls == []
    events_partition = broker.messages(SETTINGS.topics.events)[0].partition() or 0
    assert broker.committed[SETTINGS.group_id][(SETTINGS.topics.events, events_partition)] == 1


async def test_failed_delivery_is_routed_to_the_first_delay_topic_and_logged() -> None:
    broker = MemoryBroker()
    index = SubscriptionIndex([endpoint("wh_a")])
    event = build_event("acct_1", EventType.MESSAGE_READ, {})
    broker.append(SETTINGS.topics.deliveries, task_json(event.body(), "wh_a", 1, 0), key="wh_a")
    deliverer = StubDeliverer(lambda *_: result(Outcome.HTTP_ERROR, 500))
    await run_until(broker, index, deliverer,
                    lambda: bool(broker.messages(SETTINGS.topics.retry_10s)) and bool(records(broker)),
                    stages=("delivery",))  # fmt: skip
    [retry] = tasks(broker, SETTINGS.topics.retry_10s)
    assert (retry.webhook_id, retry.attempt, retry.parked, retry.last_error) == ("wh_a", 2, False, "HTTP 500")
    [record] = records(broker)
    assert (record["attempt"], record["outcome"], record["next_step"]) == (1, "http_error", "retry")


async def test_task_of_a_disabled_webhook_is_dropped_with_a_log_row() -> None:
    broker = MemoryBroker()
    index = SubscriptionIndex([endpoint("wh_a", active=False)])
    event = build_event("acct_1", EventType.MESSAGE_READ, {})
    broker.append(SETTINGS.topics.deliveries, task_json(event.body(), "wh_a", 1, 0), key="wh_a")
    deliverer = StubDeliverer()
    await run_until(broker, index, deliverer, lambda: bool(records(broker)),
                    stages=("delivery",))  # fmt: skip
    assert deliverer.calls == []
    [record] = records(broker)
    assert (record["outcome"], record["next_step"], record["error"]) == ("dropped", "dropped", "webhook disabled")


@pytest.mark.parametrize("active", [True, False])
async def test_a_task_whose_event_belongs_to_another_account_is_diverted_to_invalid_not_signed(active: bool) -> None:
    # Given a webhook of acct_1 and, on its partition, a task for it carrying an event of acct_2 then one of acct_1
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_a", active=active)])
    forged = build_event("acct_2", EventType.MESSAGE_READ, {})
    own = build_event("acct_1", EventType.MESSAGE_READ, {})
    broker.append(SETTINGS.topics.deliveries, task_json(forged.body(), "wh_a", 1, 0), key="wh_a")
    broker.append(SETTINGS.topics.deliveries, task_json(own.body(), "wh_a", 1, 0), key="wh_a")
    counted = REGISTRY.get_sample_value("hookfleet_invalid_events_total", MISMATCH) or 0.0  # labels: one vocabulary
    deliverer = StubDeliverer()
    await run_until(broker, index, deliverer, lambda: bool(broker.messages(SETTINGS.topics.invalid))
                    and len(records(broker)) == 1, stages=("delivery",))  # fmt: skip
    # Then the forged task is never delivered nor logged in the webhook's log: it goes to the invalid topic
    assert [c[1] for c in deliverer.calls] == ([own.id] if active else [])
    assert [r["event"]["id"] for r in records(broker)] == [own.id]  # type: ignore[index]
    [moved] = broker.messages(SETTINGS.topics.invalid)
    reason = headers_of(moved)["reason"].decode()
    assert "acct_2" in reason and "wh_a" in reason and "account" in reason
    assert moved.value() == broker.messages(SETTINGS.topics.deliveries)[0].value()
    assert REGISTRY.get_sample_value("hookfleet_invalid_events_total", MISMATCH) == counted + 1
    assert broker.committed[SETTINGS.group_id][(SETTINGS.topics.deliveries, 0)] == 2


async def test_a_hanging_webhooks_queue_is_parked_and_others_keep_flowing() -> None:
    # Given a webhook that never answers (concurrency 1) and a healthy one on the same partition
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_slow"), endpoint("wh_fast")])
    settings = SETTINGS.model_copy(update={"per_endpoint_concurrency": 1})
    for n in range(5):
        for webhook_id in ("wh_slow", "wh_fast"):
            body = build_event("acct_1", EventType.MESSAGE_SENT, {"n": n}).body()
            broker.append(settings.topics.deliveries, task_json(body, webhook_id, 1, 0), key=webhook_id)
    deliverer = StubDeliverer()
    deliverer.gate = asyncio.Event()  # never set: wh_slow hangs

    def parked_and_delivered() -> bool:
        fast = sum(1 for c in deliverer.calls if c[0] == "wh_fast")
        return len(broker.messages(settings.topics.retry_10s)) == 4 and fast == 5

    await run_until(broker, index, deliverer, parked_and_delivered, settings=settings, stages=("delivery",))
    # Then the fast webhook got all 5, the hanging one 1 (its slot), the other 4 were parked, not tried
    assert sum(1 for c in deliverer.calls if c[0] == "wh_fast") == 5
    assert sum(1 for c in deliverer.calls if c[0] == "wh_slow") == 1
    parked = tasks(broker, settings.topics.retry_10s)
    assert len(parked) == 4 and all(t.parked and t.attempt == 1 and t.webhook_id == "wh_slow" for t in parked)


async def test_a_task_parked_again_goes_to_the_next_delay_topic_and_counts_its_parks() -> None:
    # Given a hanging webhook (concurrency 1) and, behind the one that takes its slot, a task parked before
    # (no header: an earlier version's park), one parked once and one parked twice
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_slow")])
    settings = SETTINGS.model_copy(update={"per_endpoint_concurrency": 1})
    deliveries = settings.topics.deliveries
    body = build_event("acct_1", EventType.MESSAGE_SENT, {}).body()
    for attempt, parked, parks in ((1, False, None), (1, True, None), (1, True, b"1"), (2, True, b"2")):
        headers: Headers | None = None if parks is None else [(PARKS_HEADER, parks)]
        broker.append(deliveries, task_json(body, "wh_slow", attempt, 0, parked=parked), key="wh_slow", headers=headers)
    deliverer = StubDeliverer()
    deliverer.gate = asyncio.Event()  # never set: wh_slow hangs
    retries = settings.topics.retries
    await run_until(broker, index, deliverer, lambda: sum(len(broker.messages(t)) for t in retries) == 3,
                    settings=settings, stages=("delivery",))  # fmt: skip
    # Then each was parked one delay further than before, its count one higher, its attempt unchanged
    again = {t: [(headers_of(m).get(PARKS_HEADER), DeliveryTask.model_validate_json(m.value() or b"").attempt)
                 for m in broker.messages(t)] for t in retries}  # fmt: skip
    assert again == {retries[0]: [(b"1", 1)], retries[1]: [(b"2", 1)], retries[2]: [(b"3", 2)]}
    assert len(deliverer.calls) == 1


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def fan_out_with_the_first_produce_failing() -> tuple[MemoryBroker, int]:
    """One traced event to two webhooks, the first task's produce refused by the broker; returns the broker
    and the events partition's committed offset (run here, and in a subprocess with tracing on)."""
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_a"), endpoint("wh_b")])
    event = build_event("acct_1", EventType.MESSAGE_SENT, {})
    broker.append(SETTINGS.topics.events, event.body(), key="acct_1", headers=[("traceparent", TRACEPARENT.encode())])
    producer = MemoryProducer(broker, acks="manual")  # acknowledged from another thread, as librdkafka does
    producer.fail_next(1)
    acking = threading.Event()

    def acknowledge() -> None:  # a thread of its own: no context of the loop's comes with the callbacks
        while not acking.wait(0.01):
            producer.ack_all()

    def done() -> bool:
        return len(broker.messages(SETTINGS.topics.deliveries)) == 2 and bool(broker.committed.get(SETTINGS.group_id))

    acks = threading.Thread(target=acknowledge, name="acks")
    acks.start()
    try:
        await run_until(broker, index, StubDeliverer(), done, stages=("fanout",), producer=producer)
    finally:
        acking.set()
        acks.join(5)
    return broker, broker.committed[SETTINGS.group_id][(SETTINGS.topics.events, 0)]


async def test_a_fan_out_task_the_broker_refused_is_produced_again_before_the_event_counts_as_done() -> None:
    broker, committed = await fan_out_with_the_first_produce_failing()
    assert sorted(t.webhook_id for t in tasks(broker, SETTINGS.topics.deliveries)) == ["wh_a", "wh_b"]
    assert committed == 1


def test_a_fan_out_task_produced_again_stays_in_the_events_trace() -> None:
    code = (
        "import asyncio\n"
        "from hookfleet import tracing\n"
        "assert tracing.ENABLED and tracing.setup('test')\n"
        "from tests.unit.test_dispatcher_loop import SETTINGS, TRACEPARENT, fan_out_with_the_first_produce_failing\n"
        "broker, _ = asyncio.run(fan_out_with_the_first_produce_failing())\n"
        "tasks = broker.messages(SETTINGS.topics.deliveries)\n"
        "parents = [tracing.traceparent_of(m.headers()) for m in tasks]\n"
        "assert len(parents) == 2 and all(p is not None for p in parents), parents\n"
        "assert {p.split('-')[1] for p in parents} == {TRACEPARENT.split('-')[1]}, parents\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",  # nothing listens there: give up exporting at exit at once
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60, cwd=ROOT)


async def test_commit_names_the_finished_offsets_above_an_unfinished_one_and_a_restart_skips_them() -> None:
    # Given one partition: a slow webhook's task first, then 5 of a fast one
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_slow"), endpoint("wh_fast")])
    deliveries = SETTINGS.topics.deliveries
    body = build_event("acct_1", EventType.MESSAGE_SENT, {}).body()
    broker.append(deliveries, task_json(body, "wh_slow", 1, 0), key="wh_slow")
    for _ in range(5):
        broker.append(deliveries, task_json(body, "wh_fast", 1, 0), key="wh_fast")
    settings = SETTINGS.model_copy(update={"park_after_s": 60.0})
    first = StubDeliverer()
    first.gate = asyncio.Event()  # the slow one is still open when the dispatcher stops
    await run_until(broker, index, first, lambda: len(first.calls) == 6, settings=settings, stages=("delivery",))
    # Then the commit stays at the unfinished offset 0 and its metadata names 1..5
    key = (deliveries, 0)
    assert broker.committed[SETTINGS.group_id][key] == 0
    assert decode_finished(0, broker.metadata[SETTINGS.group_id][key]) == {1, 2, 3, 4, 5}
    # When the next owner starts, it delivers only the unfinished one
    second = StubDeliverer()
    await run_until(broker, index, second, lambda: len(second.calls) >= 1, settings=settings, stages=("delivery",))
    assert [c[0] for c in second.calls] == ["wh_slow"]
    assert broker.committed[SETTINGS.group_id][key] == 6


@pytest.mark.parametrize("outcome", [Outcome.SUCCESS, Outcome.HTTP_ERROR])
async def test_an_offset_is_committed_only_once_its_outcome_is_acknowledged(outcome: Outcome) -> None:
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_a")])
    body = build_event("acct_1", EventType.MESSAGE_SENT, {}).body()
    broker.append(SETTINGS.topics.deliveries, task_json(body, "wh_a", 1, 0), key="wh_a")
    consumers = {"delivery": MemoryConsumer(broker, SETTINGS.group_id)}
    producer = MemoryProducer(broker, acks="manual")
    deliverer = StubDeliverer(lambda *_: result(outcome, 200 if outcome is Outcome.SUCCESS else 503))
    dispatcher = Dispatcher(SETTINGS, consumers, producer, deliverer, index)  # type: ignore[arg-type]
    key = (SETTINGS.topics.deliveries, 0)
    async with dispatcher_running(dispatcher, broker):
        await wait_until_async(lambda: producer.unacknowledged, 5, "the outcome to be produced")
        # The loop goes round (committing what is ready each time) for several commit intervals meanwhile.
        loop = asyncio.get_running_loop()
        polls, since = consumers["delivery"].polls, loop.time()
        await wait_until_async(
            lambda: consumers["delivery"].polls >= polls + 4 and loop.time() - since >= 4 * SETTINGS.commit_interval_s,
            5,
            "the delivery loop to go round for four commit intervals",
        )
        assert broker.committed.get(SETTINGS.group_id, {}).get(key) in (None, 0)
        producer.ack_all()
        await wait_until_async(
            lambda: broker.committed.get(SETTINGS.group_id, {}).get(key) == 1,
            5,
            lambda: f"offset 1 committed once acknowledged, got {broker.committed.get(SETTINGS.group_id)}",
        )


async def test_an_ordered_webhook_waiting_for_its_retry_does_not_hold_up_shutdown() -> None:
    # Given an ordered webhook whose first delivery fails, with a 30 s retry delay and a 5 s drain bound
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_a", ordering="fifo")])
    settings = SETTINGS.model_copy(update={"retry_delays_s": (30.0, 30.0, 30.0), "drain_timeout_s": 5.0})
    body = build_event("acct_1", EventType.MESSAGE_SENT, {}).body()
    broker.append(settings.topics.deliveries, task_json(body, "wh_a", 1, 0), key="wh_a")
    deliverer = StubDeliverer(lambda *_: result(Outcome.HTTP_ERROR, 500))
    consumers = {"delivery": MemoryConsumer(broker, settings.group_id)}
    dispatcher = Dispatcher(settings, consumers, MemoryProducer(broker), deliverer, index)  # type: ignore[arg-type]
    stop = asyncio.Event()
    runner = asyncio.create_task(dispatcher.run(stop))
    await wait_until_async(lambda: records(broker), 5, "the attempt record")
    # When the dispatcher is stopped while the retry waits in the lane
    stop.set()
    broker.wake()
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(runner, 5)
    # Then it stops at once, the attempt was logged, and the event stays uncommitted for the next owner
    assert asyncio.get_running_loop().time() - started < 2.5  # held up by the lane, it would take the 5 s bound
    assert [r["next_step"] for r in records(broker)] == ["retry"]
    assert broker.committed.get(settings.group_id, {}).get((settings.topics.deliveries, 0), 0) == 0


async def test_past_the_in_flight_bound_the_delivery_stage_stops_taking_tasks_without_pausing_partitions() -> None:
    # Given a bound of 4 and 12 tasks for a webhook that does not answer yet (parking far off)
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_slow")])
    settings = SETTINGS.model_copy(update={"max_in_flight": 4, "park_after_s": 60.0})
    for n in range(12):
        body = build_event("acct_1", EventType.MESSAGE_SENT, {"n": n}).body()
        broker.append(settings.topics.deliveries, task_json(body, "wh_slow", 1, 0), key="wh_slow")
    deliverer = StubDeliverer()
    deliverer.gate = asyncio.Event()
    consumer = MemoryConsumer(broker, settings.group_id)
    dispatcher = Dispatcher(settings, {"delivery": consumer}, MemoryProducer(broker), deliverer, index)  # type: ignore[arg-type,dict-item]
    async with dispatcher_running(dispatcher, broker):
        await wait_until_async(
            lambda: REGISTRY.get_sample_value("hookfleet_partitions_paused") == 1, 5, "the stage gated at the bound"
        )
        await asyncio.sleep(0.5)  # the scenario: gated for less than a poll interval; it must take nothing meanwhile
        # Then it took no more than the bound (a gated stage polls one message a second at most) and paused
        # no partition: librdkafka would purge a paused partition's prefetched messages, to fetch them again
        assert consumer.positions[(settings.topics.deliveries, 0)] <= 5
        assert consumer.paused == set()
        deliverer.gate.set()
        await wait_until_async(lambda: len(records(broker)) == 12, 10, "all 12 delivered once they answer")
    assert sorted(c[0] for c in deliverer.calls) == ["wh_slow"] * 12


async def test_a_commit_that_did_not_take_is_taken_again_though_nothing_more_arrives() -> None:
    # Given a delivery stage whose first commit fails as under a rebalance (the partition kept), and one task
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_a")])
    body = build_event("acct_1", EventType.MESSAGE_SENT, {}).body()
    broker.append(SETTINGS.topics.deliveries, task_json(body, "wh_a", 1, 0), key="wh_a")
    consumer = RebalancedCommitConsumer(broker, SETTINGS.group_id)
    consumers: dict[str, MemoryConsumer] = {"delivery": consumer}
    dispatcher = Dispatcher(SETTINGS, consumers, MemoryProducer(broker), StubDeliverer(), index)  # type: ignore[arg-type]
    async with dispatcher_running(dispatcher, broker) as runner:
        # When the task is delivered and its commit fails, with nothing more arriving
        await wait_until_async(lambda: consumer.failed == 1, 5, "the first commit to fail")
        # Then its offset is committed all the same while the dispatcher runs (not only at its stop)
        await wait_until_async(
            lambda: broker.committed.get(SETTINGS.group_id, {}).get((SETTINGS.topics.deliveries, 0)) == 1,
            5,
            lambda: f"offset 1 committed again, got {broker.committed.get(SETTINGS.group_id)}",
        )
        assert not runner.done()
