"""HandOffLedger: the stored offset never passes a hand-off the broker has not acknowledged."""

from __future__ import annotations

import pytest

from retry_scheduler.ledger import HandOffLedger

P0 = ("webhooks.retry.10s", 0)
P1 = ("webhooks.retry.10s", 1)


def test_in_order_acks_advance_one_by_one() -> None:
    ledger = HandOffLedger()
    ledger.start(P0, 5)
    ledger.start(P0, 6)
    assert ledger.ack(P0, 5) == 6
    assert ledger.ack(P0, 6) == 7
    assert ledger.pending_count == 0


def test_out_of_order_ack_waits_for_the_older_hand_off() -> None:
    ledger = HandOffLedger()
    for offset in (5, 6, 7):
        ledger.start(P0, offset)
    assert ledger.ack(P0, 7) is None
    assert ledger.ack(P0, 6) is None
    assert ledger.pending_count == 1
    assert ledger.ack(P0, 5) == 8


def test_gaps_in_offsets_do_not_block_the_mark() -> None:
    # Offsets skipped by the consumer (held behind, or transaction markers) are never started.
    ledger = HandOffLedger()
    ledger.start(P0, 5)
    ledger.start(P0, 9)
    assert ledger.ack(P0, 5) == 6
    assert ledger.ack(P0, 9) == 10


def test_partitions_are_independent() -> None:
    ledger = HandOffLedger()
    ledger.start(P0, 1)
    ledger.start(P1, 1)
    assert ledger.ack(P1, 1) == 2
    assert ledger.is_pending(P0, 1)


def test_revoked_partition_ignores_late_acks() -> None:
    ledger = HandOffLedger()
    ledger.start(P0, 1)
    ledger.revoke([P0])
    assert ledger.ack(P0, 1) is None
    assert not ledger.is_pending(P0, 1)
    assert not ledger.already_started(P0, 1)


def test_duplicate_ack_and_unknown_offset_change_nothing() -> None:
    ledger = HandOffLedger()
    ledger.start(P0, 1)
    ledger.start(P0, 2)
    assert ledger.ack(P0, 1) == 2
    assert ledger.ack(P0, 1) is None
    assert ledger.ack(P0, 42) is None
    assert ledger.is_pending(P0, 2)


def test_a_message_read_again_is_recognised_and_cannot_start_twice() -> None:
    ledger = HandOffLedger()
    ledger.start(P0, 3)
    ledger.ack(P0, 3)
    assert ledger.already_started(P0, 3)
    assert not ledger.already_started(P0, 4)
    with pytest.raises(ValueError, match="offset order"):
        ledger.start(P0, 3)
