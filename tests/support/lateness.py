"""How late a retry may reach a receiver in a correctness test, one figure for every such test.

A retry's lateness is the retry scheduler's hand-off (target: within 1 s of due), the dispatcher's consume
and the HTTPS round trip; on a busy 2-core machine shared with other test runs it has reached 3.3 s. The
tight figure is measured by bench/retry_lateness, not here: a test only has to catch a retry that is a whole
delay late, so a delay whose lateness a test checks should be longer than this bound. Never early stays
exact (a retry due at 5 s must not arrive before 5 s).
"""

from __future__ import annotations

RETRY_LATE_S = 4.5
"""Seconds a retry may arrive after it was due, under load."""

EARLY_SLACK_S = 0.05
"""Clock granularity between two arrival stamps taken on one host; not a tolerance for early retries."""
