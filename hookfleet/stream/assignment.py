"""Taking over assigned partitions: every consumer starts its ledger from each partition's last commit."""

from __future__ import annotations

import logging

from hookfleet import metrics
from hookfleet.kafka import Consumer, TopicPartition
from hookfleet.stream.ledger import OffsetLedger

log = logging.getLogger(__name__)

COMMITTED_TIMEOUT_S = 10.0


def own_from_last_commits(ledger: OffsetLedger, consumer: Consumer, partitions: list[TopicPartition], role: str) -> int:
    """Own `partitions` in `ledger`, each from its last commit, whose metadata names the offsets finished
    above it (skipped when read again: `OffsetLedger.claim`). Called from the assign callback. Returns how
    many will be skipped, and counts them (`hookfleet_offsets_skipped_on_restart_total`).

    When the commits cannot be read, the partitions are owned with nothing to skip: nothing is lost, the
    finished work is only done again."""
    if not partitions:
        return 0
    bare = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    try:
        committed: list[TopicPartition] = consumer.committed(bare, timeout=COMMITTED_TIMEOUT_S)
    except Exception as exc:  # librdkafka's, or a closed consumer's
        log.warning("event=committed_metadata_unavailable role=%s error=%r (nothing skipped)", role, exc)
        committed = bare
    skipping = sum(ledger.assign((tp.topic, tp.partition), tp.offset, tp.metadata) for tp in committed)
    metrics.SKIPPED_ON_RESTART.inc(skipping)
    return skipping
