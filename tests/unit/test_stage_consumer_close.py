"""A consumer whose `close` never returns (librdkafka#4041) must not hold the dispatcher's shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from dispatcher import stage_consumer
from dispatcher.stage_consumer import StageConsumer


class HangingClose:
    """Stands in for the consumer: `close` blocks until released, as librdkafka's did."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.close_started = threading.Event()

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def close(self) -> None:
        self.close_started.set()
        self.release.wait(30)


async def _no_drain(keys: set[tuple[str, int]]) -> None:
    return None


async def test_a_close_that_hangs_is_given_up_at_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage_consumer, "CLOSE_BOUND_S", 0.3)
    consumer = HangingClose()
    stage = StageConsumer("delivery", consumer, "t", _no_drain, 1.0)  # type: ignore[arg-type]
    stage.subscribe(asyncio.get_running_loop())
    started = time.monotonic()
    try:
        await stage.close()
        took = time.monotonic() - started
        assert consumer.close_started.is_set() and stage.close_stuck
        assert 0.3 <= took < 5.0, took  # never before the bound; slack for a loaded machine (the hang is 30 s)
    finally:
        consumer.release.set()


async def test_a_close_that_returns_is_not_stuck() -> None:
    consumer = HangingClose()
    consumer.release.set()
    stage = StageConsumer("fanout", consumer, "t", _no_drain, 1.0)  # type: ignore[arg-type]
    stage.subscribe(asyncio.get_running_loop())
    await stage.close()
    assert consumer.close_started.is_set() and not stage.close_stuck
