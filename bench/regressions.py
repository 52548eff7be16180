"""The closing line of `make bench`: every row that missed its target or moved more than 2x against the
figures last recorded in bench/RESULTS.md ("Latest run"), so a regression cannot pass unnoticed in a long
table. Pure text in, text out: the rows are the markdown rows `bench.__main__.table` prints.
"""

from __future__ import annotations

import re
from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
RECORDED_SECTION = "## Latest run"
FACTOR = 2.0
"""A figure that grew or shrank by more than this against the recorded one is named."""

_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


_RATE = re.compile(r"\d[\d,]*(?:\.\d+)?/s")


def _label(cell: str) -> str:
    """A row's name without the rate it was run at: "latency at 1,803/s" and "latency at 950/s" are the same
    row (the rate is half of that run's throughput), "fan-out to 100" and "fan-out to 1,000" are not."""
    return _RATE.sub("#/s", cell).strip()


def _numbers(cell: str) -> list[float]:
    return [float(match.replace(",", "")) for match in _NUMBER.findall(cell)]


def recorded_rows(markdown: str, section: str = RECORDED_SECTION) -> dict[str, str]:
    """The measured cell of every table row in `section`, by row label."""
    rows: dict[str, str] = {}
    inside = False
    for line in markdown.splitlines():
        if line.startswith("## "):
            inside = line.strip() == section
            continue
        if inside and line.startswith("|") and not line.startswith("|---"):
            cells = _cells(line)
            if len(cells) >= 2 and cells[0] != "figure":
                rows[_label(cells[0])] = cells[1]
    return rows


def needs_a_look(rows: list[str], recorded: dict[str, str], factor: float = FACTOR) -> list[str]:
    """One short phrase per row that MISSED its target or has a figure that moved more than `factor`x."""
    found: list[str] = []
    for row in rows:
        if not row.startswith("|") or row.startswith("|---"):
            continue
        cells = _cells(row)
        if len(cells) < 4 or cells[0] == "figure":
            continue
        label, measured, verdict = cells[0], cells[1], cells[3]
        reasons = ["MISSED"] if verdict == "MISSED" else []
        before = recorded.get(_label(label))
        if before is not None:
            old, new = _numbers(before), _numbers(measured)
            if len(old) == len(new):
                for was, now in zip(old, new, strict=True):
                    if min(was, now) > 0 and max(was, now) / min(was, now) > factor:
                        reasons.append(f"{was:,g} -> {now:,g}")
                        break
        if reasons:
            found.append(f"{label} ({'; '.join(reasons)})")
    return found


def closing_line(rows: list[str], results_md: Path = RESULTS_MD) -> str:
    recorded = recorded_rows(results_md.read_text()) if results_md.exists() else {}
    found = needs_a_look(rows, recorded)
    if not found:
        return (
            f"bench: every row met its target and moved less than {FACTOR:g}x against bench/RESULTS.md "
            f"({len(recorded)} recorded rows)"
        )
    return f"bench: {len(found)} row(s) need a look: " + "; ".join(found)
