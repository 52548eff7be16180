"""The alert rules behave as on-call needs, proven with promtool's rule unit tests.

deploy/prometheus/alerts.test.yml feeds fleet states as series and states what must fire; this test runs
it with Debian's promtool (`make test` installs the `prometheus` package, which ships it) and checks that
the scenarios cover every alert, that no page fires when one customer's endpoint fails, and that every rule
carries what a responder needs: severity, summary, description and a runbook section that exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts.test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
ONE_CUSTOMER = "one customer's dead endpoint pages nobody"


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def scenarios() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    return tests


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.fail("promtool is not installed: `make test` installs Debian's prometheus package, which ships it")
    return found


def anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    text = RUNBOOK.read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {anchor(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


@pytest.mark.tooling
def test_promtool_scenarios_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.tooling
def test_promtool_accepts_the_rule_file() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_in_some_scenario() -> None:
    fired = {
        case["alertname"] for test in scenarios() for case in test.get("alert_rule_test", []) if case.get("exp_alerts")
    }
    missing = {rule["alert"] for rule in alert_rules()} - fired
    assert not missing, f"no promtool scenario makes these fire: {sorted(missing)}"


def test_no_page_fires_when_one_customer_fails() -> None:
    (scenario,) = [t for t in scenarios() if t["name"] == ONE_CUSTOMER]
    silent = {c["alertname"] for c in scenario["alert_rule_test"] if not c.get("exp_alerts")}
    pages = {rule["alert"] for rule in alert_rules() if rule["labels"]["severity"] == "critical"}
    assert pages <= silent, f"pages not proven silent for one failing customer: {sorted(pages - silent)}"
    tickets = {c["alertname"]: c["exp_alerts"] for c in scenario["alert_rule_test"] if c.get("exp_alerts")}
    for name, alerts in tickets.items():
        assert all(a["exp_labels"]["severity"] == "warning" for a in alerts), name


def test_every_rule_tells_the_responder_what_and_where_to_look() -> None:
    sections = runbook_sections()
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert "DESIGN.md" not in annotations["description"], f"{name} cites a file outside the repository"
        url = annotations["runbook_url"]
        assert url == f"docs/runbook.md#{name.lower()}", f"{name}: runbook_url {url}"
        section = sections.get(name.lower())
        assert section is not None, f"docs/runbook.md has no section '## {name}'"
        for part in ("What it means", "First three commands", "Mitigate"):
            assert f"**{part}**" in section, f"runbook section {name} lacks '{part}'"
        commands = re.search(r"\*\*First three commands\*\*(.*?)\*\*Mitigate\*\*", section, re.S)
        assert commands is not None and commands.group(1).count("\n```") >= 2, f"{name}: commands as a code block"


def test_every_runbook_section_belongs_to_an_alert() -> None:
    names = {rule["alert"].lower() for rule in alert_rules()}
    extra = {a for a in runbook_sections() if a.startswith("hookfleet")} - names
    assert not extra, f"runbook sections for alerts that do not exist: {sorted(extra)}"
