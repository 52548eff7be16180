"""Known-answer tests of the failure policy's pure parts: per-status routing, Retry-After parsing, the
retry scheduler's relay of long waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from delivery.endpoint import Endpoint
from delivery.retry_after import parse_retry_after
from dispatcher.fanout import recipients
from dispatcher.routing import decide, delay_topic_for, retry_wait_s, route_failure
from producer.publisher import build_event
from recorder.health import gone_at, latest_failure, mail_text, should_auto_disable
from retry_scheduler.gate import bounded_due_ms, hold_plan
from schemas.catalog import OPERATIONAL_TYPES, EventType
from schemas.models import AttemptRecord, Event, Outcome
from schemas.retry_schedule import DELAYS_S, delay_index_for_wait
from schemas.topics import Topics

TOPICS = Topics.with_prefix("p.")
NOW = datetime(2026, 11, 29, 21, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("30", 30.0),
        (" 0 ", 0.0),
        ("Sun, 29 Nov 2026 21:01:30 GMT", 90.0),  # IMF-fixdate
        ("Sunday, 29-Nov-26 21:00:45 GMT", 45.0),  # obsolete RFC 850 form
        ("Sun, 29 Nov 2026 20:00:00 GMT", 0.0),  # in the past: no wait
        (None, None),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
    ],
)
def test_parse_retry_after_seconds_and_http_dates(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "retry_after", "wait"),
    [
        (429, 30.0, 30.0),  # longer than the schedule: honoured
        (503, 30.0, 30.0),
        (429, 3.0, 10.0),  # shorter: never earlier than the schedule
        (429, 86_400.0, 3600.0),  # capped
        (503, None, 10.0),  # no header: the schedule
        (500, 30.0, 10.0),  # other statuses ignore the header
        (None, 30.0, 10.0),  # timeouts and connection errors too
        (429, float("inf"), 10.0),
    ],
)
def test_retry_wait_honours_retry_after_for_429_and_503_only(
    status: int | None, retry_after: float | None, wait: float
) -> None:
    assert retry_wait_s(10.0, status, retry_after, cap_s=3600.0) == wait


def test_410_switches_off_at_any_attempt_and_queues_nothing() -> None:
    for attempt in (1, 2, 3, 4):
        route = route_failure(attempt, 5_000, TOPICS, status_code=410)
        assert (route.stage, route.topic, route.next_attempt, route.due_at_ms) == (
            "disabled",
            "p.webhooks.attempts",
            attempt,
            5_000,
        )


def test_retry_after_moves_due_time_and_picks_the_longest_topic_the_wait_outlasts() -> None:
    # 30 s: the 10 s topic (the 60 s one would hold it behind tasks due up to 60 s after they were written);
    # the retry scheduler relays it twice.
    route = route_failure(1, 1_000, TOPICS, status_code=429, retry_after_s=30.0)
    assert (route.stage, route.topic, route.next_attempt, route.due_at_ms) == ("10s", "p.webhooks.retry.10s", 2, 31_000)
    route = route_failure(1, 1_000, TOPICS, status_code=429, retry_after_s=59.8)  # within the tolerance of 60 s
    assert (route.stage, route.due_at_ms) == ("60s", 60_800)
    route = route_failure(2, 1_000, TOPICS, status_code=429, retry_after_s=299.9)
    assert (route.stage, route.due_at_ms) == ("5m", 300_900)
    route = route_failure(1, 1_000, TOPICS, status_code=503, retry_after_s=7_200.0, cap_s=3_600.0)
    assert (route.stage, route.topic, route.due_at_ms) == ("5m", "p.webhooks.retry.5m", 1_000 + 3_600_000)
    route = route_failure(2, 1_000, TOPICS, status_code=429, retry_after_s=5.0)  # shorter than 60 s: schedule
    assert (route.stage, route.due_at_ms) == ("60s", 61_000)


def test_retry_after_does_not_change_the_attempt_count_or_the_dead_letter_rule() -> None:
    route = route_failure(4, 1_000, TOPICS, status_code=429, retry_after_s=30.0)
    assert (route.stage, route.topic, route.next_attempt) == ("dead", "p.webhooks.dead", 4)
    assert route_failure(3, 0, TOPICS, status_code=429, retry_after_s=30.0).next_attempt == 4


def test_delay_topic_for_uses_the_configured_delays() -> None:
    delays = (2.5, 5.0, 9.0)
    assert delay_topic_for(2.5, TOPICS, delays) == ("10s", "p.webhooks.retry.10s")
    assert delay_topic_for(4.8, TOPICS, delays) == ("60s", "p.webhooks.retry.60s")  # within the tolerance
    assert delay_topic_for(7.5, TOPICS, delays) == ("60s", "p.webhooks.retry.60s")
    assert delay_topic_for(99.0, TOPICS, delays) == ("5m", "p.webhooks.retry.5m")
    assert delay_topic_for(0.5, TOPICS, delays) == ("10s", "p.webhooks.retry.10s")  # shorter than any: the first


@pytest.mark.parametrize(
    ("wait_s", "index"),
    [
        (0.0, None),
        (9.7, None),  # shorter than every delay: the retry scheduler holds it itself
        (9.8, 0),  # within the tolerance of 10 s
        (10.0, 0),
        (59.7, 0),
        (59.8, 1),
        (299.8, 2),
        (3600.0, 2),
    ],
)
def test_delay_index_for_wait_is_the_longest_delay_the_wait_outlasts(wait_s: float, index: int | None) -> None:
    assert delay_index_for_wait(wait_s) == index


def test_every_leg_of_a_relayed_wait_is_due_no_sooner_than_its_topics_delay() -> None:
    """The order invariant of the delay topics, for waits up to the cap: follow each wait leg by leg as the
    retry scheduler does (write, act at min(due, write + delay), relay what is left)."""
    delays = DELAYS_S
    for wait_ms in [*range(0, 120_000, 250), *range(120_000, 3_600_001, 7_919)]:
        written, due, legs = 0, wait_ms, 0
        while (index := delay_index_for_wait((due - written) / 1000, delays)) is not None:
            delay_ms = round(delays[index] * 1000)
            assert due >= written + delay_ms - 250, (wait_ms, legs)  # never due sooner than the topic's order
            if due <= written + delay_ms + 250:
                break  # the last leg: held until due
            written += delay_ms  # relayed when its topic's delay is over
            legs += 1
        assert legs <= 3600 // 300 + 300 // 60 + 60 // 10, wait_ms  # at most a handful of writes per leg length


def test_hold_plan_holds_ordinary_tasks_until_due() -> None:
    written = 1_000_000
    assert hold_plan(written + 10_000, written, 10.0, 300.0, 3600.0) == (written + 10_000, False)
    assert hold_plan(written + 10_200, written, 10.0, 300.0, 3600.0) == (written + 10_200, False)  # rounding
    assert hold_plan(written + 4_000, written, 10.0, 300.0, 3600.0) == (written + 4_000, False)  # due early
    assert hold_plan(written + 99, None, 10.0, 300.0, 3600.0) == (written + 99, False)  # no timestamp


def test_hold_plan_relays_a_long_wait_after_the_topics_own_delay() -> None:
    written = 1_000_000
    # A one-hour Retry-After in the 5 min topic: held 5 min, then written again, so nothing queued behind
    # it waits longer than the topic's delay.
    assert hold_plan(written + 3_600_000, written, 300.0, 300.0, 3600.0) == (written + 300_000, True)
    # The last hop: due within the topic's delay of its new write time: held until due.
    assert hold_plan(written + 120_000, written, 300.0, 300.0, 3600.0) == (written + 120_000, False)


def test_hold_plan_keeps_the_guard_against_absurd_due_times() -> None:
    written = 1_000_000
    year_2100 = 4_102_444_800_000
    assert hold_plan(year_2100, written, 300.0, 300.0, 3600.0) == (bounded_due_ms(year_2100, written, 300, 300), False)
    assert hold_plan(year_2100, written, 300.0, 300.0, 3600.0) == (written + 900_000, False)


# ------------------------------------------------------------------------------------------ recorder health

DAY = timedelta(days=1)


def test_auto_disable_counts_from_failing_since_or_the_last_switch_on() -> None:
    since = NOW - 10 * DAY
    assert should_auto_disable(since, None, since + 5 * DAY, 5 * DAY)
    assert not should_auto_disable(since, None, since + 5 * DAY - timedelta(seconds=1), 5 * DAY)
    assert not should_auto_disable(None, None, NOW, 5 * DAY)  # healthy: never
    assert not should_auto_disable(since, NOW - DAY, NOW, 5 * DAY)  # switched on a day ago: starts over
    assert should_auto_disable(since, since - DAY, since + 6 * DAY, 5 * DAY)  # switched on before it failed


def _record(webhook_id: str, at: datetime, outcome: Outcome, next_step: str, test: bool = False) -> AttemptRecord:
    event = Event(id="evt_1", type=EventType.MESSAGE_READ, created_at=NOW, account_id="a", data={})
    return AttemptRecord(
        attempt_id="att_1",
        event_id=event.id,
        event_type=event.type,
        account_id="a",
        webhook_id=webhook_id,
        attempt=1,
        outcome=outcome,
        status_code=410 if next_step == "disabled" else 500,
        error="http 500" if outcome is not Outcome.SUCCESS else None,
        attempted_at=at,
        next_step=next_step,  # type: ignore[arg-type]
        test=test,
    )


def test_gone_and_latest_failure_ignore_test_deliveries_and_successes() -> None:
    records = [
        _record("wh_a", NOW + timedelta(seconds=2), Outcome.HTTP_ERROR, "disabled"),
        _record("wh_a", NOW + timedelta(seconds=1), Outcome.HTTP_ERROR, "disabled"),
        _record("wh_b", NOW, Outcome.HTTP_ERROR, "disabled", test=True),
        _record("wh_c", NOW + timedelta(seconds=5), Outcome.SUCCESS, "done"),
        _record("wh_c", NOW, Outcome.HTTP_ERROR, "retry"),
        _record("wh_d", NOW, Outcome.DROPPED, "dropped"),
    ]
    assert gone_at(records) == {"wh_a": NOW + timedelta(seconds=1)}
    assert latest_failure(records) == {"wh_a": (NOW + timedelta(seconds=2), "http 500"), "wh_c": (NOW, "http 500")}


def test_notification_mail_names_the_webhook_the_change_and_the_way_back() -> None:
    data = {
        "webhook_id": "wh_1",
        "name": "CRM Sync",
        "url": "https://crm.example.com/h",
        "active": False,
        "status": "healthy",
        "reason": "gone",
        "since": "2026-11-29T21:00:00.000Z",
        "last_error": "http 410",
        "dead_letters": 0,
    }
    subject, text = mail_text(EventType.WEBHOOK_DISABLED, data)
    assert subject == "Webhook disabled: CRM Sync"
    assert "switched off (reason: gone)" in text and "Last error: http 410" in text
    assert "switch the webhook on again" in text


def test_a_webhook_is_never_sent_operational_events_about_itself() -> None:
    def endpoint(webhook_id: str) -> Endpoint:
        return Endpoint(webhook_id, "a", "https://x.example/", frozenset(OPERATIONAL_TYPES), True, "whsec_x")

    about_a = Event(
        id="evt_1", type=EventType.WEBHOOK_FAILING, created_at=NOW, account_id="a", data={"webhook_id": "wh_a"}
    )
    product = Event(
        id="evt_2", type=EventType.MESSAGE_READ, created_at=NOW, account_id="a", data={"webhook_id": "wh_a"}
    )
    both = [endpoint("wh_a"), endpoint("wh_b")]
    assert [e.id for e in recipients(about_a, both)] == ["wh_b"]
    assert [e.id for e in recipients(product, both)] == ["wh_a", "wh_b"]


def test_product_services_cannot_publish_operational_types() -> None:
    with pytest.raises(ValueError, match="operational: only hookfleet publishes it"):
        build_event("acct_1", "webhook.failing", {})
    with pytest.raises(ValueError, match="operational"):
        build_event("acct_1", EventType.WEBHOOK_DISABLED, {})
    assert build_event("acct_1", "message.read", {}).type is EventType.MESSAGE_READ


def test_the_smtp_url_and_the_disable_period_are_read_from_the_environment_forms() -> None:
    from pydantic import ValidationError

    from hookfleet.settings import RecorderSettings

    settings = RecorderSettings(smtp_url="smtp+starttls://u:p%40ss@mail.example.com:587", disable_after="P2D")
    assert settings.disable_after == 2 * DAY and "p%40ss" not in repr(settings)
    assert RecorderSettings(disable_after=3600).disable_after == timedelta(hours=1)
    with pytest.raises(ValidationError, match="smtp url must be smtp://host:port"):
        RecorderSettings(smtp_url="http://mail.example.com")


@pytest.mark.parametrize(
    ("attempt", "ok", "status", "retry_after", "step", "topic", "due"),
    [
        (1, True, 200, None, "done", None, None),
        (4, True, 204, None, "done", None, None),
        (1, False, 500, None, "retry", "p.webhooks.retry.10s", 11_000),
        (2, False, None, None, "retry", "p.webhooks.retry.60s", 61_000),  # a timeout: no status
        (3, False, 503, 30.0, "retry", "p.webhooks.retry.5m", 301_000),  # Retry-After shorter than the schedule
        (1, False, 429, 45.0, "retry", "p.webhooks.retry.10s", 46_000),  # longer: relayed from the 10 s topic
        (4, False, 500, None, "dead", "p.webhooks.dead", 1_000),
        (2, False, 410, None, "disabled", "p.webhooks.attempts", 1_000),
    ],
)
def test_decide_is_the_one_outcome_rule(
    attempt: int, ok: bool, status: int | None, retry_after: float | None, step: str, topic: str | None, due: int | None
) -> None:
    decision = decide(attempt, ok, 1_000, TOPICS, status_code=status, retry_after_s=retry_after)
    assert decision.step == step
    if topic is None:
        assert decision.route is None
    else:
        assert decision.route is not None
        assert (decision.route.topic, decision.route.due_at_ms) == (topic, due)
