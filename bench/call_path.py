"""Which project modules one delivery task passes through, from consume to durable outcome, and how often
each is entered: a call from another project module into it counts as one entry (returns, and the event
loop resuming a coroutine, do not).

Runs the real dispatcher loop on the in-memory broker of the unit tests with a stub receiver answering 500
(the longest path: attempt record plus retry task), traces calls with `sys.setprofile` for one task only,
and prints the entries per module. Measures structure, not speed.

    .venv/bin/python -m bench.call_path
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from delivery.wire_json import task_json
from dispatcher.subscriptions import SubscriptionIndex
from producer.publisher import build_event
from schemas.catalog import EventType
from schemas.models import Outcome
from tests.support.memory_kafka import MemoryBroker
from tests.unit.test_dispatcher_loop import SETTINGS, StubDeliverer, endpoint, result, run_until

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("delivery", "dispatcher", "hookfleet", "schemas")
TASK_PATH = frozenset({"_accept", "_take", "_start", "_run", "_record", "_deliver_in_order", "_finish_after"})
"""The worker's functions a delivery task passes through: calls made under them are the task's path (the
loop's polls, commits and sweeps around it are not)."""


def _module(frame: FrameType) -> str | None:
    path = Path(frame.f_code.co_filename)
    try:
        parts = path.resolve().relative_to(ROOT).with_suffix("").parts
    except ValueError:
        return None
    return ".".join(parts) if parts and parts[0] in PROJECT else None


def main() -> None:
    entries: Counter[str] = Counter()

    def on_task_path(frame: FrameType | None) -> bool:
        while frame is not None:
            if frame.f_code.co_name in TASK_PATH and _module(frame) == "dispatcher.worker":
                return True
            frame = frame.f_back
        return False

    def profile(frame: FrameType, event: str, _arg: Any) -> None:
        if event != "call":
            return
        callee = _module(frame)
        caller = _module(frame.f_back) if frame.f_back is not None else None
        if callee is not None and caller is not None and callee != caller and on_task_path(frame.f_back):
            entries[callee] += 1

    broker = MemoryBroker()
    index = SubscriptionIndex([endpoint("wh_a")])
    event = build_event("acct_1", EventType.MESSAGE_READ, {})
    broker.append(SETTINGS.topics.deliveries, task_json(event.body(), "wh_a", 1, 0), key="wh_a")
    deliverer = StubDeliverer(lambda *_: result(Outcome.HTTP_ERROR, 500))

    async def traced() -> None:
        sys.setprofile(profile)
        try:
            await run_until(
                broker,
                index,
                deliverer,
                lambda: bool(broker.messages(SETTINGS.topics.retry_10s) and broker.messages(SETTINGS.topics.attempts)),
                stages=("delivery",),
            )
        finally:
            sys.setprofile(None)

    asyncio.run(traced())
    print("entries per module on one task's path (consume -> attempt -> attempt record + retry task):")
    for module, count in entries.most_common():
        print(f"  {count:4d}  {module}")


if __name__ == "__main__":
    main()
