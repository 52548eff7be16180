"""The wire models: round-trips exactly, and rejects bad input naming the field."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from delivery.deliverer import parse_target
from schemas.api import WebhookCreate, WebhookUpdate, is_reserved_header
from schemas.catalog import BY_TYPE, CATALOG, EventType, sample_data
from schemas.ids import new_attempt_id, new_event_id, new_webhook_id, ulid
from schemas.models import AttemptRecord, DeliveryTask, Event, Outcome, Webhook
from schemas.topics import Topics

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
aware = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
)
events = st.builds(
    Event,
    id=st.from_regex(r"^evt_[0-9A-Za-z]{1,30}$", fullmatch=True),
    type=st.sampled_from(EventType),
    created_at=aware,
    account_id=st.from_regex(r"^[A-Za-z0-9_.:-]{1,20}$", fullmatch=True),
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)


def valid_event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W",
        "type": "message.read",
        "created_at": "2026-11-27T10:15:03.123Z",
        "account_id": "acct_42",
        "data": {"message_id": "m1"},
    }
    base.update(overrides)
    return base


@given(events)
def test_event_round_trips_through_json_bytes(event: Event) -> None:
    assert Event.model_validate_json(event.body()) == event


@given(events, st.integers(1, 4), st.integers(0, 2**41), st.booleans())
def test_delivery_task_round_trips(event: Event, attempt: int, due_at: int, parked: bool) -> None:
    task = DeliveryTask(event=event, webhook_id="wh_01ABC", attempt=attempt, due_at=due_at, parked=parked)
    assert DeliveryTask.model_validate_json(task.model_dump_json()) == task


@given(aware, st.sampled_from(Outcome), st.one_of(st.none(), st.integers(100, 599)))
def test_attempt_record_round_trips(when: datetime, outcome: Outcome, status: int | None) -> None:
    record = AttemptRecord(
        attempt_id="att_1",
        event_id="evt_1",
        event_type=EventType.CONTACT_CREATED,
        account_id="a",
        webhook_id="wh_1",
        attempt=2,
        outcome=outcome,
        status_code=status,
        response_ms=12,
        attempted_at=when,
        next_step="retry",
    )
    assert AttemptRecord.model_validate_json(record.model_dump_json()) == record


def test_created_at_is_serialised_as_rfc3339_utc_with_z() -> None:
    offset = timezone(timedelta(hours=-3))
    event = Event(
        id="evt_1",
        type=EventType.MESSAGE_READ,
        account_id="a",
        data={},
        created_at=datetime(2026, 11, 27, 7, 0, 0, 123456, tzinfo=offset),
    )
    assert json.loads(event.body())["created_at"] == "2026-11-27T10:00:00.123Z"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"type": "message.deleted"}, "type"),
        ({"id": None}, "id"),
        ({"id": "123"}, "id"),
        ({"created_at": "2026-11-27T10:15:03"}, "created_at"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"account_id": ""}, "account_id"),
        ({"data": [1, 2]}, "data"),
        ({"extra": 1}, "extra"),
    ],
)
def test_event_rejects_bad_input_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    body = valid_event(**overrides)
    if overrides.get("id", "") is None:
        del body["id"]
    with pytest.raises(ValidationError) as info:
        Event.model_validate_json(json.dumps(body))
    assert field in {str(err["loc"][0]) for err in info.value.errors()}


def test_delivery_task_rejects_attempt_outside_schedule() -> None:
    event = Event.model_validate_json(json.dumps(valid_event()))
    with pytest.raises(ValidationError, match="attempt"):
        DeliveryTask(event=event, webhook_id="wh_1", attempt=5, due_at=0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/hook", "must be https"),
        ("https:///nohost", "no host"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://@example.com/", "credentials"),
        ("https://:@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("https://example.com:99999/", "invalid port"),
    ],
)
def test_webhook_url_rules(url: str, message: str) -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValidationError, match=message):
        Webhook(
            id="wh_1",
            account_id="a",
            name="CRM Sync",
            url=url,
            events=[EventType.MESSAGE_READ],
            active=True,
            status="healthy",
            status_changed_at=now,
            created_at=now,
            updated_at=now,
        )


def test_webhook_needs_at_least_one_event() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValidationError, match="at least one event"):
        Webhook(
            id="wh_1",
            account_id="a",
            name="CRM Sync",
            url="https://example.com/",
            events=[],
            active=True,
            status="healthy",
            status_changed_at=now,
            created_at=now,
            updated_at=now,
        )


def test_catalog_has_the_nine_types_each_with_a_valid_sample() -> None:
    assert [e.type.value for e in CATALOG] == [
        "message.incoming",
        "message.sent",
        "message.delivered",
        "message.read",
        "message.failed",
        "contact.created",
        "contact.updated",
        "campaign.completed",
        "transfer.created",
    ]
    for entry in CATALOG:
        assert entry.fires_when and entry.sample_data
        Event.model_validate_json(json.dumps(valid_event(type=entry.type.value, data=sample_data(entry.type))))
    copy = sample_data(EventType.MESSAGE_READ)
    copy["mutated"] = True
    assert "mutated" not in BY_TYPE[EventType.MESSAGE_READ].sample_data


def test_ulid_known_answer_and_ordering() -> None:
    assert ulid(now_ms=0, randomness=0) == "0" * 26
    assert ulid(now_ms=1469918176385, randomness=0) == "01ARYZ6S41" + "0" * 16  # ULID spec example time
    assert ulid(now_ms=1, randomness=2**80 - 1) > ulid(now_ms=0, randomness=2**80 - 1)
    with pytest.raises(ValueError, match="out of range"):
        ulid(now_ms=-1)


def test_ulid_random_part_known_answer() -> None:
    assert ulid(now_ms=0, randomness=2**80 - 1) == "0" * 10 + "Z" * 16
    assert ulid(now_ms=2**48 - 1, randomness=1) == "7" + "Z" * 9 + "0" * 15 + "1"
    with pytest.raises(ValueError, match="80 bits"):
        ulid(now_ms=0, randomness=2**80)


def _decode(text: str) -> int:
    return sum("0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(c) << (5 * n) for n, c in enumerate(reversed(text)))


def test_generated_ids_are_unique_sortable_ulids_of_now() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_attempt_id() for _ in range(20_000)] + [new_event_id(), new_webhook_id()]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    bodies = [i.split("_", 1)[1] for i in ids]
    assert [i.split("_", 1)[0] for i in ids[-3:]] == ["att", "evt", "wh"]
    assert all(len(b) == 26 for b in bodies)
    stamps = [_decode(b[:10]) for b in bodies]
    assert all(before <= t <= after for t in stamps)
    assert stamps == sorted(stamps)  # ids of a later millisecond sort after earlier ones
    assert all(ulid(_decode(b) >> 80, _decode(b) & (2**80 - 1)) == b for b in bodies[:500])


def test_a_forked_child_draws_its_own_randomness() -> None:
    """Ids draw randomness in batches; a fork must not leave the parent's batch to the child too."""
    new_attempt_id()  # the parent now holds a partly used batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, " ".join(new_attempt_id()[-16:] for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    child = set(os.read(read, 65536).decode().split())
    os.waitpid(pid, 0)
    os.close(read)
    parent = {new_attempt_id()[-16:] for _ in range(50)}
    assert len(child) == 50 and not child & parent


def test_topic_prefix_applies_to_every_topic() -> None:
    topics = Topics.with_prefix("t1.")
    assert topics.events == "t1.webhooks.events"
    assert topics.retries == ("t1.webhooks.retry.10s", "t1.webhooks.retry.60s", "t1.webhooks.retry.5m")
    assert all(name.startswith("t1.webhooks.") for name in topics.all()) and len(topics.all()) == 9
    assert topics.prefix == "t1." and Topics().prefix == ""


@pytest.mark.parametrize(
    "name",
    [
        "Transfer-Encoding",
        "connection",
        "Keep-Alive",
        "Upgrade",
        "Expect",
        "te",
        "Trailer",
        "Proxy-Authorization",
        "Proxy-Connection",
        "Content-Length",
        "X-Webhook-Signature",
    ],
)
def test_hop_by_hop_and_framing_headers_are_reserved_for_create_and_update(name: str) -> None:
    body = {"name": "CRM Sync", "url": "https://example.com/", "events": ["message.read"], "headers": {name: "x"}}
    for model, request in ((WebhookCreate, body), (WebhookUpdate, {"headers": {name: "x"}})):
        with pytest.raises(ValidationError, match=f"header {name} is reserved") as refused:
            model.model_validate_json(json.dumps(request))
        assert [e["loc"] for e in refused.value.errors()] == [("headers",)]
    assert is_reserved_header(name) and is_reserved_header(name.upper())


def test_ordinary_custom_headers_are_not_reserved() -> None:
    headers = {"Authorization": "Bearer x", "X-Tenant": "7", "Proxyish": "1", "Tea": "2"}
    body = {"name": "CRM Sync", "url": "https://example.com/", "events": ["message.read"], "headers": headers}
    assert WebhookCreate.model_validate_json(json.dumps(body)).headers == headers


@pytest.mark.parametrize(
    "url",
    [
        "https://@example.com/",
        "https://:@example.com/",
        "https://user@example.com/",
        "https://u:p@example.com/",
        "https://example.com/a@b?c=@",
        "https://example.com:8443/x",
    ],
)
def test_registration_and_delivery_agree_on_userinfo(url: str) -> None:
    """A URL the API registers is one the delivery function accepts, and the other way round."""
    body = {"name": "CRM Sync", "url": url, "events": ["message.read"]}
    try:
        WebhookCreate.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        registered = False
        assert [e["loc"] for e in exc.errors()] == [("url",)] and "credentials" in str(exc)
    else:
        registered = True
    try:
        parse_target(url)
    except ValueError:
        delivered = False
    else:
        delivered = True
    assert registered == delivered == ("@" not in url.split("/")[2])
