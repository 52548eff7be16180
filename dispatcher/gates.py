"""Per-endpoint concurrency gates: one slow or hanging endpoint must not stall the others.

Each endpoint gets `concurrency` deliveries at once and up to `queue` more waiting. When the queue is
full, or a delivery has waited while its endpoint finished nothing for `park_after_s` (the worker's
timer and `stalled`), the caller parks the delivery in the first delay topic without counting an
attempt (DESIGN.md §3), so the partition keeps moving and the endpoint is offered work at the pace it
can take. Judging progress rather than queue time is what tells a hanging endpoint from a fast one that
received a burst while the dispatcher itself was busy.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Gate:
    active: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)
    last_progress: float = field(default_factory=time.monotonic)  # last finished delivery (or creation)


class EndpointGates:
    def __init__(self, concurrency: int, queue: int) -> None:
        self._concurrency = concurrency
        self._queue = queue
        self._gates: dict[str, _Gate] = {}

    def try_enter(self, endpoint_id: str) -> asyncio.Future[None] | None:
        """A future that resolves when the delivery may start, or None when it must be parked."""
        gate = self._gates.setdefault(endpoint_id, _Gate())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if gate.active < self._concurrency:
            gate.active += 1
            future.set_result(None)
            return future
        if len(gate.waiting) < self._queue:
            gate.waiting.append(future)
            return future
        return None

    def leave(self, endpoint_id: str) -> None:
        gate = self._gates[endpoint_id]
        gate.last_progress = time.monotonic()
        while gate.waiting:
            waiter = gate.waiting.popleft()
            if not waiter.done():  # a cancelled waiter gives its turn to the next
                waiter.set_result(None)
                return
        gate.active -= 1
        if gate.active == 0:
            del self._gates[endpoint_id]

    def stalled(self, endpoint_id: str, seconds: float, now: float | None = None) -> bool:
        """True when the endpoint has finished no delivery for `seconds` while work waits for it."""
        gate = self._gates.get(endpoint_id)
        if gate is None:
            return False
        return (time.monotonic() if now is None else now) - gate.last_progress >= seconds

    def load(self, endpoint_id: str) -> int:
        gate = self._gates.get(endpoint_id)
        return 0 if gate is None else gate.active + len(gate.waiting)
