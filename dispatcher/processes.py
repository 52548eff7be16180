"""`hookfleet dispatcher --processes N`: one dispatcher process per core under one parent.

A dispatcher is one Python process whose event loop holds the GIL, so one process uses at most about
one core. N children (each a plain `hookfleet dispatcher`) join the same consumer group, so Kafka
splits the partitions between them exactly as it would between hosts. The parent only supervises:

- SIGTERM/SIGINT is forwarded once to every child (a second signal is forwarded again, and each child
  then exits at once, as a single dispatcher does). Children run in their own session so a terminal's
  Ctrl-C reaches them through the parent only, never twice; and they get SIGTERM if the parent dies.
- The parent lives as long as all its children: when one exits without being asked to (a crash, an
  OOM kill), the others are stopped too and the parent exits non-zero, so the orchestrator restarts
  the whole unit instead of leaving it at N-1.
- Exit code: 0 when every child drained and exited 0 after a requested stop; otherwise the first
  failing child's code (128 + signal number when a signal killed it).
- With `HOOKFLEET_METRICS_PORT=P` set, child i serves metrics and health on port P + i.
- With `HOOKFLEET_INSTANCE_ID=I` set, child i is the static member `I.p<i>` (hookfleet/stream/membership.py).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from types import FrameType

from hookfleet.cli import CliError
from hookfleet.settings import INSTANCE_ID_MAX
from hookfleet.stream.membership import process_instance_id

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def process_count(value: str) -> int:
    """`auto` = one per core; otherwise a positive integer."""
    if value == "auto":
        return os.cpu_count() or 1
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise CliError(f"--processes must be a positive integer or auto (got {value!r})")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def supervise(count: int, metrics_port: int = 0, instance_id: str | None = None) -> int:
    """Run `count` dispatcher children until they exit; returns the exit code for the parent. With
    `instance_id` (HOOKFLEET_INSTANCE_ID) child i joins as `<instance_id>.p<i>`: its own static members,
    the same ones after a restart of the unit."""
    last = process_instance_id(instance_id, count - 1)
    if last is not None and len(last) > INSTANCE_ID_MAX:  # each child checks its own, with the suffix
        raise CliError(
            f"HOOKFLEET_INSTANCE_ID is {len(instance_id or '')} characters long: with --processes {count} each child"
            f" adds .p<k>, and the result must stay within {INSTANCE_ID_MAX}; use a shorter name"
        )
    children: list[subprocess.Popen[bytes]] = []
    for index in range(count):
        env = dict(os.environ)
        if metrics_port:
            env["HOOKFLEET_METRICS_PORT"] = str(metrics_port + index)
        if (child_instance := process_instance_id(instance_id, index)) is not None:
            env["HOOKFLEET_INSTANCE_ID"] = child_instance
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "hookfleet.cli", "dispatcher"],
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # safe: the parent has no other threads
            )
        )
    log.info("event=dispatcher_processes_started count=%d pids=%s", count, ",".join(str(c.pid) for c in children))
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        log.info("event=dispatcher_processes_signal signal=%s", signal.Signals(signum).name)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        running = {child.pid: child for child in children}
        while running:
            pid, status = os.wait()  # a signal runs `forward` and the wait resumes (PEP 475)
            child = running.pop(pid, None)
            if child is None:
                continue
            child.returncode = os.waitstatus_to_exitcode(status)
            child_code = _exit_code(child.returncode)
            log.info("event=dispatcher_process_exit pid=%d code=%d requested=%s", pid, child_code, stopping)
            if child_code != 0 or not stopping:
                if code == 0:
                    code = child_code or 1  # exiting 0 unasked is a failure of the unit too
                if not stopping:
                    stopping = True
                    log.warning("event=dispatcher_processes_stopping reason=child_exited pid=%d", pid)
                    for other in running.values():
                        other.send_signal(signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("event=dispatcher_processes_exit code=%d", code)
    return code
