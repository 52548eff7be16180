"""Consumer lag as the broker sees it, in messages and in seconds, exported by the recorder process.

Why not the consumers' own lag (`hookfleet_consumer_lag`): a consumer reports lag only for partitions it
fetches, so the figure freezes while partitions are paused at saturation, and vanishes with the consumer.
Here one reader asks the broker, every `interval_s`:

1. the end offset of every partition (one ListOffsets request for all of them),
2. each watched group's committed offsets (one OffsetFetch per group, through a consumer of that group
   that never subscribes: the admin client's own OffsetFetch can abort the process during a broker restart),
3. for each partition a group is behind on, the message at its committed offset — the oldest one the
   group has not finished — with a plain consumer that is assigned those offsets, reads one message per
   partition and never joins a group or commits.

From those: `hookfleet_group_lag_seconds` = now - timestamp of that oldest message (0 when caught up), the
signal the dispatcher scales on and the lag alerts read; and for the delay topics, where waiting is the
point, `hookfleet_retry_overdue_seconds` = now - due_at of that oldest task, which grows only when the
retry scheduler does not hand due tasks back (stalled, or not running). The same age per partition,
`hookfleet_group_partition_lag_seconds` (delay topics included), set against each topic's `retention.ms`
(`hookfleet_topic_retention_seconds`, 4. below), shows a group about to lose messages the broker deletes
before it reads them, and names the partition that is behind.
`hookfleet_lag_export_timestamp_seconds` is set after every complete round, so a stale export (a hung
read, a dead thread) shows although the last values stay exported. Cost per round: four small requests
(4. is one DescribeConfigs for every watched topic) plus one fetch per lagging partition; measured with
all 42 partitions of the 7 watched topics lagging (6 partitions each, local broker, 2-core machine):
16 ms CPU and 0.3 s wall per round (2.4 s for the first, which finds the coordinators), i.e. ~0.1 % of a
core at the default 15 s.

4. each watched topic's `retention.ms`. A broker that refuses it (an ACL without DESCRIBE_CONFIGS) leaves
   the retention series unset and the lag export whole: the retention alert is then silent, not wrong.

Series are labelled with the unprefixed group and topic names, so rules and dashboards are the same for
every HOOKFLEET_TOPIC_PREFIX. Labels are bounded by configuration: the groups of HOOKFLEET_LAG_GROUPS,
their topics, and each topic's partitions.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupTopicPartitions,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec, ResourceType  # type: ignore[attr-defined]

from hookfleet.kafka import client_config, consumer_config
from hookfleet.metrics import (
    GROUP_LAG_MESSAGES,
    GROUP_LAG_SECONDS,
    GROUP_PARTITION_LAG_SECONDS,
    LAG_EXPORT_ERRORS,
    LAG_EXPORT_TIMESTAMP,
    RETRY_OVERDUE,
    TOPIC_END_OFFSET,
    TOPIC_RETENTION_SECONDS,
)
from schemas.topics import Topics

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0
HEAD_READ_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Head:
    """The oldest message a group has not committed past."""

    written_ms: int | None
    due_at_ms: int | None


@dataclass(frozen=True, slots=True)
class PartitionLag:
    messages: int
    seconds: float
    overdue_s: float


def partition_lag(end: int, committed: int, head: Head | None, now_ms: int) -> PartitionLag:
    """Lag of one partition. `committed` < 0 means no commit yet (the group starts at the head)."""
    behind = end - committed if committed >= 0 else end
    if behind <= 0 or head is None:
        return PartitionLag(max(0, behind), 0.0, 0.0)
    seconds = max(0.0, (now_ms - head.written_ms) / 1000) if head.written_ms is not None else 0.0
    overdue = max(0.0, (now_ms - head.due_at_ms) / 1000) if head.due_at_ms is not None else 0.0
    return PartitionLag(behind, seconds, overdue)


def _due_at_ms(value: bytes | None) -> int | None:
    try:
        due = json.loads(value or b"").get("due_at")
    except (ValueError, AttributeError):
        return None
    return due if isinstance(due, int) else None


class BrokerLag:
    def __init__(self, bootstrap: str, prefix: str, groups: Mapping[str, Sequence[str]]) -> None:
        self._prefix = prefix
        self._groups = {group: list(topics) for group, topics in groups.items()}
        self._retry_topics = set(Topics().retries)
        self._admin = AdminClient(client_config(bootstrap))
        self._bootstrap = bootstrap
        # Committed offsets through a consumer of each group that never subscribes (so never joins it):
        # the admin client's OffsetFetch aborts the process when its coordinator lookup times out while a
        # broker restarts (librdkafka issue 4605, `rd_kafka_enq_once_del_source_return` assertion).
        self._committers: dict[str, Consumer] = {}
        self._retention_readable = True  # logs the first refusal and the recovery, not every round
        # Never subscribes, never commits: assigned only to read the heads, then unassigned.
        self._reader = Consumer(
            consumer_config(
                bootstrap,
                f"{prefix}hookfleet-lag-reader",
                **{"enable.auto.commit": False, "max.partition.fetch.bytes": 65536, "fetch.wait.max.ms": 100},
            )
        )

    def run(self, stop: threading.Event, interval_s: float) -> None:
        log.info("event=broker_lag_started interval_s=%g groups=%s", interval_s, ",".join(self._groups))
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.read_once()
            except Exception as exc:  # a failed round must not end the thread: the next one may work
                LAG_EXPORT_ERRORS.inc()
                log.warning("event=broker_lag_failed error=%s reason=%s", type(exc).__name__, exc)
            stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
        self._reader.close()
        for committer in self._committers.values():
            committer.close()

    def read_once(self) -> None:
        topics = sorted({t for ts in self._groups.values() for t in ts})
        partitions = self._partitions(topics)
        ends = self._end_offsets(partitions)
        for topic in topics:
            TOPIC_END_OFFSET.labels(topic).set(sum(o for (t, _), o in ends.items() if t == topic))
        now_ms = time.time_ns() // 1_000_000
        for group, group_topics in self._groups.items():
            committed = self._committed(group, [tp for tp in partitions if tp[0] in group_topics])
            behind = {tp: c for tp, c in committed.items() if ends.get(tp, 0) > max(c, 0)}
            heads = self._heads(behind)
            for topic in group_topics:
                lags = []
                for tp in partitions:
                    if tp[0] != topic:
                        continue
                    lag = partition_lag(ends.get(tp, 0), committed.get(tp, -1), heads.get(tp), now_ms)
                    GROUP_PARTITION_LAG_SECONDS.labels(group, topic, str(tp[1])).set(lag.seconds)
                    lags.append(lag)
                GROUP_LAG_MESSAGES.labels(group, topic).set(sum(lag.messages for lag in lags))
                if topic in self._retry_topics:
                    # Waiting in a delay topic is the design: only overdue tasks are news.
                    RETRY_OVERDUE.labels(topic).set(max((lag.overdue_s for lag in lags), default=0.0))
                else:
                    GROUP_LAG_SECONDS.labels(group, topic).set(max((lag.seconds for lag in lags), default=0.0))
        self._export_retention(topics)
        LAG_EXPORT_TIMESTAMP.set(time.time())

    # -------------------------------------------------------------------------------------- broker reads

    def _export_retention(self, topics: list[str]) -> None:
        try:
            retention = self._retention_s(topics)
        except Exception as exc:  # the lag itself was read: a refused DescribeConfigs must not hide it
            if self._retention_readable:
                log.warning("event=topic_retention_unreadable error=%s reason=%s", type(exc).__name__, exc)
            self._retention_readable = False
            return
        if not self._retention_readable:
            log.info("event=topic_retention_readable")
        self._retention_readable = True
        for topic, seconds in retention.items():
            TOPIC_RETENTION_SECONDS.labels(topic).set(seconds)

    def _retention_s(self, topics: list[str]) -> dict[str, float]:
        """Each topic's retention.ms in seconds; a topic kept forever (-1) is left out."""
        if not topics:
            return {}
        resources = [ConfigResource(ResourceType.TOPIC, self._prefix + t) for t in topics]
        futures = self._admin.describe_configs(resources, request_timeout=REQUEST_TIMEOUT_S)
        found = {}
        for resource, future in futures.items():
            entry = future.result().get("retention.ms")
            if entry is not None and entry.value is not None and int(entry.value) > 0:
                found[str(resource.name).removeprefix(self._prefix)] = int(entry.value) / 1000
        return found

    def _partitions(self, topics: list[str]) -> list[tuple[str, int]]:
        metadata = self._admin.list_topics(timeout=REQUEST_TIMEOUT_S)
        found = []
        for topic in topics:
            meta = metadata.topics.get(self._prefix + topic)
            if meta is None or meta.error is not None:
                continue
            found += [(topic, p) for p in meta.partitions]
        return found

    def _end_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        request = {TopicPartition(self._prefix + t, p): OffsetSpec.latest() for t, p in partitions}  # type: ignore[no-untyped-call]
        futures = self._admin.list_offsets(request, request_timeout=REQUEST_TIMEOUT_S)
        return {(tp.topic.removeprefix(self._prefix), tp.partition): f.result().offset for tp, f in futures.items()}

    def _committed(self, group: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        request = ConsumerGroupTopicPartitions(
            self._prefix + group, [TopicPartition(self._prefix + t, p) for t, p in partitions]
        )
        committer = self._committers.get(group)
        if committer is None:
            committer = self._committers[group] = Consumer(
                consumer_config(self._bootstrap, request.group_id, **{"enable.auto.commit": False})
            )
        found = committer.committed(request.topic_partitions or [], timeout=REQUEST_TIMEOUT_S)
        return {
            (tp.topic.removeprefix(self._prefix), tp.partition): (tp.offset if tp.offset != OFFSET_INVALID else -1)
            for tp in found
        }

    def _heads(self, behind: dict[tuple[str, int], int]) -> dict[tuple[str, int], Head]:
        """The message at each committed offset (at the log start when the group never committed)."""
        if not behind:
            return {}
        self._reader.assign(
            [
                TopicPartition(self._prefix + t, p, c) if c >= 0 else TopicPartition(self._prefix + t, p)
                for (t, p), c in behind.items()
            ]
        )
        heads: dict[tuple[str, int], Head] = {}
        deadline = time.monotonic() + HEAD_READ_TIMEOUT_S
        try:
            while len(heads) < len(behind) and time.monotonic() < deadline:
                for message in self._reader.consume(len(behind), timeout=0.2):
                    if message.error() is not None or message.topic() is None or message.partition() is None:
                        continue
                    key = (str(message.topic()).removeprefix(self._prefix), int(message.partition() or 0))
                    if key in heads:
                        continue
                    kind, written = message.timestamp()
                    heads[key] = Head(
                        written_ms=written if kind != TIMESTAMP_NOT_AVAILABLE else None,
                        due_at_ms=_due_at_ms(message.value()) if key[0] in self._retry_topics else None,
                    )
        finally:
            self._reader.unassign()
        return heads


def start_exporter(
    bootstrap: str, prefix: str, groups: Mapping[str, Sequence[str]], interval_s: float
) -> threading.Event:
    """Run the exporter on a daemon thread; returns the stop event (set it to end the thread)."""
    stop = threading.Event()
    exporter = BrokerLag(bootstrap, prefix, groups)
    threading.Thread(target=exporter.run, args=(stop, interval_s), name="broker-lag", daemon=True).start()
    return stop
