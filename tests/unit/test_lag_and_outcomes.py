"""Broker-side lag arithmetic and the recorder's per-webhook outcome window: pure functions, plain values."""

from __future__ import annotations

from hookfleet.broker_lag import Head, PartitionLag, partition_lag
from recorder.outcomes import WebhookOutcomes

NOW_MS = 1_800_000_000_000


def test_caught_up_partition_has_no_lag_whatever_its_head() -> None:
    assert partition_lag(100, 100, Head(NOW_MS - 60_000, None), NOW_MS) == PartitionLag(0, 0.0, 0.0)


def test_lag_seconds_is_the_age_of_the_oldest_uncommitted_message() -> None:
    assert partition_lag(130, 100, Head(NOW_MS - 42_500, None), NOW_MS) == PartitionLag(30, 42.5, 0.0)


def test_a_group_that_never_committed_is_behind_by_the_whole_partition() -> None:
    assert partition_lag(7, -1, Head(NOW_MS - 1_000, None), NOW_MS).messages == 7


def test_a_delay_topic_head_not_yet_due_is_not_overdue() -> None:
    """Tasks waiting for their due time are the design (normal retry-topic growth), not lateness."""
    waiting = partition_lag(500, 10, Head(NOW_MS - 250_000, NOW_MS + 50_000), NOW_MS)
    assert waiting.overdue_s == 0.0 and waiting.messages == 490


def test_a_delay_topic_head_past_due_is_overdue_by_that_much() -> None:
    assert partition_lag(11, 10, Head(NOW_MS - 400_000, NOW_MS - 90_000), NOW_MS).overdue_s == 90.0


def test_one_failing_webhook_among_many_keeps_the_success_share_high() -> None:
    outcomes = WebhookOutcomes()
    for n in range(20):
        outcomes.add(f"wh_{n}", ok=True, now=1000.0)
    for _ in range(50):
        outcomes.add("wh_down", ok=False, now=1001.0)
    summary = outcomes.summary(now=1002.0, top=3)
    assert (summary.attempted, summary.succeeding) == (21, 20)
    assert summary.worst == [("wh_down", 50)]


def test_the_top_failing_list_is_bounded_and_ordered() -> None:
    outcomes = WebhookOutcomes()
    for n in range(1, 30):
        for _ in range(n):
            outcomes.add(f"wh_{n:02d}", ok=False, now=5.0)
    worst = outcomes.summary(now=6.0, top=10).worst
    assert len(worst) == 10 and worst[0] == ("wh_29", 29) and worst[-1] == ("wh_20", 20)


def test_outcomes_older_than_the_window_are_forgotten() -> None:
    outcomes = WebhookOutcomes(window_s=600, slot_s=60)
    outcomes.add("wh_old", ok=False, now=0.0)
    outcomes.add("wh_new", ok=True, now=500.0)
    assert outcomes.summary(now=550.0, top=5).attempted == 2
    summary = outcomes.summary(now=700.0, top=5)
    assert (summary.attempted, summary.succeeding, summary.worst) == (1, 1, [])
