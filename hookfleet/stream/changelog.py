"""Reading a changelog partition from its start to its end: how a stage restores per-partition state.

A stateful stage keeps its state per input partition in memory and writes every change to a compacted
topic with the same partition numbers; when it is assigned input partition n it reads partition n of the
changelog up to the end offset it had when the read began. Whatever a previous owner wrote and had
acknowledged is below that end, because the previous owner finished (and so committed) nothing before its
changelog record was acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from hookfleet.kafka import Consumer, KafkaException, TopicPartition, client_config

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 120.0
"""A restore that makes no progress for this long fails (the broker is unreachable): the stage must not
go on without its state."""


class ChangelogUnavailable(RuntimeError):
    """The changelog partition could not be read to its end; the message names the topic and partition."""


def read_partition(
    bootstrap: str, topic: str, partition: int, last: int | None = None, timeout_s: float = READ_TIMEOUT_S
) -> Iterator[tuple[bytes | None, bytes | None]]:
    """Every (key, value) of `topic`'s `partition`, in offset order, up to its end offset at the start;
    with `last`, only the records of the last `last` offsets (a state bounded to its newest `last` entries,
    each written once, needs no more: the restore's time is then bounded too).

    A topic or partition that does not exist is read as empty, with an error logged (`hookfleet topics
    ensure` creates it): the state starts empty and the stage's writes to it are retried until it exists."""
    consumer = Consumer(
        client_config(
            bootstrap,
            **{"group.id": "hookfleet-changelog-restore", "enable.auto.commit": False, "auto.offset.reset": "earliest"},
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None or partition not in metadata.partitions:
            log.error(
                "event=changelog_missing topic=%s partition=%d hint='run hookfleet topics ensure' action=start_empty",
                topic,
                partition,
            )
            return
        tp = TopicPartition(topic, partition)
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        except KafkaException as exc:
            raise ChangelogUnavailable(f"changelog {topic} partition {partition}: {exc}") from exc
        start = low if last is None else max(low, high - last)
        if high <= start:
            return
        consumer.assign([TopicPartition(topic, partition, start)])
        progress_at = time.monotonic()
        position = start
        while position < high:
            messages = consumer.consume(1000, 0.2)
            for message in messages:
                if message.error() is not None:
                    continue
                position = (message.offset() or 0) + 1
                if position > high:
                    return
                yield message.key(), message.value()
            if messages:
                progress_at = time.monotonic()
                continue
            # Nothing came: compaction may have removed the records up to the end.
            [where] = consumer.position([tp])
            position = max(position, where.offset)
            if time.monotonic() - progress_at > timeout_s:
                raise ChangelogUnavailable(
                    f"changelog {topic} partition {partition}: no progress at offset {position} of {high}"
                    f" within {timeout_s:g}s (is the broker reachable?)"
                )
    finally:
        consumer.close()
