"""Hostile filters and hostile events through the dispatcher's real fan-out loop on the in-memory broker: a
filter that cannot answer leaves its webhook out and is counted, the other webhooks get the event, and the
partition goes on (nothing diverted, nothing raised)."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from dispatcher.subscriptions import SubscriptionIndex
from producer.publisher import build_event
from schemas.catalog import EventType
from tests.support.memory_kafka import MemoryBroker
from tests.unit.test_dispatcher_loop import SETTINGS, StubDeliverer, endpoint, run_until, tasks

TOPICS = SETTINGS.topics
FILTERS = {
    "wh_all": None,
    "wh_regex": 'data.s.matches("(")',  # an invalid pattern: fails on every event holding `s`
    "wh_mismatch": 'data.n < "1"',  # int against string: no overload
    "wh_refused": 'type == "\u202e"',  # saved before the character rule: no longer compiles
    "wh_separator": 'data.s == "a\\u2028b"',
    "wh_huge": "data.x > 0",
}


def _errors() -> float:
    return REGISTRY.get_sample_value("hookfleet_filter_errors_total", {"event_type": "message.sent"}) or 0.0


async def test_filters_that_cannot_answer_leave_their_webhook_out_and_the_partition_goes_on() -> None:
    broker = MemoryBroker()
    index = SubscriptionIndex([endpoint(w, filter=f) for w, f in FILTERS.items()])
    deep: Any = 1
    for _ in range(100):
        deep = {"a": deep}
    data: list[dict[str, Any]] = [{"x": 2**70}, {"deep": deep, "n": 1}, {"s": "a\u2028b"}, {"x": 1}]
    events = [build_event("acct_1", EventType.MESSAGE_SENT, d) for d in data]
    for event in events:
        broker.append(TOPICS.events, event.body(), key="acct_1")
    before = _errors()
    await run_until(broker, index, StubDeliverer(), lambda: len(broker.messages(TOPICS.deliveries)) == 6,
                    stages=("fanout",))  # fmt: skip
    got = sorted((t.webhook_id, data.index(t.event.data)) for t in tasks(broker, TOPICS.deliveries))
    assert got == [("wh_all", 0), ("wh_all", 1), ("wh_all", 2), ("wh_all", 3), ("wh_huge", 3), ("wh_separator", 2)]
    assert broker.messages(TOPICS.invalid) == []
    # the five filters fail on the first event (x beyond 64 bits: CEL cannot hold the event's data), then
    # each fails where its field is missing or its types do not meet, and wh_refused on every event
    assert _errors() - before == 5 + 5 + 4 + 4
