"""`make bench`'s closing line: rows that missed their target or moved more than 2x are named."""

from __future__ import annotations

from bench.regressions import needs_a_look, recorded_rows

RECORDED = """# Benchmark results

## Latest run

| figure | measured | target | |
|---|---|---|---|
| publish-to-receive latency at 1,803/s (half of the above) | p50 6.8 ms, p99 33.6 ms, max 54.8 ms | x | met |
| retry lateness, 10,000 due over 60 s | p50 12 ms, p99 55 ms, max 73 ms | within 1 s | met |
| end-to-end throughput (steady state, 30,000 events) | 3,606 deliveries/s = 0.28 x ceiling | x | MISSED |

## An older section

| figure | measured | target | |
|---|---|---|---|
| retry lateness, 10,000 due over 60 s | p50 1 ms, p99 1 ms, max 1 ms | within 1 s | met |
"""


def test_recorded_rows_come_from_the_latest_run_only_keyed_without_their_figures() -> None:
    rows = recorded_rows(RECORDED)
    assert rows["retry lateness, 10,000 due over 60 s"] == "p50 12 ms, p99 55 ms, max 73 ms"
    assert rows["publish-to-receive latency at #/s (half of the above)"].startswith("p50 6.8 ms")
    assert len(rows) == 3


def test_rows_that_differ_in_size_stay_apart() -> None:
    markdown = """## Latest run

| figure | measured | target | |
|---|---|---|---|
| fan-out: 1 event -> 100 webhooks, until all received | median 0.019 s | <= 1 s | met |
| fan-out: 1 event -> 1,000 webhooks, until all received | median 0.193 s | none | - |
"""
    rows = recorded_rows(markdown)
    assert rows["fan-out: 1 event -> 100 webhooks, until all received"] == "median 0.019 s"
    new = ["| fan-out: 1 event -> 100 webhooks, until all received | median 0.078 s | <= 1 s | met |"]
    assert needs_a_look(new, rows) == ["fan-out: 1 event -> 100 webhooks, until all received (0.019 -> 0.078)"]


def test_a_row_that_moved_more_than_twice_is_named_with_the_figure_that_moved() -> None:
    # The regression of a spread-out retry run: p99 55 ms -> 9,942 ms
    rows = ["| retry lateness, 10,000 due over 60 s | p50 20 ms, p99 9,942 ms, max 10,953 ms | within 1 s | met |"]
    assert needs_a_look(rows, recorded_rows(RECORDED)) == ["retry lateness, 10,000 due over 60 s (55 -> 9,942)"]


def test_missed_rows_are_named_and_rows_within_2x_are_not() -> None:
    rows = [
        "| figure | measured | target | |",
        "|---|---|---|---|",
        "| publish-to-receive latency at 950/s (half of the above) | p50 7.1 ms, p99 60.2 ms, max 90.0 ms | x | met |",
        "| end-to-end throughput (steady state, 30,000 events) | 2,900 deliveries/s = 0.30 x ceiling | x | MISSED |",
        "| a row never recorded | 5 ms | x | met |",
    ]
    missed = ["end-to-end throughput (steady state, 30,000 events) (MISSED)"]
    assert needs_a_look(rows, recorded_rows(RECORDED)) == missed
