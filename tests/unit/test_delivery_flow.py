"""The delivery stage's pure parts: per-webhook lanes, commit metadata, fan-out task bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.wire_json import task_json
from dispatcher.fanout import FanoutJob
from dispatcher.lanes import Admission, Lane, LanePolicy, TokenBucket
from dispatcher.recent_answers import RecentAnswers
from hookfleet.stream.ledger import LowWaterMark
from hookfleet.stream.offset_codec import decode_finished, encode_finished
from producer.publisher import build_event
from schemas.models import DeliveryTask

TP = ("webhooks.deliveries", 0)


def lane(**policy: object) -> Lane[int]:
    defaults: dict[str, object] = {"concurrency": 2, "queue_limit": 4, "park_after_s": 5.0}
    return Lane(LanePolicy(**(defaults | policy)), TP, created_at=0.0)  # type: ignore[arg-type]


def test_a_fast_webhook_with_a_full_queue_is_held_back_not_parked() -> None:
    # Given a webhook answering in 10 ms (2 at once: it can take 200 a second)
    w = lane()
    for i in range(100):
        w.started(i / 100)
        w.finished(i / 100 + 0.01, answered=True, elapsed_s=0.01)
    assert w.capacity_per_s() == pytest.approx(200)
    # When its queue is full
    w.queue.extend(range(4))
    # Then the partition is held back: 4 queued (5 with the one admitted) drain in 0.025 s, far below park_after_s
    assert w.admit(1.0, -1) is Admission.HOLD_BACK
    assert w.expected_wait_s(1.0) == pytest.approx(0.025)


def test_a_busy_dispatcher_does_not_make_a_fast_receiver_look_slow() -> None:
    # Given answers in 20 ms that this dispatcher, short of CPU, took a whole second to get through
    w = lane(queue_limit=1000)
    for i in range(10):
        w.started(i * 0.1)
        w.finished(i * 0.1 + 0.02, answered=True, elapsed_s=0.02)
    w.queue.extend(range(1000))
    # Then the queue is judged at the receiver's pace (100/s with 2 at once), not the dispatcher's
    assert w.expected_wait_s(1.0) == pytest.approx(10.0)  # 2 at once x 50/s each
    fast = lane(queue_limit=1000, concurrency=50)
    fast.started(0.0)
    fast.finished(0.02, answered=True, elapsed_s=0.02)
    fast.queue.extend(range(1000))
    assert fast.admit(1.0, -1) is Admission.HOLD_BACK  # 50 at once x 50/s: 0.4 s to drain


def test_a_hanging_webhook_is_parked_once_nothing_was_answered_for_park_after_s() -> None:
    w = lane()
    w.started(10.0)
    w.started(10.0)
    w.queue.append(1)
    assert not w.stalled(14.9) and w.admit(14.9, -1) is Admission.QUEUE
    assert w.stalled(15.0) and w.admit(15.0, -1) is Admission.PARK
    w.finished(16.0, answered=False)  # a timeout is no answer
    assert w.stalled(16.0)
    w.finished(16.5, answered=True, elapsed_s=6.5)  # an answer (any status) is progress, and the lane is idle now
    assert not w.stalled(16.5)


def test_a_slow_webhook_with_a_full_queue_is_parked() -> None:
    # Given a webhook answering in 2 s, 2 at once: 1 a second
    w = lane(queue_limit=20)
    w.started(0.0)
    w.finished(2.0, answered=True, elapsed_s=2.0)
    w.queue.extend(range(20))
    assert w.admit(2.0, -1) is Admission.HOLD_BACK  # one answer is not a verdict (the first wave pays for TLS)
    for i in range(1, 4):
        w.started(i * 2.0)
        w.finished(i * 2.0 + 2.0, answered=True, elapsed_s=2.0)
    # Then 20 queued would take 20 s > park_after_s: offered work at the pace it can take
    assert w.expected_wait_s(8.0) == pytest.approx(21.0)  # the 20 and the one admitted at 2.0
    assert w.admit(8.0, -1) is Admission.PARK
    assert len(w.queue) == 21, "a parked job is the caller's, not queued"


def test_a_receiver_reading_slow_only_through_a_busy_dispatcher_is_held_back() -> None:
    # Given answers measured at 300 ms (the dispatcher's own delays included), 2 at once
    w = lane(queue_limit=20)
    w.started(0.0)
    w.finished(0.3, answered=True, elapsed_s=0.3)
    w.queue.extend(range(20))
    # Then its queue would take 3 s... and with 40 queued 6 s, still below the slow floor: held back
    w.queue.extend(range(20))
    assert w.expected_wait_s(1.0) == pytest.approx(6.0)
    assert not w.slow(1.0) and w.admit(1.0, -1) is Admission.HOLD_BACK


def test_a_rate_limit_paces_the_queue_estimate() -> None:
    w = lane(queue_limit=100, rate_limit_per_s=10)
    w.queue.extend(range(100))
    assert w.expected_wait_s(0.0) == pytest.approx(10.0)
    assert w.admit(0.0, -1) is Admission.PARK


def test_an_ordered_webhook_is_never_parked_and_runs_one_at_a_time() -> None:
    w = lane(fifo=True)
    w.started(0.0)
    w.queue.extend(range(4))
    assert w.stalled(100.0)
    assert w.admit(100.0, -1) is Admission.HOLD_BACK  # full queue: backpressure, never a park
    assert w.ready(100.0) == []  # concurrency 1 while one is open
    assert w.finished(100.0, answered=True, elapsed_s=100.0, take_next=True) == [0], "the next starts as one ends"
    assert w.finished(101.0, answered=True, elapsed_s=1.0) == [], "unless asked (nothing new starts while stopping)"
    assert list(w.queue) == [1, 2, 3, -1]


def test_a_rate_limited_lane_lets_go_what_its_tokens_allow_and_says_when_to_ask_again() -> None:
    w = lane(concurrency=10, queue_limit=100, rate_limit_per_s=4)
    for job in range(3):
        assert w.admit(0.0, job) is Admission.QUEUE
    # A fresh bucket holds one token: one starts now, the next in a quarter of a second
    assert w.ready(0.0) == [0]
    assert w.waking and w.wake_in_s == pytest.approx(0.25)
    assert w.ready(0.1) == [], "nothing until the wake-up"
    w.waking = False
    assert w.ready(0.25) == [1] and w.active == 2
    assert not w.idle()


def test_token_bucket_allows_rate_per_second_after_the_first() -> None:
    bucket = TokenBucket(rate=50, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(0.02)
    granted = sum(1 for i in range(1, 1001) if bucket.take(i / 1000) == 0.0)  # one second of asking every ms
    assert 49 <= granted <= 51


def test_commit_metadata_round_trips_finished_offsets() -> None:
    finished = {101, 102, 103, 200, 5000, 5001}
    text = encode_finished(100, finished)
    assert text.startswith("hf1:100:")
    assert decode_finished(100, text) == finished
    assert decode_finished(101, text) == frozenset()  # metadata of another commit is ignored
    assert decode_finished(100, "something else") == frozenset()
    assert decode_finished(100, "hf1:100:!!!") == frozenset()
    assert encode_finished(100, []) == ""
    assert encode_finished(100, [100, 50]) == ""  # only offsets above the commit count


def test_commit_metadata_fits_the_broker_limit_by_dropping_the_highest_runs() -> None:
    import random

    rng = random.Random(7)  # irregular gaps: zlib cannot fold 20,000 runs into 4,000 characters
    scattered = {1} | {o for o in range(2, 400_000) if rng.random() < 0.05}
    text = encode_finished(0, scattered, max_chars=4000)
    assert 0 < len(text) <= 4000
    kept = decode_finished(0, text)
    assert kept and kept < scattered
    highest = max(kept)
    assert min(kept) == 1 and kept == {o for o in scattered if o <= highest}  # a prefix: lowest runs kept


@given(st.integers(0, 10**12), st.sets(st.integers(1, 20_000), max_size=500))
def test_commit_metadata_property(base: int, deltas: set[int]) -> None:
    finished = {base + d for d in deltas}
    assert decode_finished(base, encode_finished(base, finished)) == finished


def test_low_water_mark_commit_point_and_finished_above() -> None:
    marks = LowWaterMark()
    assert marks.commit_point() is None
    for offset in (5, 6, 7, 8):
        marks.begin(offset)
    marks.finish(7)
    marks.finish(8)
    assert marks.commit_point() == 5 and marks.finished_above() == {7, 8}
    marks.finish(5)
    assert marks.commit_point() == 6 and marks.finished_above() == {7, 8}
    marks.finish(6)
    assert marks.commit_point() == 9 and marks.finished_above() == set()


def test_first_task_json_is_the_task_the_model_would_build() -> None:
    event = build_event("acct_1", "message.sent", {"text": 'h\u00e9llo "quoted"', "n": [1, 2]})
    raw = task_json(event.body(), "wh_01ABC", 1, 1_700_000_000_123)
    task = DeliveryTask.model_validate_json(raw)
    assert task == DeliveryTask(event=event, webhook_id="wh_01ABC", attempt=1, due_at=1_700_000_000_123)
    assert task.event.body() == event.body()


def test_fanout_job_reports_once_when_every_task_is_acknowledged() -> None:
    done: list[FanoutJob] = []
    job = FanoutJob(TP, 1, 42, 3, done.append)
    job.acked("wh_a", b"a", True)
    job.acked("wh_b", b"b", False)
    assert done == []
    job.acked("wh_c", b"c", True)
    assert done == [job] and job.failed == [("wh_b", b"b")]


def test_a_webhook_not_heard_from_gets_one_request_until_its_first_answer_then_its_concurrency() -> None:
    # Given a probing lane (concurrency 3) with a burst queued
    w = lane(concurrency=3)
    w.probing = True
    w.queue.extend(range(10))
    # Then one request starts; a timeout is no answer, so it stays at one
    assert w.ready(0.0) == [0]
    assert w.ready(0.0) == []
    assert w.finished(10.0, answered=False, take_next=True) == [1]
    assert w.ready(10.0) == []
    # When the receiver answers, the lane opens to its concurrency
    assert w.finished(10.1, answered=True, elapsed_s=0.1, take_next=True) == [2, 3, 4]
    assert w.ready(10.1) == [] and w.active == 3


def test_recent_answers_remember_a_webhook_for_the_memory_and_forget_the_oldest_first() -> None:
    answers = RecentAnswers(memory_s=300.0)
    assert not answers.knows("wh_a", 0.0)
    answers.heard("wh_a", 0.0)
    answers.heard("wh_b", 100.0)
    answers.heard("wh_a", 200.0)  # heard again: now the newest
    assert answers.knows("wh_a", 299.0) and answers.knows("wh_b", 299.0)
    assert not answers.knows("wh_b", 400.0) and answers.knows("wh_a", 400.0) and len(answers) == 1
    assert not answers.knows("wh_a", 500.0) and len(answers) == 0


def test_recent_answers_told_out_of_order_never_know_a_webhook_past_the_memory() -> None:
    # Lanes are dropped by the sweep, so an older answer can be told after a newer one
    answers = RecentAnswers(memory_s=300.0)
    answers.heard("wh_new", 250.0)
    answers.heard("wh_old", 50.0)
    assert answers.knows("wh_old", 349.0)
    assert not answers.knows("wh_old", 360.0), "over 300 s since its answer, even behind a newer entry"
    assert answers.knows("wh_new", 360.0)
