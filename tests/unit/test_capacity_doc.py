"""docs/capacity.md is the plan the runbook points to, and every runbook advice to add partitions warns
that keys remap and links the procedure that keeps order."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CAPACITY = ROOT / "docs" / "capacity.md"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROCEDURE = "capacity.md#adding-partitions"


def paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def test_capacity_answers_the_planning_questions() -> None:
    text = CAPACITY.read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings == [
        "Per-process cost",
        "Partitions for a target rate",
        "PostgreSQL: rows and bytes per day",
        "Adding partitions",
    ]
    for rate in ("1,000/s", "10,000/s", "100,000/s"):
        assert rate in text, f"no PostgreSQL size for {rate}"
    for guarantee in ("Per-account order", "FIFO", "lane"):
        assert guarantee in text, f"adding partitions does not say what happens to {guarantee}"


def test_every_runbook_advice_to_add_partitions_warns_and_links_the_procedure() -> None:
    advising = re.compile(r"(raise|add|more)[^.]{0,40}partitions|needs more partitions", re.I)
    found = 0
    for paragraph in paragraphs(RUNBOOK.read_text()):
        if paragraph.lstrip().startswith("```") or not advising.search(paragraph):
            continue
        found += 1
        assert PROCEDURE in paragraph and "remaps" in paragraph, (
            f"no warning where partitions are advised:\n{paragraph}"
        )
    assert found, "the runbook advises adding partitions somewhere (lag at max replicas)"
