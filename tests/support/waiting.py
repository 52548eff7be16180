"""Waiting on a condition with a deadline, for tests on a busy machine.

A fixed sleep either wastes time or, when the machine is loaded, is too short and the test passes or fails
by luck. These helpers poll `condition` until it holds and raise an AssertionError naming `what` when the
deadline passes, so a test that waits too long fails loudly with the thing it waited for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

Description = str | Callable[[], str]
"""What is waited for; a callable is asked only on time-out, to show the state that was reached."""


def _timed_out(what: Description, timeout_s: float) -> AssertionError:
    described = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout_s:g} s waiting for {described}")


def wait_until(condition: Callable[[], object], timeout_s: float, what: Description, interval_s: float = 0.05) -> None:
    """Block until `condition()` is truthy; raise AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s)
        time.sleep(interval_s)


async def wait_until_async(
    condition: Callable[[], object], timeout_s: float, what: Description, interval_s: float = 0.01
) -> None:
    """As `wait_until`, yielding to the event loop between checks (the loop runs what is waited for)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() >= deadline:
            raise _timed_out(what, timeout_s)
        await asyncio.sleep(interval_s)
