"""The stream runtime's offset ledger: the committed offset never passes unfinished work, each commit names
the finished offsets above it, and a new owner skips what its predecessor finished."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hookfleet.kafka import KafkaError, TopicPartition, failed_partitions
from hookfleet.stream.ledger import OffsetLedger
from hookfleet.stream.offset_codec import decode_finished

P0 = ("webhooks.retry.10s", 0)
P1 = ("webhooks.retry.10s", 1)


def owned(*partitions: tuple[str, int]) -> OffsetLedger:
    ledger = OffsetLedger()
    for partition in partitions:
        ledger.assign(partition)
    return ledger


def test_in_order_finishes_advance_one_by_one() -> None:
    ledger = owned(P0)
    a, b = ledger.begin(P0, 5), ledger.begin(P0, 6)
    assert ledger.finish(a) == 6
    assert ledger.finish(b) == 7
    assert ledger.pending_count == 0


def test_an_out_of_order_finish_waits_for_the_older_work_and_is_named_in_the_commit() -> None:
    ledger = owned(P0)
    claims = [ledger.begin(P0, offset) for offset in (5, 6, 7)]
    assert ledger.finish(claims[2]) is None
    assert ledger.finish(claims[1]) is None
    assert ledger.pending_count == 3
    ((partition, offset, metadata),) = ledger.commits()
    assert (partition, offset) == (P0, 5)
    assert decode_finished(5, metadata) == {6, 7}
    assert ledger.commits() == [], "nothing changed since"
    assert ledger.finish(claims[0]) == 8
    assert ledger.commits() == [(P0, 8, "")]


def test_gaps_in_offsets_do_not_block_the_mark() -> None:
    # Offsets never begun (transaction markers, compacted away) are not waited for.
    ledger = owned(P0)
    a, b = ledger.begin(P0, 5), ledger.begin(P0, 9)
    assert ledger.finish(a) == 6
    assert ledger.finish(b) == 10


def test_partitions_are_independent() -> None:
    ledger = owned(P0, P1)
    a, b = ledger.begin(P0, 1), ledger.begin(P1, 1)
    assert ledger.finish(b) == 2
    assert ledger.is_pending(a)
    assert [c[0] for c in ledger.commits(force=True)] == [P0, P1]
    assert ledger.commits([P1], force=True) == [(P1, 2, "")]


def test_a_late_finish_of_an_ended_ownership_counts_for_nothing() -> None:
    ledger = owned(P0)
    old = ledger.begin(P0, 1)
    ledger.revoke([P0])
    assert ledger.finish(old) is None and not ledger.is_pending(old)
    # The partition comes back: the same offset, begun again, is new work; the old claim still counts nothing
    ledger.assign(P0)
    new = ledger.begin(P0, 1)
    assert ledger.finish(old) is None
    assert ledger.is_pending(new)
    assert ledger.finish(new) == 2


def test_a_duplicate_finish_changes_nothing_and_beginning_an_unowned_partition_is_refused() -> None:
    ledger = owned(P0)
    a, b = ledger.begin(P0, 1), ledger.begin(P0, 2)
    assert ledger.finish(a) == 2
    assert ledger.finish(a) is None
    assert ledger.is_pending(b)
    with pytest.raises(KeyError, match="not owned"):
        ledger.begin(P1, 1)


def test_a_message_read_again_is_recognised_and_cannot_begin_twice() -> None:
    ledger = owned(P0)
    ledger.finish(ledger.begin(P0, 3))
    assert ledger.already_begun(P0, 3)
    assert not ledger.already_begun(P0, 4)
    with pytest.raises(ValueError, match="must increase"):
        ledger.begin(P0, 3)


def test_a_new_owner_skips_what_the_previous_one_recorded_as_finished() -> None:
    # Given an owner that finished 11 and 13 while 10 and 12 were in flight, and committed
    before = owned(P0)
    claims = {offset: before.begin(P0, offset) for offset in (10, 11, 12, 13)}
    before.finish(claims[11])
    before.finish(claims[13])
    ((_, offset, metadata),) = before.commits()
    # When the next owner takes the partition from that commit
    after = OffsetLedger()
    assert after.assign(P0, offset, metadata) == 2
    # Then it redoes 10 and 12 only
    assert [o for o in range(10, 14) if after.finished_before(P0, o)] == [11, 13]
    # And foreign or damaged metadata skips nothing
    assert OffsetLedger().assign(P0, 10, "something else") == 0
    assert OffsetLedger().assign(P0, 11, metadata) == 0, "metadata of another commit is not trusted"


def test_a_commit_that_failed_is_taken_again_at_its_current_point_and_a_revoked_one_is_not() -> None:
    ledger = owned(P0, P1)
    ledger.finish(ledger.begin(P0, 3))
    ledger.finish(ledger.begin(P1, 8))
    assert [(p, o) for p, o, _ in ledger.commits()] == [(P0, 4), (P1, 9)]
    assert ledger.commits() == []  # nothing changed since
    # P0 finished more meanwhile; both commits failed; P1 was then revoked
    ledger.finish(ledger.begin(P0, 4))
    ledger.commit_failed([P0, P1])
    ledger.revoke([P1])
    assert [(p, o) for p, o, _ in ledger.commits()] == [(P0, 5)]  # never the older point that failed
    ledger.commit_failed([P1])  # a late result for a partition gone: left to its next owner
    assert ledger.commits() == []


def test_a_commit_result_names_what_did_not_take() -> None:
    ok = TopicPartition("t", 0, 5)
    # librdkafka sets a partition's own error; confluent-kafka's TopicPartition does not let Python set it
    failed = SimpleNamespace(topic="t", partition=1, offset=6, error=KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
    assert failed_partitions(None, [ok, failed]) == [("t", 1)]  # type: ignore[list-item]
    assert failed_partitions(KafkaError(KafkaError.ILLEGAL_GENERATION), [ok]) == [("t", 0)]
    assert failed_partitions(KafkaError(KafkaError._NO_OFFSET), [ok]) == []
