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

from hookfleet.kafka import Consumer, GroupConsumer, KafkaError, KafkaException, TopicPartition, failed_partitions
from hookfleet.stream.ledger import OffsetLedger

log = logging.getLogger(__name__)


def retake_failed_commits(consumer: Consumer, ledger: OffsetLedger) -> None:
    """Let `consumer`'s asynchronous commit results mark failed partitions changed in `ledger` again."""
    if isinstance(consumer, GroupConsumer):
        consumer.on_commit_failed = ledger.commit_failed


def commit_offsets(
    consumer: Consumer, ledger: OffsetLedger, offsets: list[TopicPartition], *, asynchronous: bool, role: str
) -> bool:
    """Commit `offsets` (taken from `ledger.commits`); True when the commit was sent (asynchronous) or took
    (synchronous). A failure is logged and its partitions are taken again by the next commit."""
    if not offsets:
        return True
    try:
        if asynchronous:
            result = consumer.commit(offsets=offsets, asynchronous=True)
        else:
            result = consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        failed = failed_partitions(error, offsets)
        if not failed:
            return True
        reason = f"{error.name()}: {error.str()}"
    else:
        failed = failed_partitions(None, result or [])
        if not failed:
            return True
        reason = "per-partition errors"
    ledger.commit_failed(failed)
    log.warning("event=offset_commit_failed role=%s partitions=%d reason=%s (taken again)", role, len(failed), reason)
    return False
