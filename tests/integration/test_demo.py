"""`hookfleet demo` (what `make demo` runs) shows deliveries end to end and stops cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ports import free_ports

pytestmark = pytest.mark.integration


def test_demo_shows_signed_deliveries_retries_and_stops_cleanly(fleet_env: dict[str, str], tmp_path: Path) -> None:
    ports = free_ports(5)
    env = {
        **os.environ,
        **fleet_env,
        "HOOKFLEET_PORT": str(ports),
        "HOOKFLEET_HOME": str(tmp_path),
        "HOOKFLEET_RETRY_DELAYS_S": "[2, 2, 2]",
    }
    env.pop("HOOKFLEET_SECRET_KEY")  # the demo uses the developer's key file, created on first use
    hookfleet = str(Path(sys.executable).with_name("hookfleet"))
    result = subprocess.run(
        [hookfleet, "demo", "--duration", "14", "--events", "27", "--metrics-base-port", str(ports + 1)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "exited unexpectedly" not in out
    lines = out.splitlines()
    rows = [line for line in lines if line[:2].isdigit() and "evt_" in line]
    assert sum(" 200 " in row for row in rows) >= 27, out
    assert any("Ops alerts (flaky)" in r and " 500 " in r for r in rows), out  # a failed first attempt ...
    assert any("Ops alerts (flaky)" in r and "   2 " in r and " 200 " in r for r in rows), out  # ... retried
    assert not any("Paused integration" in r for r in rows)  # the inactive webhook gets nothing
    # The retired endpoint answers 410: one attempt, the webhook is switched off, and the health webhook
    # gets the signed webhook.disabled about it.
    assert any("Retired endpoint" in r and " 410 " in r for r in rows), out
    assert any("switched off: Retired endpoint (410) (its endpoint answered 410 Gone)" in line for line in lines), out
    assert any("Webhook health" in r and "webhook.disabled" in r and " 200 " in r for r in rows), out
    summary = lines[-2]
    assert "(0 bad)" in summary and "dropped" in summary, summary
    for role in ("dispatcher", "retry-scheduler", "recorder", "api"):
        assert f"{role:16} stopped (exit 0)" in out
