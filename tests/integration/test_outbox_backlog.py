"""The operational-event outbox's backlog as the recorder publishes it: rows by state and how long the oldest
due row has waited, read from a real PostgreSQL table in the states the recorder leaves rows in."""

from __future__ import annotations

import psycopg
import pytest

from recorder.store import OutboxBacklog, RecorderStore

pytestmark = pytest.mark.integration


def _row(conn: psycopg.Connection[tuple[object, ...]], event_id: str, state: str, due: str | None) -> None:
    """One outbox row; `due` is a PostgreSQL interval from now (negative: due since), None: given up."""
    conn.execute(
        "INSERT INTO operational_outbox (event_id, account_id, event, state, next_attempt_at) "
        "VALUES (%s, 'acct_1', '{}', %s, now() + %s::interval)",
        (event_id, state, due),
    )


def test_backlog_counts_pending_failed_and_given_up_rows_and_the_oldest_due_wait(database_url: str) -> None:
    store = RecorderStore(database_url)
    try:
        assert store.outbox_backlog() == OutboxBacklog(0, 0, 0, 0.0)
        with psycopg.connect(database_url, autocommit=True) as conn:
            _row(conn, "evt_new", "pending", "-20 minutes")  # written, never claimed: nothing drains
            _row(conn, "evt_new2", "pending", "0 seconds")
            _row(conn, "evt_retry", "failed", "8 minutes")  # failed once, its next try is later: not due
            _row(conn, "evt_gone", "failed", None)  # given up after its last try
            _row(conn, "evt_gone2", "failed", None)

        backlog = store.outbox_backlog()

        assert (backlog.pending, backlog.failed, backlog.given_up) == (2, 1, 2)
        assert 20 * 60 <= backlog.oldest_due_s < 21 * 60
    finally:
        store.close()
