"""Deliveries through a real forward proxy (Debian's squid, started by each test): the tunnel, keep-alive
through it, the SSRF guard's guarantee (the CONNECT names the checked address), a refusing, an absent and a
hanging proxy, and the proxy's password kept out of every text. No broker or database: only `Deliverer`."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from delivery import deliverer as delivery
from delivery.deliverer import Deliverer, DeliveryResult
from delivery.endpoint import Endpoint
from hookfleet.settings import DeliverySettings
from producer.publisher import build_event
from schemas.catalog import EventType, sample_data
from schemas.models import Outcome
from tests.support.receiver import HttpsReceiver
from tests.support.squid import OUTGOING_ADDRESS, Squid
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLWRlbGl2ZXJ5LXRlc3Rz"
REBIND_HOST = "rebind.hookfleet.test"  # no DNS server knows it: the test's resolver and squid's hosts file do
PASSWORD = "pr0xy p@ss:w/rd"  # characters that need escaping in a URL


def settings(ca_bundle: str, proxy: str, allow: str = "127.0.0.0/8", **overrides: Any) -> DeliverySettings:
    return DeliverySettings(ca_bundle=ca_bundle, allow_networks=allow, egress_proxy=proxy, **overrides)


async def send(deliverer: Deliverer, url: str) -> DeliveryResult:
    event = build_event("acct_1", EventType.MESSAGE_READ, sample_data(EventType.MESSAGE_READ))
    return await deliverer.deliver(Endpoint("wh_test", "acct_1", url, frozenset(EventType), True, SECRET), event, 1)


class ScriptedDns:
    """A resolver that answers from a script, one answer list per lookup (the last repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return self.answers[min(len(self.lookups), len(self.answers)) - 1]


@pytest.fixture
def squid() -> Iterator[Squid]:
    proxy = Squid().start()
    yield proxy
    proxy.stop()


@pytest.fixture
async def through_squid(ca_bundle: str, squid: Squid) -> AsyncIterator[Deliverer]:
    d = Deliverer(settings(ca_bundle, squid.url))
    yield d
    await d.close()


async def closed_tunnels(squid: Squid, count: int) -> list[str]:
    """The CONNECTs squid logged, once `count` are in (squid logs a tunnel when it closes)."""
    await wait_until_async(lambda: len(squid.connects()) >= count, 15, lambda: f"{count} CONNECTs in\n{squid.logs()}")
    return squid.connects()


# ----------------------------------------------------------------------------- the tunnel


async def test_a_delivery_goes_through_the_proxy_signed_and_verified_end_to_end(
    through_squid: Deliverer, receiver: HttpsReceiver
) -> None:
    url = receiver.expect("/via-proxy", secret=SECRET)
    result = await send(through_squid, url)
    assert result.ok and result.status_code == 200 and result.excerpt == "answered 200", result
    [got] = receiver.at("/via-proxy")
    assert got.signature_ok is True
    assert got.peer is not None and got.peer[0] == OUTGOING_ADDRESS  # the receiver saw the proxy's connection


async def test_two_deliveries_share_one_tunnel(
    ca_bundle: str, squid: Squid, receiver: HttpsReceiver, tls_ca: Any
) -> None:
    url = receiver.expect("/kept", secret=SECRET)
    d = Deliverer(settings(ca_bundle, squid.url))
    try:
        results = [await send(d, url) for _ in range(2)]
    finally:
        await d.close()
    assert all(r.ok for r in results), results
    got = receiver.at("/kept")
    assert len(got) == 2 and len({r.peer for r in got}) == 1  # one connection from the proxy served both
    # A last tunnel, opened after the first one closed, to another port: once squid logged it, it logged
    # every tunnel before it (it logs a tunnel when it closes).
    marker = HttpsReceiver(tls_ca).start()
    last = Deliverer(settings(ca_bundle, squid.url))
    try:
        assert (await send(last, marker.expect("/marker"))).ok
    finally:
        await last.close()
        marker.stop()
    await wait_until_async(
        lambda: f"127.0.0.1:{marker.port}" in squid.connects(), 15, lambda: f"the marker's CONNECT\n{squid.logs()}"
    )
    assert squid.connects() == [f"127.0.0.1:{receiver.port}", f"127.0.0.1:{marker.port}"]


# ----------------------------------------------------------------------------- SSRF guard


@pytest.fixture
def named_receiver(tls_ca: Any) -> Iterator[HttpsReceiver]:
    """127.0.0.1 (the checked, 'public' address), with a certificate for REBIND_HOST."""
    server = HttpsReceiver(tls_ca, names=(REBIND_HOST,)).start()
    yield server
    server.stop()


@pytest.fixture
def inner_receiver(tls_ca: Any, named_receiver: HttpsReceiver) -> Iterator[HttpsReceiver]:
    """127.0.0.2, at the same port, stands for an address inside the network: it must never see a request."""
    server = HttpsReceiver(tls_ca, names=(REBIND_HOST,), host="127.0.0.2", port=named_receiver.port).start()
    yield server
    server.stop()


async def test_dns_rebinding_cannot_steer_the_proxy_the_connect_names_the_checked_address(
    ca_bundle: str,
    named_receiver: HttpsReceiver,
    inner_receiver: HttpsReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first answer passes the guard; every later answer, and squid's own lookup, point inside the
    network. A CONNECT naming the host would let squid resolve it to the inner address."""
    squid = Squid(hosts={REBIND_HOST: "127.0.0.2"}).start()
    dns = ScriptedDns(["127.0.0.1"], ["127.0.0.2"])
    d = Deliverer(settings(ca_bundle, squid.url, allow="127.0.0.1/32"), resolve=dns)
    url = f"https://{REBIND_HOST}:{named_receiver.port}/hook"
    try:
        first = [await send(d, url) for _ in range(3)]
        assert all(r.ok for r in first), first
        assert dns.lookups == [REBIND_HOST]  # checked once, pinned
        monkeypatch.setattr(delivery, "PIN_TTL_S", 0.0)  # the pin expires: the next delivery looks up again
        rebound = await send(d, url)
        await d.close()
        connects = await closed_tunnels(squid, 1)
    finally:
        await d.close()
        squid.stop()
    assert (rebound.outcome, rebound.error) == (Outcome.BLOCKED, "blocked address")
    assert len(named_receiver.at("/hook")) == 3 and inner_receiver.count() == 0
    assert connects == [f"127.0.0.1:{named_receiver.port}"]


async def test_tls_inside_the_tunnel_verifies_the_url_host(
    ca_bundle: str, squid: Squid, receiver: HttpsReceiver
) -> None:
    # The receiver's certificate names localhost and 127.0.0.1, not REBIND_HOST: the proxy changes nothing.
    d = Deliverer(settings(ca_bundle, squid.url), resolve=ScriptedDns(["127.0.0.1"]))
    try:
        result = await send(d, f"https://{REBIND_HOST}:{receiver.port}/wrong-name")
    finally:
        await d.close()
    assert (result.outcome, result.error) == (Outcome.TLS_ERROR, "tls error") and receiver.at("/wrong-name") == []


# ----------------------------------------------------------------------------- a proxy that refuses, is absent, hangs


async def test_a_proxy_that_refuses_the_connect_fails_the_delivery_as_a_connection_error(
    ca_bundle: str, receiver: HttpsReceiver
) -> None:
    squid = Squid(denied_ports=(receiver.port,)).start()
    d = Deliverer(settings(ca_bundle, squid.url))
    try:
        result = await send(d, receiver.expect("/denied"))
    finally:
        await d.close()
        squid.stop()
    assert (result.outcome, result.error, result.status_code) == (
        Outcome.CONNECTION_ERROR, "egress proxy refused CONNECT: 403", None,
    )  # fmt: skip
    assert receiver.at("/denied") == []


async def test_proxy_credentials_open_the_tunnel_and_the_password_is_never_shown(
    ca_bundle: str, receiver: HttpsReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    squid = Squid(users={"hookfleet": PASSWORD}).start()
    url = receiver.expect("/authed", secret=SECRET)
    right = Deliverer(settings(ca_bundle, squid.url_with("hookfleet", PASSWORD)))
    wrong_settings = settings(ca_bundle, squid.url_with("hookfleet", PASSWORD + "x"))
    wrong = Deliverer(wrong_settings)
    anonymous = Deliverer(settings(ca_bundle, squid.url))
    try:
        ok = await send(right, url)
        refused = await send(wrong, url)
        unauthenticated = await send(anonymous, url)
    finally:
        for d in (right, wrong, anonymous):
            await d.close()
        squid.stop()
    assert ok.ok, ok
    assert (refused.outcome, refused.error) == (Outcome.CONNECTION_ERROR, "egress proxy refused CONNECT: 407")
    assert unauthenticated.error == "egress proxy refused CONNECT: 407"
    assert len(receiver.at("/authed")) == 1
    shown = [repr(refused), repr(wrong_settings), str(wrong_settings), repr(wrong._proxy), caplog.text]
    assert not any(PASSWORD in text or "pr0xy" in text for text in shown)


async def test_a_proxy_that_is_not_listening_is_named_in_the_error_and_keeps_the_hosts_pin(
    ca_bundle: str, receiver: HttpsReceiver
) -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    dns = ScriptedDns(["127.0.0.1"])
    d = Deliverer(settings(ca_bundle, f"http://127.0.0.1:{port}"), resolve=dns)
    try:
        results = [await send(d, f"https://{REBIND_HOST}:{receiver.port}/no-proxy") for _ in range(2)]
    finally:
        await d.close()
    assert {(r.outcome, r.error) for r in results} == {
        (Outcome.CONNECTION_ERROR, "egress proxy unreachable (connection refused)")
    }
    # The proxy's outage says nothing against the host's address: no lookup per delivery while it lasts.
    assert dns.lookups == [REBIND_HOST] and receiver.at("/no-proxy") == []


@pytest.mark.parametrize(
    ("bounds", "expected_s"),
    [
        ({"delivery_timeout_s": 2.0}, 2.0),  # the attempt's deadline (10 s by default) ends the CONNECT
        ({"delivery_timeout_s": 10.0, "connect_timeout_s": 1.0}, 1.0),  # the connect bound covers the CONNECT
    ],
)
async def test_a_proxy_that_never_answers_is_a_timeout_within_the_bounds(
    ca_bundle: str, receiver: HttpsReceiver, bounds: dict[str, Any], expected_s: float
) -> None:
    # A listener that accepts (the kernel completes TCP) and never answers the CONNECT.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    d = Deliverer(settings(ca_bundle, f"http://127.0.0.1:{silent.getsockname()[1]}", **bounds))
    try:
        started = time.monotonic()
        result = await send(d, receiver.expect("/behind-a-hanging-proxy"))
        took = time.monotonic() - started
    finally:
        await d.close()
        silent.close()
    assert (result.outcome, result.error) == (Outcome.TIMEOUT, "timeout")
    assert expected_s <= took < expected_s + 0.9, took
    assert receiver.at("/behind-a-hanging-proxy") == []
