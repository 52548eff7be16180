"""Broker-side lag arithmetic and the recorder's per-webhook outcome window: pure functions, plain values."""

from __future__ import annotations

from hookfleet.broker_lag import Head, PartitionLag, partition_lag
from recorder.outcomes import HealthyMinutes, WebhookOutcomes

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


def test_one_account_with_forty_dead_webhooks_is_one_account_of_the_fleet() -> None:
    outcomes = WebhookOutcomes()
    for n in range(40):
        outcomes.add(f"wh_dead_{n}", ok=False, now=1000.0, account_id="acct_big")
    for n in range(10):
        outcomes.add(f"wh_ok_{n}", ok=True, now=1000.0, account_id=f"acct_{n}")
    summary = outcomes.summary(now=1001.0, top=3)
    assert (summary.attempted, summary.succeeding) == (50, 10), "by webhooks most of the fleet looks failing"
    assert (summary.accounts_attempted, summary.accounts_succeeding) == (11, 10), "by accounts it is one customer"


def test_an_egress_outage_turns_every_healthy_webhooks_minute_bad() -> None:
    outcomes = WebhookOutcomes(window_s=600, slot_s=60)
    for n in range(50):
        outcomes.add(f"wh_{n}", ok=True, now=0.0)
    assert outcomes.judge_closed_minutes(now=61.0) == HealthyMinutes(good=0, bad=0), "no history: not judged"
    for n in range(50):
        outcomes.add(f"wh_{n}", ok=False, now=70.0)
    assert outcomes.judge_closed_minutes(now=121.0) == HealthyMinutes(good=0, bad=50)
    assert outcomes.judge_closed_minutes(now=122.0) == HealthyMinutes(), "each minute is judged once"
    bad = 0
    for minute in range(2, 40):  # the outage goes on past the 10-minute window: it keeps burning
        for n in range(50):
            outcomes.add(f"wh_{n}", ok=False, now=minute * 60.0 + 5)
        bad += outcomes.judge_closed_minutes(now=minute * 60.0 + 6).bad  # the recorder judges every 15 s
    assert bad + outcomes.judge_closed_minutes(now=40 * 60.0 + 1).bad == 38 * 50


def test_a_long_dead_endpoint_and_its_volume_do_not_weigh_on_the_success_sli() -> None:
    outcomes = WebhookOutcomes(window_s=600, slot_s=60, healthy_horizon_s=3600)
    outcomes.add("wh_ok", ok=True, now=0.0)
    good = bad = 0
    for minute in range(1, 12):  # the recorder judges every OUTCOMES_PUBLISH_S (15 s); once a minute here
        outcomes.add("wh_ok", ok=True, now=minute * 60.0)
        for _ in range(1000):  # a customer's replay into an endpoint that never answers
            outcomes.add("wh_dead", ok=False, now=minute * 60.0)
        judged = outcomes.judge_closed_minutes(now=minute * 60.0 + 1)
        good, bad = good + judged.good, bad + judged.bad
    assert (good, bad) == (10, 0), "the healthy webhook's ended minutes 1-10 count; the dead one never does"


def test_an_endpoint_that_just_went_down_counts_one_bad_minute_per_minute_whatever_its_volume() -> None:
    outcomes = WebhookOutcomes(window_s=600, slot_s=60)
    outcomes.add("wh_x", ok=True, now=0.0)
    for _ in range(500):
        outcomes.add("wh_x", ok=False, now=61.0)
    assert outcomes.judge_closed_minutes(now=121.0) == HealthyMinutes(good=0, bad=1)
