"""Batched records: the wire form, the partition rule and when a batch leaves (no broker: a recording send)."""

from __future__ import annotations

import asyncio
import zlib

import pytest

from hookfleet.kafka import KafkaProducer
from hookfleet.stream.record_batch import (
    BATCH_HEADER,
    BatchFormatError,
    RecordBatcher,
    partition_for,
    split_batch,
)
from hookfleet.stream.sender import Outgoing
from recorder.batch import Unreadable, parse_records
from schemas.topics import Topics


def test_partition_for_is_crc32_of_the_key_modulo_the_partition_count() -> None:
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value (librdkafka's rd_crc32 too)
    assert partition_for("123456789", 6) == 0xCBF43926 % 6 == 2
    assert partition_for(b"123456789", 7) == 0xCBF43926 % 7 == 5


def test_split_batch_reads_both_forms_and_checks_the_count() -> None:
    assert split_batch(b'{"a":1}', None) == [b'{"a":1}']  # no header: one record (older writers, Test)
    assert split_batch(b'{"a":1}', [("traceparent", b"00-x")]) == [b'{"a":1}']
    assert split_batch(b'{"a":1}\n{"a":2}', [(BATCH_HEADER, b"2")]) == [b'{"a":1}', b'{"a":2}']
    with pytest.raises(BatchFormatError, match="says 3 records, the value holds 2"):
        split_batch(b"x\ny", [(BATCH_HEADER, "3")])
    with pytest.raises(BatchFormatError, match="must be a record count"):
        split_batch(b"x", [(BATCH_HEADER, "-1")])
    with pytest.raises(BatchFormatError):
        split_batch(b"", [(BATCH_HEADER, "0")])


def test_parse_records_diverts_a_bad_line_alone_and_a_miscounted_batch_whole() -> None:
    topics = Topics.with_prefix("unit.")
    parsed = parse_records(topics, topics.attempts, None, b'{"x":1}\nnot json', [(BATCH_HEADER, "2")])
    assert [type(p) for p in parsed] == [Unreadable, Unreadable]
    assert [p.value for p in parsed if isinstance(p, Unreadable)] == [b'{"x":1}', b"not json"]
    [whole] = parse_records(topics, topics.attempts, None, b"a\nb", [(BATCH_HEADER, "5")])
    assert isinstance(whole, Unreadable) and whole.value == b"a\nb"
    assert "says 5 records" in whole.invalid.reason


class Recording:
    """A send that records messages and lets the test decide when the broker acknowledges."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []
        self.release = asyncio.Event()

    async def __call__(self, _producer: KafkaProducer, message: Outgoing) -> None:
        self.sent.append(message)
        await self.release.wait()


def _batcher(send: Recording, **limits: int | float) -> RecordBatcher:
    return RecordBatcher(None, "t.attempts", 6, send=send, **limits)  # type: ignore[arg-type]


async def test_records_of_one_partition_within_the_linger_travel_as_one_message_acknowledged_together() -> None:
    send = Recording()
    batcher = _batcher(send, linger_s=0.02)
    same = [k for k in (f"wh_{n}" for n in range(40)) if partition_for(k, 6) == 2][:3]
    other = next(k for k in (f"wh_{n}" for n in range(40)) if partition_for(k, 6) != 2)
    adds = [asyncio.create_task(batcher.add(f"r{i}".encode(), key)) for i, key in enumerate([*same, other])]
    await asyncio.sleep(0.05)
    assert sorted((m.partition, m.value) for m in send.sent) == sorted(
        [(2, b"r0\nr1\nr2"), (partition_for(other, 6), b"r3")]
    )
    assert all(m.headers == [(BATCH_HEADER, str(len(m.value.split(b"\n"))))] for m in send.sent)
    assert all(m.key is None and m.topic == "t.attempts" for m in send.sent)
    assert not any(a.done() for a in adds)  # nothing returns before the broker has it
    send.release.set()
    await asyncio.wait_for(asyncio.gather(*adds), 1)
    assert batcher.messages == 2


async def test_a_batch_leaves_at_its_record_or_byte_limit_and_at_flush() -> None:
    send = Recording()
    send.release.set()
    batcher = _batcher(send, linger_s=60, max_records=2, max_bytes=10)
    await asyncio.wait_for(asyncio.gather(batcher.add(b"a", "k"), batcher.add(b"b", "k")), 1)  # full at 2
    assert [m.value for m in send.sent] == [b"a\nb"]
    first = asyncio.create_task(batcher.add(b"123456", "k"))
    await asyncio.sleep(0)
    second = asyncio.create_task(batcher.add(b"7890", "k"))  # 7 + 5 bytes > 10: the open batch leaves first
    await asyncio.wait_for(first, 1)
    assert [m.value for m in send.sent] == [b"a\nb", b"123456"]
    assert batcher.open_records == 1
    batcher.flush()
    await asyncio.wait_for(second, 1)
    assert [m.value for m in send.sent] == [b"a\nb", b"123456", b"7890"]


async def test_a_send_given_up_at_a_stop_leaves_its_records_unacknowledged() -> None:
    send = Recording()
    batcher = _batcher(send, linger_s=0.0)
    add = asyncio.create_task(batcher.add(b"a", "k"))
    await asyncio.sleep(0.01)
    for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and t is not add]:
        task.cancel()  # the stop cancels the sending task
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(add, 1)
