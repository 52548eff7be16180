"""Webhook status flips: known answers for every order the recorder can see events in."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from recorder.batch import DeadLetter
from recorder.status import Signal, StatusEvent, WebhookState, decide_status, replay_status, status_events
from schemas.catalog import EventType
from schemas.models import AttemptRecord, DeliveryTask, Event, Outcome

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def success(seconds: float) -> StatusEvent:
    return StatusEvent(at(seconds), Signal.SUCCESS)


def dead(seconds: float) -> StatusEvent:
    return StatusEvent(at(seconds), Signal.DEAD)


HEALTHY_SINCE_0 = WebhookState("healthy", at(0))


def apply_one_by_one(state: WebhookState, arrivals: list[StatusEvent]) -> WebhookState:
    """What the recorder does when each event arrives in its own batch; the latest success is what has arrived."""
    for i, event in enumerate(arrivals):
        seen = [e.at for e in arrivals[: i + 1] if e.signal is Signal.SUCCESS]
        state = decide_status(state, [event], max(seen) if seen else None)
    return state


def test_dead_letter_marks_healthy_webhook_failing_at_dead_time() -> None:
    assert decide_status(HEALTHY_SINCE_0, [dead(10)], None) == WebhookState("failing", at(10))


def test_later_success_heals_failing_webhook_at_success_time() -> None:
    assert decide_status(WebhookState("failing", at(10)), [success(20)], at(20)) == WebhookState("healthy", at(20))


def test_older_success_does_not_heal() -> None:
    failing = WebhookState("failing", at(10))
    assert decide_status(failing, [success(5)], at(5)) == failing


def test_success_at_the_same_instant_as_the_dead_letter_does_not_heal() -> None:
    failing = WebhookState("failing", at(10))
    assert decide_status(failing, [success(10)], at(10)) == failing


def test_success_on_healthy_webhook_changes_nothing() -> None:
    assert decide_status(HEALTHY_SINCE_0, [success(20)], at(20)) == HEALTHY_SINCE_0


def test_dead_letter_older_than_a_recorded_success_does_not_mark_failing() -> None:
    # The success at 20 arrived first (no change: already healthy); the dead letter of 10 comes late.
    assert decide_status(HEALTHY_SINCE_0, [dead(10)], at(20)) == HEALTHY_SINCE_0


def test_dead_letter_older_than_the_last_heal_does_not_mark_failing() -> None:
    healed = WebhookState("healthy", at(30))
    assert decide_status(healed, [dead(25)], None) == healed


def test_second_dead_letter_moves_failing_time_forward_never_back() -> None:
    failing = WebhookState("failing", at(10))
    assert decide_status(failing, [dead(15)], None) == WebhookState("failing", at(15))
    assert decide_status(WebhookState("failing", at(15)), [dead(10)], None) == WebhookState("failing", at(15))


def test_replayed_dead_letter_is_a_no_op() -> None:
    failing = WebhookState("failing", at(10))
    assert decide_status(failing, [dead(10)], None) == failing


def test_events_in_one_batch_apply_in_time_order() -> None:
    # The success of 20 is in the same batch, so the dead letter of 10 is already outdated.
    assert decide_status(HEALTHY_SINCE_0, [dead(10), success(20)], at(20)) == HEALTHY_SINCE_0
    assert decide_status(HEALTHY_SINCE_0, [dead(10), success(20)], None) == WebhookState("healthy", at(20))
    assert decide_status(HEALTHY_SINCE_0, [success(5), dead(10)], at(5)) == WebhookState("failing", at(10))


@pytest.mark.parametrize(
    ("world", "final"),
    [
        # (what happened, in time order) -> the state that must result whatever the arrival order
        ([dead(10), success(20)], WebhookState("healthy", at(20))),
        ([success(5), dead(10)], WebhookState("failing", at(10))),
        ([dead(10), success(12), dead(15)], WebhookState("failing", at(15))),
        ([dead(10), dead(15), success(20)], WebhookState("healthy", at(20))),
    ],
)
def test_final_state_does_not_depend_on_arrival_order(world: list[StatusEvent], final: WebhookState) -> None:
    for arrivals in itertools.permutations(world):
        result = apply_one_by_one(HEALTHY_SINCE_0, list(arrivals))
        assert result.status == final.status, arrivals
        if final.status == "failing":  # the time later successes are compared with
            assert result.changed_at == final.changed_at, arrivals


def _attempt(webhook: str, outcome: Outcome, seconds: float, *, test: bool = False) -> AttemptRecord:
    return AttemptRecord(
        attempt_id="att_" + webhook[3:] + str(int(seconds)),
        event_id="evt_1",
        event_type=EventType("message.read"),
        account_id="acct_1",
        webhook_id=webhook,
        attempt=1,
        outcome=outcome,
        attempted_at=at(seconds),
        next_step="done" if outcome is Outcome.SUCCESS else "retry",
        test=test,
    )


def _dead_letter(webhook: str, seconds: float) -> DeadLetter:
    event = Event(id="evt_2", type=EventType("message.read"), created_at=T0, account_id="acct_1", data={})
    return DeadLetter(
        DeliveryTask(event=event, webhook_id=webhook, attempt=4, due_at=int(at(seconds).timestamp() * 1000))
    )


def test_status_events_keep_successes_and_dead_letters_sorted_per_webhook() -> None:
    events = status_events(
        [
            _attempt("wh_a", Outcome.SUCCESS, 30),
            _attempt("wh_a", Outcome.HTTP_ERROR, 5),
            _attempt("wh_b", Outcome.SUCCESS, 1, test=True),
            _attempt("wh_c", Outcome.TIMEOUT, 1),
        ],
        [_dead_letter("wh_a", 20)],
    )
    assert events == {"wh_a": [dead(20), success(30)], "wh_b": [success(1)]}


def test_same_instant_dead_letter_sorts_before_success() -> None:
    assert sorted([success(10), dead(10)]) == [dead(10), success(10)]


def test_the_failing_spell_begins_at_the_dead_letter_that_flipped_it_not_the_batchs_latest() -> None:
    # Given two dead letters of a healthy webhook in one batch: the spell began at the first
    state, began = replay_status(HEALTHY_SINCE_0, [dead(10), dead(20)], None)
    assert state == WebhookState("failing", at(20)) and began == at(10)
    # a failing webhook's later dead letters begin nothing; a heal then a new flip begins a new spell
    assert replay_status(WebhookState("failing", at(5)), [dead(10)], None)[1] is None
    assert replay_status(WebhookState("failing", at(5)), [success(10), dead(20), dead(30)], None)[1] == at(20)
