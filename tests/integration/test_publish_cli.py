"""`hookfleet publish`: one event from flags, many from NDJSON with rejected lines reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.models import Event
from schemas.topics import Topics
from tests.integration.test_dispatcher import consume_all

pytestmark = pytest.mark.integration

HOOKFLEET = str(Path(sys.executable).with_name("hookfleet"))


def _publish(kafka_bootstrap: str, topics: Topics, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "HOOKFLEET_TOPIC_PREFIX": topics.prefix}
    return subprocess.run([HOOKFLEET, "publish", *args], env=env, capture_output=True, text=True, timeout=60)


def test_publish_one_event_from_flags(kafka_bootstrap: str, topics: Topics) -> None:
    result = _publish(kafka_bootstrap, topics, "--account", "acct_7", "--type", "message.read", "--data", '{"m": 1}')
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("published evt_")
    (message,) = consume_all(kafka_bootstrap, topics.events, 1)
    event = Event.model_validate_json(message.value())
    assert (event.account_id, event.type.value, event.data) == ("acct_7", "message.read", {"m": 1})
    assert message.key() == b"acct_7"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--account", "a", "--type", "message.exploded"], "invalid event: type"),
        (["--account", "a", "--type", "message.read", "--data", "{oops"], "--data is not valid JSON"),
        (["--account", "a", "--type", "message.read", "--data", "[1]"], "--data must be a JSON object"),
        (["--type", "message.read"], "--account required"),
    ],
)
def test_publish_bad_flags_fail_in_one_line(
    kafka_bootstrap: str, topics: Topics, args: list[str], expected: str
) -> None:
    result = _publish(kafka_bootstrap, topics, *args)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, result.stderr


def test_publish_ndjson_reports_rejected_lines_and_publishes_the_rest(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    lines = [
        json.dumps({"account_id": "acct_1", "type": "contact.created", "data": {"n": 1}}),
        json.dumps({"account_id": "acct_1", "type": "contact.deleted", "data": {}}),
        "",
        "{not json",
        json.dumps(
            {"account_id": "acct_2", "type": "message.sent", "data": {"n": 2}, "created_at": "2026-11-27T10:00:00Z"}
        ),
        json.dumps({"account_id": "acct_2", "type": "message.sent", "data": {}, "color": "red"}),
        json.dumps({"account_id": "acct_3", "type": "campaign.completed", "data": {"n": 3}}),
    ]
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    result = _publish(kafka_bootstrap, topics, "--file", str(path))
    assert result.returncode == 1  # some lines were rejected
    assert result.stdout.strip() == "sent 3, rejected 3", result.stdout
    err = result.stderr
    assert "line 2: type: 'contact.deleted' is not an event type" in err, err
    assert "line 4: not valid JSON" in err and "line 6: unknown field(s): color" in err, err
    events = [Event.model_validate_json(m.value()) for m in consume_all(kafka_bootstrap, topics.events, 3)]
    assert sorted(int(e.data["n"]) for e in events) == [1, 2, 3]


def test_publish_ndjson_with_an_oversized_line_reports_it_and_sends_every_other_line(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    big = "x" * (2 * 1024 * 1024)
    lines = [json.dumps({"account_id": "acct_1", "type": "contact.created", "data": {"n": n}}) for n in range(5)]
    lines.insert(0, json.dumps({"account_id": "acct_1", "type": "contact.created", "data": {"blob": big}}))
    lines.insert(3, json.dumps({"account_id": "acct_1", "type": "contact.created", "data": {"blob": big[:300_000]}}))
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    result = _publish(kafka_bootstrap, topics, "--file", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "KafkaException" not in result.stderr
    assert result.stdout.strip() == "sent 5, rejected 2", result.stdout
    assert "line 1: event is 2097" in result.stderr and "above the 262144 byte limit" in result.stderr
    assert "line 4: event is 300" in result.stderr, result.stderr
    events = [Event.model_validate_json(m.value()) for m in consume_all(kafka_bootstrap, topics.events, 5)]
    assert sorted(int(e.data["n"]) for e in events) == [0, 1, 2, 3, 4]


def test_publish_a_missing_file_is_one_line(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> None:
    missing = _publish(kafka_bootstrap, topics, "--file", str(tmp_path / "nope.ndjson"))
    assert missing.returncode == 1
    assert missing.stderr == f"hookfleet: error: cannot read {tmp_path / 'nope.ndjson'}: No such file or directory\n"


def test_publish_help_points_large_data_at_file() -> None:
    result = subprocess.run([HOOKFLEET, "publish", "--help"], capture_output=True, text=True, timeout=30)
    assert "use --file" in " ".join(result.stdout.split()) and "256 KiB" in result.stdout
