"""The per-account sliding window behind the API's per-minute quotas."""

from __future__ import annotations

import pytest

from api.errors import ApiError
from api.quotas import SlidingWindow, check_count, check_rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_holds_in_any_window_and_says_when_to_retry() -> None:
    clock = Clock()
    window = SlidingWindow(3, 60.0, clock)
    for _ in range(3):  # at 1000, 1010, 1020
        assert window.try_acquire("a") is None
        clock.now += 10
    assert window.try_acquire("a") == pytest.approx(30.0)  # the first event leaves the window in 30 s
    assert window.try_acquire("b") is None  # accounts are counted apart
    clock.now = 1060.0
    assert window.try_acquire("a") is None
    assert window.try_acquire("a") is not None  # the other two are still inside


def test_refused_attempts_do_not_count() -> None:
    clock = Clock()
    window = SlidingWindow(1, 60.0, clock)
    assert window.try_acquire("a") is None
    for _ in range(100):
        clock.now += 0.5
        assert window.try_acquire("a") is not None
    clock.now = 1060.0
    assert window.try_acquire("a") is None


def test_idle_accounts_are_forgotten() -> None:
    clock = Clock()
    window = SlidingWindow(5, 60.0, clock)
    for n in range(1000):
        window.try_acquire(f"acct_{n}")
    clock.now += 121
    window.try_acquire("acct_new")
    assert len(window._events) == 1


def test_quota_errors_are_429_with_retry_after() -> None:
    window = SlidingWindow(1, 60.0, Clock())
    check_rate(window, "a", "Test deliveries", "HOOKFLEET_TESTS_PER_MINUTE")
    with pytest.raises(ApiError) as caught:
        check_rate(window, "a", "Test deliveries", "HOOKFLEET_TESTS_PER_MINUTE")
    assert caught.value.status == 429 and caught.value.code == "quota_exceeded"
    assert caught.value.headers == {"Retry-After": "60"} and caught.value.limit == "HOOKFLEET_TESTS_PER_MINUTE"
    assert "at most 1 Test deliveries per minute" in caught.value.message
    check_count(99, 100, "webhooks", "delete one first", "HOOKFLEET_MAX_WEBHOOKS_PER_ACCOUNT")
    with pytest.raises(ApiError) as counted:
        check_count(100, 100, "webhooks", "delete one first", "HOOKFLEET_MAX_WEBHOOKS_PER_ACCOUNT")
    assert counted.value.status == 429 and "Retry-After" in counted.value.headers
    assert counted.value.limit == "HOOKFLEET_MAX_WEBHOOKS_PER_ACCOUNT"
