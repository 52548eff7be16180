"""librdkafka's error stream becomes state changes: down, still down every N s with a count, recovered."""

from __future__ import annotations

import logging

import pytest

from hookfleet.kafka import BrokerErrorLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split()[0] for r in caplog.records if r.name == "hookfleet.kafka"]


def test_an_outage_is_three_kinds_of_line_not_one_per_error(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    errors = BrokerErrorLog(repeat_s=30.0, quiet_s=15.0, clock=clock)
    errors._start_ticker = lambda: None  # type: ignore[method-assign]  # ticks are driven by the test
    caplog.set_level(logging.INFO, logger="hookfleet.kafka")
    # Given 670 errors spread over 31 s (what one role saw in a real outage)
    for n in range(670):
        clock.now = n * 31 / 670
        errors.error("_TRANSPORT", "Connection refused")
        errors.tick()
    assert errors.down
    # When the errors stop and the quiet period passes
    clock.now = 31 + 14.9
    assert errors.tick()
    clock.now = 31 + 15.1
    assert not errors.tick()
    # Then: one line when it started, one 30 s later with the count, one when it recovered
    assert _events(caplog) == ["event=kafka_down", "event=kafka_still_down", "event=kafka_recovered"]
    still = caplog.records[1].getMessage()
    assert "errors=" in still and "code=_TRANSPORT" in still
    recovered = caplog.records[2].getMessage()
    assert "errors=670" in recovered and "down_s=31" in recovered
    # A later outage is reported again
    errors.error("_ALL_BROKERS_DOWN", "1/1 brokers are down")
    assert _events(caplog)[-1] == "event=kafka_down"


def test_fatal_errors_are_always_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = BrokerErrorLog(clock=Clock())
    errors._start_ticker = lambda: None  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="hookfleet.kafka")
    errors.error("_TRANSPORT", "refused")
    errors.error("_FATAL", "idempotence lost", fatal=True)
    assert _events(caplog) == ["event=kafka_down", "event=kafka_fatal_error"]
