"""DueGate: which delay-topic partitions wait on a not-yet-due head, and when they resume."""

from __future__ import annotations

from retry_scheduler.gate import DueGate, Hold, Step, to_nudge

P0 = ("webhooks.retry.10s", 0)
P1 = ("webhooks.retry.10s", 1)
NOW = 1_700_000_000_000


def test_not_due_head_holds_the_partition_until_due_at() -> None:
    gate = DueGate()
    assert gate.on_message(P0, 7, NOW + 4_000, NOW) is Step.HOLD
    assert gate.hold_of(P0) == Hold(offset=7, due_at_ms=NOW + 4_000)
    assert gate.next_due_ms() == NOW + 4_000
    assert gate.held_count == 1


def test_due_task_is_handed_off_and_leaves_no_hold() -> None:
    gate = DueGate()
    assert gate.on_message(P0, 7, NOW - 1, NOW) is Step.HAND_OFF
    assert gate.on_message(P0, 8, NOW, NOW) is Step.HAND_OFF  # due exactly now counts as due
    assert gate.hold_of(P0) is None
    assert gate.next_due_ms() is None


def test_messages_behind_a_held_head_are_skipped_even_when_due() -> None:
    gate = DueGate()
    gate.on_message(P0, 7, NOW + 4_000, NOW)
    assert gate.on_message(P0, 8, NOW - 10_000, NOW) is Step.SKIP
    assert gate.hold_of(P0) == Hold(7, NOW + 4_000)  # the skipped message did not move the hold


def test_a_held_partition_does_not_hold_back_another() -> None:
    gate = DueGate()
    gate.on_message(P0, 7, NOW + 60_000, NOW)
    assert gate.on_message(P1, 3, NOW - 5, NOW) is Step.HAND_OFF


def test_release_returns_only_due_holds_in_due_order() -> None:
    gate = DueGate()
    gate.on_message(P0, 7, NOW + 3_000, NOW)
    gate.on_message(P1, 2, NOW + 1_000, NOW)
    assert gate.release_due(NOW + 999) == []
    assert gate.release_due(NOW + 1_000) == [(P1, Hold(2, NOW + 1_000))]
    assert gate.is_held(P0) and not gate.is_held(P1)
    assert gate.release_due(NOW + 5_000) == [(P0, Hold(7, NOW + 3_000))]
    assert gate.held_count == 0


def test_wait_is_bounded_by_the_next_due_hold() -> None:
    gate = DueGate()
    assert gate.wait_s(NOW, idle_s=0.5) == 0.5
    gate.on_message(P0, 7, NOW + 250, NOW)
    assert gate.wait_s(NOW, idle_s=0.5) == 0.25
    assert gate.wait_s(NOW + 300, idle_s=0.5) == 0.0  # overdue: never negative
    gate.on_message(P1, 1, NOW + 60_000, NOW)
    assert gate.wait_s(NOW, idle_s=0.5) == 0.25


def test_assign_returns_every_hold_to_reapply() -> None:
    gate = DueGate()
    gate.assign([P0, P1])
    gate.on_message(P0, 7, NOW + 4_000, NOW)
    # A rebalance that adds a partition un-pauses the ones kept: the hold on P0 must be re-applied.
    p2 = ("webhooks.retry.60s", 2)
    assert gate.assign([p2]) == {P0: Hold(7, NOW + 4_000)}
    assert gate.assigned == {P0, P1, p2}


def test_revoke_forgets_holds_of_revoked_partitions_only() -> None:
    gate = DueGate()
    gate.assign([P0, P1])
    gate.on_message(P0, 7, NOW + 4_000, NOW)
    gate.on_message(P1, 9, NOW + 8_000, NOW)
    gate.revoke([P0])
    assert not gate.is_held(P0)
    assert gate.hold_of(P1) == Hold(9, NOW + 8_000)
    assert gate.assigned == {P1}
    assert gate.next_due_ms() == NOW + 8_000
    # Re-assigned later: it starts clean and reads its head again from the committed offset.
    assert gate.assign([P0]) == {P1: Hold(9, NOW + 8_000)}
    assert gate.on_message(P0, 7, NOW + 4_000, NOW) is Step.HOLD


def test_resumed_partitions_nudge_each_leader_broker_once() -> None:
    p2, p3 = ("webhooks.retry.60s", 0), ("webhooks.retry.60s", 1)
    leaders = {P0: 1, P1: 1, p2: 2, p3: 2}
    assert to_nudge([P0, P1, p2], leaders) == [P0, p2]
    assert to_nudge([], leaders) == []


def test_partition_with_unknown_leader_is_always_nudged() -> None:
    assert to_nudge([P0, P1], leaders={P1: 3}) == [P0, P1]
    assert to_nudge([P0, P1], leaders={}) == [P0, P1]


def test_a_task_due_far_beyond_its_stage_is_held_only_for_a_bounded_time() -> None:
    from retry_scheduler.gate import bounded_due_ms

    written = 1_000_000
    assert bounded_due_ms(written + 10_000, written, 10.0, 300.0) == written + 10_000  # normal: its own due_at
    assert bounded_due_ms(written + 120_000, written, 10.0, 300.0) == written + 120_000  # late but plausible
    year_2100 = 4_102_444_800_000
    assert bounded_due_ms(year_2100, written, 10.0, 300.0) == written + 320_000  # 2 x 10 s + 300 s
    assert bounded_due_ms(year_2100, written, 300.0, 300.0) == written + 900_000
    assert bounded_due_ms(year_2100, None, 10.0, 300.0) == year_2100  # no timestamp: nothing to bound by
