"""The API's own readiness follows PostgreSQL: with the database unreachable its metrics port answers /readyz
with 503 and exports hookfleet_ready 0 and hookfleet_database_up 0, which the API and database pages read.
(It answered 200 "serving" whatever the database did, so a PostgreSQL outage paged nobody.)"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.fleet import TEST_SECRET_KEY, Role
from tests.support.ports import free_port, scrape

pytestmark = pytest.mark.integration


def readyz(port: int) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return int(resp.status), json.loads(resp.read())["reason"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["reason"]
    except (urllib.error.URLError, OSError) as exc:
        return None, repr(exc)


def test_the_api_is_unready_and_reports_the_database_down_while_postgresql_is_unreachable(tmp_path: Path) -> None:
    # Given an API whose database address answers nothing (a port nobody listens on).
    metrics_port, api_port, nobody = free_port(), free_port(), free_port()
    env = {
        "DATABASE_URL": f"postgresql://hookfleet:unused@127.0.0.1:{nobody}/hookfleet",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "HOOKFLEET_SECRET_KEY": TEST_SECRET_KEY,
        "HOOKFLEET_METRICS_PORT": str(metrics_port),
        "HOOKFLEET_HOST": "127.0.0.1",
        "HOOKFLEET_PORT": str(api_port),
    }
    api = Role("api", env, tmp_path)
    try:
        # When its metrics port answers: then it says unready, naming the database, and exports both zeros.
        deadline = time.monotonic() + 30
        answer: tuple[int | None, str] = (None, "")
        while time.monotonic() < deadline:
            answer = readyz(metrics_port)
            if answer[0] is not None and "database" in answer[1]:
                break
            assert api.proc.poll() is None, api.log_text()[-3000:]
            time.sleep(0.2)
        assert answer[0] == 503 and answer[1].startswith("database:"), f"{answer}\n{api.log_text()[-3000:]}"
        samples = scrape(metrics_port)
        assert samples["hookfleet_ready"] == 0.0
        assert samples['hookfleet_database_up{check="ping"}'] == 0.0
    finally:
        api.terminate()
