"""EventPublisher refuses an oversized event with a typed error before anything reaches the producer."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from hookfleet.settings import CommonSettings
from producer.publisher import MAX_EVENT_BYTES, EventPublisher, EventTooLarge, build_event, first_publish
from schemas.idempotency import InvalidIdempotencyKey


class RecordingProducer:
    """Stands in for KafkaProducer: records what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def produce(self, topic: str, value: bytes, **_: Any) -> None:
        self.sent.append(value)

    def send_sync(self, topic: str, value: bytes, **_: Any) -> None:
        self.sent.append(value)

    def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
        self.sent.append(value)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _event(data_bytes: int) -> Any:
    return build_event("acct_1", "message.read", {"blob": "x" * data_bytes})


def test_an_event_at_the_limit_is_sent_and_one_byte_more_is_refused() -> None:
    producer = RecordingProducer()
    publisher = EventPublisher(CommonSettings(), producer=producer)  # type: ignore[arg-type]
    overhead = len(_event(0).body())
    publisher.publish(_event(MAX_EVENT_BYTES - overhead))
    assert len(producer.sent[0]) == MAX_EVENT_BYTES
    too_big = _event(MAX_EVENT_BYTES - overhead + 1)
    with pytest.raises(EventTooLarge) as caught:
        publisher.publish(too_big)
    assert (caught.value.size, caught.value.limit) == (MAX_EVENT_BYTES + 1, MAX_EVENT_BYTES)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(EventTooLarge):
        publisher.publish_and_wait(too_big)
    with pytest.raises(EventTooLarge):
        asyncio.run(publisher.publish_async(too_big))
    with pytest.raises(EventTooLarge):  # a batch is checked whole: nothing of it is sent
        asyncio.run(publisher.publish_many_async([_event(10), too_big]))
    assert len(producer.sent) == 1


class HeaderRecordingProducer(RecordingProducer):
    def __init__(self) -> None:
        super().__init__()
        self.headers: list[object] = []

    def produce(self, topic: str, value: bytes, **kwargs: Any) -> None:
        self.headers.append(kwargs.get("headers"))
        super().produce(topic, value)


def test_an_idempotency_key_travels_as_the_header_and_an_unusable_one_is_refused_before_sending() -> None:
    producer = HeaderRecordingProducer()
    publisher = EventPublisher(CommonSettings(), producer=producer)  # type: ignore[arg-type]
    publisher.publish(_event(1), idempotency_key="order-1")
    publisher.publish(_event(1))
    assert producer.headers == [[("idempotency-key", b"order-1")], None]
    with pytest.raises(InvalidIdempotencyKey, match="header idempotency-key: must be 1-200 bytes"):
        publisher.publish(_event(1), idempotency_key="k" * 201)
    assert len(producer.sent) == 2


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "must be 1-200 bytes (got 0)"),
        ("k" * 200 + "\u00e9", "must be 1-200 bytes (got 202)"),
        ("order\u20281", "must not contain U+2028 (LINE SEPARATOR)"),
        ("order\x00", "must not contain U+0000 (NULL)"),
        ("\u202eorder", "must not contain U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("order\ud800", "must be UTF-8"),
    ],
)
def test_an_unusable_idempotency_key_is_refused_before_sending_naming_the_header(key: str, message: str) -> None:
    producer = HeaderRecordingProducer()
    publisher = EventPublisher(CommonSettings(), producer=producer)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdempotencyKey, match=re.escape(f"header idempotency-key: {message}")):
        publisher.publish(_event(1), idempotency_key=key)
    assert producer.sent == []


@pytest.mark.parametrize(("key", "message"), [("order\u20281", "must not contain U+2028"), ("\udcff", "must be UTF-8")])
def test_looking_up_an_unusable_key_is_refused_before_asking_a_broker(key: str, message: str) -> None:
    nowhere = CommonSettings(kafka_bootstrap_servers="127.0.0.1:9")  # nothing listens: a lookup would hang, then fail
    with pytest.raises(InvalidIdempotencyKey, match=re.escape(f"header idempotency-key: {message}")):
        first_publish("acct_1", key, nowhere)
