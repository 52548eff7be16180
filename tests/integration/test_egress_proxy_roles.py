"""The roles deliver through HOOKFLEET_EGRESS_PROXY: the dispatcher (a real process, on uvloop) and the API's
Test, each through a real squid; receivers see the proxy's address, and the proxy's password stays out of
the dispatcher's log and of the API's answers (the tunnel's cases are in test_egress_proxy.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hookfleet.settings import CommonSettings
from producer.publisher import EventPublisher, build_event
from schemas.catalog import EventType, sample_data
from schemas.topics import Topics
from tests.support.api_client import RunningApi, api_settings
from tests.support.fleet import Fleet, seed_account, seed_webhook
from tests.support.receiver import HttpsReceiver
from tests.support.squid import OUTGOING_ADDRESS, Squid
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

PASSWORD = "r0les-pr0xy-pw"


@pytest.fixture
def squid() -> Iterator[Squid]:
    proxy = Squid(users={"fleet": PASSWORD}).start()
    yield proxy
    proxy.stop()


def test_the_dispatcher_delivers_through_the_proxy(
    fleet: Fleet, squid: Squid, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_a")
    _, secret = seed_webhook(database_url, "acct_a", receiver.url("/proxied"), ["message.read"])
    receiver.expect("/proxied", secret=secret)
    dispatcher = fleet.start_dispatcher(HOOKFLEET_EGRESS_PROXY=squid.url_with("fleet", PASSWORD))
    settings = CommonSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topics.prefix)
    with EventPublisher(settings) as publisher:
        for _ in range(2):
            publisher.publish_and_wait(
                build_event("acct_a", EventType.MESSAGE_READ, sample_data(EventType.MESSAGE_READ))
            )
    wait_until(lambda: len(receiver.at("/proxied")) >= 2, 30, "two deliveries through squid")
    got = receiver.at("/proxied")
    assert all(r.signature_ok for r in got)
    assert {r.peer[0] for r in got if r.peer is not None} == {OUTGOING_ADDRESS}  # the proxy's connection
    assert PASSWORD not in dispatcher.log_text()


async def test_the_apis_test_goes_through_the_proxy(
    squid: Squid, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, ca_bundle: str, topics: Topics
) -> None:
    proxied = api_settings(
        database_url, kafka_bootstrap, ca_bundle, topics, egress_proxy=squid.url_with("fleet", PASSWORD)
    )
    async with RunningApi(proxied) as api:
        _, key = api.account("Acme", "acct_a")
        created = await api.call(
            "POST", "/v1/webhooks", key, {"name": "CRM", "url": receiver.url("/tested"), "events": ["message.read"]}
        )
        assert created.status == 201, created.body
        receiver.expect("/tested", secret=created.body["secret"])
        tested = await api.call("POST", f"/v1/webhooks/{created.body['id']}/test", key)
    assert tested.status == 200 and tested.body["ok"] is True, tested.body
    [got] = receiver.at("/tested")
    assert got.signature_ok is True and got.peer is not None and got.peer[0] == OUTGOING_ADDRESS
    assert PASSWORD not in str(tested.body)
