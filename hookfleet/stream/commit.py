"""Committing a ledger's offsets, and taking again a commit that did not take.

A commit fails when the group rebalances under it (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS) or its
coordinator moves. With cooperative rebalancing the member usually keeps the partition, and when nothing more
is finished there no later commit would carry its offset: the group would show lag for good, and a restart
would do that work again. So every role commits through `commit_offsets`, and a commit that failed, at once or
in the asynchronous result (`GroupConsumer.on_commit_failed`), marks its partitions changed in the ledger: the
role's next commit takes them again. A partition revoked meanwhile is left to its new owner; the ledger only
ever commits its current commit point, so a retaken commit never moves a partition back.
"""

from __future__ import annotations

import logging

from hookfleet.kafka import (
    Consumer,
    GroupConsumer,
    KafkaError,
    KafkaException,
    PartitionKey,
    TopicPartition,
    failed_partitions,
)
from hookfleet.stream.ledger import OffsetLedger

log = logging.getLogger(__name__)


def retake_failed_commits(consumer: Consumer, ledger: OffsetLedger) -> None:
    """Let `consumer`'s asynchronous commit results mark failed partitions changed in `ledger` again."""
    if isinstance(consumer, GroupConsumer):
        consumer.on_commit_failed = ledger.commit_failed


def ledger_offsets(commits: list[tuple[PartitionKey, int, str]]) -> list[TopicPartition]:
    """`OffsetLedger.commits` as the offsets (with their finished-offset metadata) a commit takes."""
    return [TopicPartition(partition[0], partition[1], offset, metadata) for partition, offset, metadata in commits]


def commit_offsets(
    consumer: Consumer, ledger: OffsetLedger, offsets: list[TopicPartition], *, asynchronous: bool, role: str
) -> None:
    """Commit `offsets` (from `ledger_offsets`). A failure is logged and its partitions are taken again by
    the next commit."""
    if not offsets:
        return
    try:
        if asynchronous:
            result = consumer.commit(offsets=offsets, asynchronous=True)
        else:
            result = consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        failed = failed_partitions(error, offsets)
        reason = f"{error.name()}: {error.str()}"
    else:
        failed = failed_partitions(None, result or [])
        reason = "per-partition errors"
    if failed:
        ledger.commit_failed(failed)
        log.warning(
            "event=offset_commit_failed role=%s partitions=%d reason=%s (taken again)", role, len(failed), reason
        )
