"""The preview's tally, pure: what it counts, what it samples, and an event stored on two days once."""

from __future__ import annotations

import json
from datetime import date

from api.filter_preview import Tally, judge
from api.store import StoredEvent
from schemas.event_filter import compile_filter

FILTER = compile_filter('data.channel == "whatsapp"')


def _stored(n: int, data: dict[str, object] | None, day: int = 7) -> StoredEvent:
    event = {"id": f"evt_{n}", "type": "message.sent", "created_at": "2026-12-07T10:00:00.000Z",
             "account_id": "acct_a", "data": data}  # fmt: skip
    return StoredEvent(date(2026, 12, day), f"evt_{n}", None if data is None else json.dumps(event))


def test_the_tally_counts_each_verdict_and_keeps_three_samples_of_each() -> None:
    tally = Tally()
    for n in range(5):
        tally.add(FILTER, _stored(n, {"channel": "whatsapp"}))
    tally.add(FILTER, _stored(10, {"channel": "sms"}))
    tally.add(FILTER, _stored(11, {"text": "no channel"}))
    tally.add(FILTER, _stored(12, None))  # a type the webhook is not subscribed to: not read out
    assert (tally.scanned, tally.other_types) == (8, 1)
    assert tally.counts == {"matched": 5, "not_matched": 1, "errored": 1}
    assert [s.event_id for s in tally.samples["matched"]] == ["evt_0", "evt_1", "evt_2"]
    assert tally.samples["errored"][0].error == 'Key not found in map : "channel"'
    assert tally.samples["matched"][0].error is None


def test_an_event_stored_on_two_days_counts_once_in_a_page() -> None:
    tally = Tally()
    tally.add(FILTER, _stored(1, {"channel": "whatsapp"}, day=7))
    tally.add(FILTER, _stored(1, {"channel": "whatsapp"}, day=6))
    assert tally.counts["matched"] == 1 and tally.scanned == 2


def test_a_stored_event_without_its_fields_is_an_error_not_a_crash() -> None:
    assert judge(FILTER, {"data": {}}) == ("errored", "stored event lacks type, account_id or data")
