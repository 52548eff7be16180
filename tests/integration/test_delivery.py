"""The delivery path against real HTTPS receivers: SSRF guard (incl. DNS rebinding), TLS verification,
timeouts, redirects, body cap, keep-alive and the User-Agent. No broker or database: only `Deliverer`."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from delivery import deliverer as delivery
from delivery import http1
from delivery.deliverer import Deliverer, DeliveryResult
from delivery.endpoint import Endpoint
from hookfleet import USER_AGENT
from hookfleet.settings import DeliverySettings
from producer.publisher import build_event
from schemas.catalog import EventType, sample_data
from schemas.models import Outcome
from tests.support.receiver import HttpsReceiver

pytestmark = pytest.mark.integration

REBIND_HOST = "rebind.hookfleet.test"  # no DNS server knows it: only the test's resolver answers for it
SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLWRlbGl2ZXJ5LXRlc3Rz"


def settings(ca_bundle: str | None, allow: str = "127.0.0.0/8", **overrides: Any) -> DeliverySettings:
    return DeliverySettings(ca_bundle=ca_bundle, allow_networks=allow, **overrides)


def endpoint(url: str) -> Endpoint:
    return Endpoint("wh_test", "acct_1", url, frozenset(EventType), True, SECRET)


async def send(deliverer: Deliverer, url: str) -> DeliveryResult:
    event = build_event("acct_1", EventType.MESSAGE_READ, sample_data(EventType.MESSAGE_READ))
    return await deliverer.deliver(endpoint(url), event, 1)


class ScriptedDns:
    """A resolver that answers from a script, one answer list per lookup (the last repeats)."""

    def __init__(self, *answers: list[str] | OSError) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        answer = self.answers[min(len(self.lookups), len(self.answers)) - 1]
        if isinstance(answer, OSError):
            raise answer
        return answer


@pytest.fixture
def named_receiver(tls_ca) -> Iterator[HttpsReceiver]:
    """127.0.0.1, with a certificate for REBIND_HOST."""
    server = HttpsReceiver(tls_ca, names=(REBIND_HOST,)).start()
    yield server
    server.stop()


@pytest.fixture
def inner_receiver(tls_ca) -> Iterator[HttpsReceiver]:
    """127.0.0.2 stands for an address inside the operator's network: it must never see a request."""
    server = HttpsReceiver(tls_ca, names=(REBIND_HOST,), host="127.0.0.2").start()
    yield server
    server.stop()


@pytest.fixture
async def deliverer(ca_bundle: str) -> AsyncIterator[Deliverer]:
    d = Deliverer(settings(ca_bundle))
    yield d
    await d.close()


# ----------------------------------------------------------------------------- success, headers, keep-alive


async def test_a_delivery_carries_the_user_agent_and_reuses_one_connection(
    deliverer: Deliverer, receiver: HttpsReceiver
) -> None:
    url = receiver.expect("/ok", secret=SECRET)
    results = [await send(deliverer, url) for _ in range(5)]
    assert all(r.ok and r.status_code == 200 and r.excerpt == "answered 200" for r in results)
    got = receiver.at("/ok")
    assert len(got) == 5 and all(r.signature_ok for r in got)
    assert {r.headers["User-Agent"] for r in got} == {USER_AGENT}
    assert len({r.peer for r in got}) == 1  # keep-alive: one connection served all five


async def test_a_redirect_is_a_failure_and_is_not_followed(deliverer: Deliverer, receiver: HttpsReceiver) -> None:
    target = receiver.expect("/inside")
    url = receiver.expect("/moved", statuses=[302], headers={"Location": target})
    result = await send(deliverer, url)
    assert result.outcome is Outcome.HTTP_ERROR and result.status_code == 302
    assert result.error == "http 302 (redirects are not followed)"
    assert receiver.at("/inside") == []


async def test_a_large_response_is_read_only_up_to_the_cap(deliverer: Deliverer, receiver: HttpsReceiver) -> None:
    url = receiver.expect("/big", body=b"x" * (4 * 1024 * 1024))
    result = await send(deliverer, url)
    assert result.ok and result.excerpt == "x" * delivery.EXCERPT_BYTES


async def test_a_body_over_the_cap_is_cut_at_64_kib_and_its_connection_not_reused(
    ca_bundle: str, receiver: HttpsReceiver
) -> None:
    target = delivery.parse_target(receiver.expect("/endless", body=b"y" * (1024 * 1024)))
    pool = http1.Pool(
        "127.0.0.1",
        target.server_name,
        http1.tls_context(ca_bundle),
        connect_timeout_s=5.0,
        keepalive_s=30.0,
        body_cap=delivery.READ_CAP,
    )
    loop = asyncio.get_running_loop()
    try:
        answers = [await pool.request(target.port, target.request_head({}, 0), loop.time() + 10) for _ in range(2)]
    finally:
        pool.close()
    assert [(a.status, a.body) for a in answers] == [(200, b"y" * delivery.READ_CAP)] * 2
    assert delivery.READ_CAP == 64 * 1024 and pool.connections_opened == 2  # the cut connection was closed


async def test_a_non_2xx_answer_keeps_its_status_and_excerpt(deliverer: Deliverer, receiver: HttpsReceiver) -> None:
    result = await send(deliverer, receiver.expect("/down", statuses=[503]))
    assert result.outcome is Outcome.HTTP_ERROR and result.status_code == 503 and result.excerpt == "answered 503"


# ----------------------------------------------------------------------------- timeouts


async def test_a_hanging_receiver_times_out_at_exactly_the_delivery_timeout(
    deliverer: Deliverer, receiver: HttpsReceiver
) -> None:
    url = receiver.expect("/hang", hang=True)
    started = time.monotonic()
    result = await send(deliverer, url)
    took = time.monotonic() - started
    assert result.outcome is Outcome.TIMEOUT and result.error == "timeout" and result.status_code is None
    # The documented 10 s, not rounded up towards 11 s (the slack is for a machine whose cores are busy)
    assert 10.0 <= took < 10.9, took
    assert 10_000 <= result.response_ms < 10_900


async def test_the_connect_timeout_is_separate_from_the_total(ca_bundle: str) -> None:
    # A listener that never accepts: TCP completes in the kernel's backlog, the TLS handshake never does.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    d = Deliverer(settings(ca_bundle, connect_timeout_s=1.0))
    try:
        started = time.monotonic()
        result = await send(d, f"https://localhost:{silent.getsockname()[1]}/never")
        took = time.monotonic() - started
    finally:
        await d.close()
        silent.close()
    assert result.outcome is Outcome.TIMEOUT
    assert 1.0 <= took < 3.0, took  # the 1 s connect bound, far from the 10 s total


async def test_a_refused_connection_is_a_connection_error(deliverer: Deliverer) -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    result = await send(deliverer, f"https://localhost:{port}/")
    assert (result.outcome, result.error) == (Outcome.CONNECTION_ERROR, "connection refused")


# ----------------------------------------------------------------------------- TLS


async def test_an_untrusted_certificate_is_a_tls_error_and_the_ca_bundle_trusts_it(
    ca_bundle: str, receiver: HttpsReceiver
) -> None:
    url = receiver.expect("/tls")
    without = Deliverer(settings(None))
    try:
        refused = await send(without, url)
    finally:
        await without.close()
    assert (refused.outcome, refused.error) == (Outcome.TLS_ERROR, "tls error")
    assert receiver.at("/tls") == []
    with_bundle = Deliverer(settings(ca_bundle))
    try:
        assert (await send(with_bundle, url)).ok
    finally:
        await with_bundle.close()


async def test_tls_verifies_the_url_host_not_the_pinned_address(ca_bundle: str, receiver: HttpsReceiver) -> None:
    # The receiver's certificate names localhost and 127.0.0.1, not REBIND_HOST.
    dns = ScriptedDns(["127.0.0.1"])
    d = Deliverer(settings(ca_bundle), resolve=dns)
    try:
        result = await send(d, f"https://{REBIND_HOST}:{receiver.port}/wrong-name")
    finally:
        await d.close()
    assert result.outcome is Outcome.TLS_ERROR and receiver.at("/wrong-name") == []


# ----------------------------------------------------------------------------- SSRF guard


@pytest.mark.parametrize(
    "host",
    ["localhost", "127.0.0.1", "127.1", "2130706433", "0177.1", "127.0.0.1.", "0x7f.1", "[::ffff:127.0.0.1]"],
)
async def test_blocked_addresses_are_refused_before_any_connection(
    ca_bundle: str, receiver: HttpsReceiver, host: str
) -> None:
    d = Deliverer(settings(ca_bundle, allow=""))
    try:
        result = await send(d, f"https://{host}:{receiver.port}/guarded")
    finally:
        await d.close()
    assert (result.outcome, result.error, result.status_code) == (Outcome.BLOCKED, "blocked address", None)
    assert receiver.at("/guarded") == []


async def test_a_non_standard_literal_is_refused_even_inside_an_allowed_network(
    deliverer: Deliverer, receiver: HttpsReceiver
) -> None:
    # 127.0.0.0/8 is allowed here, yet `127.1` (the client would read it as 127.0.0.1) is refused by form.
    receiver.expect("/short")
    result = await send(deliverer, f"https://127.1:{receiver.port}/short")
    assert result.outcome is Outcome.BLOCKED and receiver.at("/short") == []


async def test_dns_rebinding_cannot_move_the_connection_after_the_check(
    ca_bundle: str,
    named_receiver: HttpsReceiver,
    inner_receiver: HttpsReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first answer passes the guard; every later answer points inside the network. The client
    must connect to the checked address (and can only do so: no DNS server knows REBIND_HOST)."""
    dns = ScriptedDns(["127.0.0.1"], ["127.0.0.2"])
    d = Deliverer(settings(ca_bundle, allow="127.0.0.1/32"), resolve=dns)
    url = f"https://{REBIND_HOST}:{named_receiver.port}/hook"
    try:
        first = [await send(d, url) for _ in range(3)]
        assert all(r.ok for r in first), first
        assert dns.lookups == [REBIND_HOST]  # checked once, pinned: the client resolved nothing itself
        monkeypatch.setattr(delivery, "PIN_TTL_S", 0.0)  # the pin expires: the next delivery looks up again
        rebound = await send(d, url)
    finally:
        await d.close()
    assert (rebound.outcome, rebound.error) == (Outcome.BLOCKED, "blocked address")
    assert len(named_receiver.at("/hook")) == 3
    assert inner_receiver.count() == 0


async def test_blocked_answers_are_dropped_and_an_allowed_one_is_used(
    ca_bundle: str, named_receiver: HttpsReceiver, inner_receiver: HttpsReceiver
) -> None:
    dns = ScriptedDns(["127.0.0.2", "127.0.0.1"])
    d = Deliverer(settings(ca_bundle, allow="127.0.0.1/32"), resolve=dns)
    try:
        result = await send(d, f"https://{REBIND_HOST}:{named_receiver.port}/mixed")
    finally:
        await d.close()
    assert result.ok and len(named_receiver.at("/mixed")) == 1 and inner_receiver.count() == 0


async def test_a_host_that_does_not_resolve_is_a_dns_error(ca_bundle: str) -> None:
    async def nxdomain(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    d = Deliverer(settings(ca_bundle), resolve=nxdomain)
    try:
        result = await send(d, f"https://{REBIND_HOST}/hook")
    finally:
        await d.close()
    assert (result.outcome, result.error) == (Outcome.CONNECTION_ERROR, "dns lookup failed")


async def test_a_failing_refresh_keeps_the_checked_address_until_dns_answers_again(
    ca_bundle: str, named_receiver: HttpsReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = ScriptedDns(["127.0.0.1"], socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    d = Deliverer(settings(ca_bundle, allow="127.0.0.1/32"), resolve=dns)
    url = f"https://{REBIND_HOST}:{named_receiver.port}/stale"
    try:
        assert (await send(d, url)).ok
        monkeypatch.setattr(delivery, "PIN_TTL_S", 0.0)
        assert (await send(d, url)).ok  # the refresh failed: the address checked before still serves
    finally:
        await d.close()
    assert len(dns.lookups) == 2 and len(named_receiver.at("/stale")) == 2


async def test_a_changed_allowed_address_gets_a_new_pinned_client(
    ca_bundle: str,
    named_receiver: HttpsReceiver,
    inner_receiver: HttpsReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both addresses are allowed here: the host moved from 127.0.0.1 to 127.0.0.2 (same port on neither,
    # so each receiver's own port is pinned through the URL).
    dns = ScriptedDns(["127.0.0.1"], ["127.0.0.2"])
    d = Deliverer(settings(ca_bundle, allow="127.0.0.0/8"), resolve=dns)
    try:
        assert (await send(d, f"https://{REBIND_HOST}:{named_receiver.port}/before")).ok
        monkeypatch.setattr(delivery, "PIN_TTL_S", 0.0)
        assert (await send(d, f"https://{REBIND_HOST}:{inner_receiver.port}/after")).ok
    finally:
        await d.close()
    assert len(named_receiver.at("/before")) == 1 and len(inner_receiver.at("/after")) == 1
    assert inner_receiver.at("/before") == [] and named_receiver.at("/after") == []


async def test_a_response_with_too_many_headers_is_refused_not_parsed(
    deliverer: Deliverer, receiver: HttpsReceiver
) -> None:
    url = receiver.expect("/headers", headers={f"X-Filler-{n}": "x" for n in range(150)})
    result = await send(deliverer, url)
    assert result.outcome is Outcome.CONNECTION_ERROR and result.status_code is None, result


async def test_an_unreachable_address_is_left_for_another_allowed_answer(
    ca_bundle: str, named_receiver: HttpsReceiver
) -> None:
    # Nothing listens on 127.0.0.2 at the receiver's port: the first pin fails, the next delivery moves on.
    dns = ScriptedDns(["127.0.0.2", "127.0.0.1"])
    d = Deliverer(settings(ca_bundle, allow="127.0.0.0/8"), resolve=dns)
    url = f"https://{REBIND_HOST}:{named_receiver.port}/failover"
    try:
        first = await send(d, url)
        second = await send(d, url)
        third = await send(d, url)
    finally:
        await d.close()
    assert (first.outcome, first.error) == (Outcome.CONNECTION_ERROR, "connection refused")
    assert second.ok and third.ok and len(named_receiver.at("/failover")) == 2
    assert len(dns.lookups) == 2  # looked up again once after the failure, then pinned to the one that works


async def _hostile_server(tls_ca: Any, answer: bytes, endless: bytes = b"") -> tuple[asyncio.Server, int]:
    """A TLS server that reads the request, then writes `answer` and `endless` again and again."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            while endless:
                writer.write(endless)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


async def test_an_endless_response_header_is_refused_at_the_head_limit(deliverer: Deliverer, tls_ca: Any) -> None:
    server, port = await _hostile_server(tls_ca, b"HTTP/1.1 200 OK\r\nX-Flood: ", endless=b"a" * 65536)
    try:
        started = time.monotonic()
        result = await send(deliverer, f"https://localhost:{port}/flood")
        took = time.monotonic() - started
    finally:
        server.close()
    assert (result.outcome, result.error, result.status_code) == (Outcome.CONNECTION_ERROR, "invalid response", None)
    assert took < 5, took  # refused once the head passes its limit, not at the delivery timeout


async def test_a_body_delimited_by_the_close_and_an_interim_answer_are_read(deliverer: Deliverer, tls_ca: Any) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 202 Accepted\r\nRetry-After: 7\r\n\r\nqueued for later"
    server, port = await _hostile_server(tls_ca, answer)
    try:
        result = await send(deliverer, f"https://localhost:{port}/old")
    finally:
        server.close()
    assert (result.outcome, result.status_code, result.excerpt) == (Outcome.SUCCESS, 202, "queued for later")
    assert result.retry_after_s == 7.0


async def test_hosts_idle_past_the_bound_lose_their_pools(
    deliverer: Deliverer, receiver: HttpsReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.expect("/idle")
    literal = f"https://127.0.0.1:{receiver.port}/idle"
    assert (await send(deliverer, literal)).ok and (await send(deliverer, receiver.url("/idle"))).ok
    first = deliverer._literals["127.0.0.1"].pool
    monkeypatch.setattr(delivery, "IDLE_CLIENT_S", 0.0)  # both hosts are now idle for too long
    # Pools are swept when one is built: a delivery to a new host (nothing listens there) builds one.
    refused = await send(deliverer, f"https://127.0.0.3:{receiver.port}/idle")
    assert refused.outcome is Outcome.CONNECTION_ERROR
    assert "127.0.0.1" not in deliverer._literals and "localhost" not in deliverer._hosts
    assert (await send(deliverer, literal)).ok and deliverer._literals["127.0.0.1"].pool is not first
    assert len(receiver.at("/idle")) == 3


async def _until(condition: Any, what: str, within_s: float = 20.0) -> None:
    """Wait for `condition()` on the loop, failing loudly after `within_s`."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("size", [1, 2])
async def test_a_body_of_tiny_chunks_is_held_within_twice_the_cap_while_the_response_is_pending(
    ca_bundle: str, tls_ca: Any, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """~65,000 bytes in 1- or 2-byte chunks, then a stall: the pending response holds about the bytes kept,
    not an object per chunk (CPython shares one-byte bytes objects, so two-byte chunks cost the most)."""
    chunks = 65_000 // size
    fragment = f"{size:x}\r\n".encode() + b"x" * size + b"\r\n"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(chunks // 500):
                writer.write(fragment * 500)
                await writer.drain()
            await release.wait()  # the stall: the response never completes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    opened: list[http1._Connection] = []

    class Recorded(http1._Connection):
        def __init__(self, body_cap: int) -> None:
            super().__init__(body_cap)
            opened.append(self)

    monkeypatch.setattr(http1, "_Connection", Recorded)
    pool = http1.Pool(
        "127.0.0.1",
        "localhost",
        http1.tls_context(ca_bundle),
        connect_timeout_s=5.0,
        keepalive_s=30.0,
        body_cap=delivery.READ_CAP,
    )
    loop = asyncio.get_running_loop()
    head = delivery.parse_target(f"https://localhost:{port}/chunks").request_head({}, 0)
    tracemalloc.start()
    try:
        pending = asyncio.ensure_future(pool.request(port, head, loop.time() + 60))
        await _until(lambda: bool(opened) and opened[0].body_kept >= chunks * size, "all chunks to be read")
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, http1.__file__)])
        held = sum(stat.size for stat in snapshot.statistics("filename"))
        assert not pending.done()
    finally:
        tracemalloc.stop()
        pending.cancel()
        release.set()
        pool.close()
        server.close()
    assert held <= 2 * delivery.READ_CAP, f"{held} bytes held for {chunks * size} body bytes"


class SlowDns:
    """Answers REBIND_HOST at once with 127.0.0.1; every other host only when `answer` is set (never, here)."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.running = 0
        self.most_running = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        if host == REBIND_HOST:
            return ["127.0.0.1"]
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.answer.wait()
            return ["127.0.0.1"]
        finally:
            self.running -= 1


async def test_a_lookup_slower_than_the_deadline_ends_the_attempt_at_the_deadline_and_delays_no_other_host(
    ca_bundle: str, named_receiver: HttpsReceiver
) -> None:
    dns = SlowDns()
    d = Deliverer(settings(ca_bundle, delivery_timeout_s=1.0), resolve=dns)
    try:
        started = time.monotonic()
        slow = asyncio.ensure_future(send(d, "https://slow-dns.hookfleet.test/hook"))
        await _until(lambda: dns.running == 1, "the slow lookup to start")
        other_started = time.monotonic()
        other = await send(d, named_receiver.expect("/other").replace("localhost", REBIND_HOST))
        other_took = time.monotonic() - other_started
        assert other.ok and not slow.done()
        result = await asyncio.wait_for(slow, 5.0)
        took = time.monotonic() - started
    finally:
        dns.answer.set()
        await d.close()
    assert other_took < 0.9, other_took  # not behind the slow lookup, which holds until the 1 s deadline
    assert (result.outcome, result.error, result.status_code) == (Outcome.TIMEOUT, "timeout", None)
    assert 1.0 <= took < 2.5, took  # the 1 s deadline, not the 5 s lookup
    assert 1_000 <= result.response_ms < 2_500


async def test_one_account_runs_a_bounded_share_of_lookups_at_once(
    ca_bundle: str, named_receiver: HttpsReceiver
) -> None:
    dns = SlowDns()
    d = Deliverer(settings(ca_bundle, delivery_timeout_s=1.0), resolve=dns)
    event = build_event("acct_1", EventType.MESSAGE_READ, sample_data(EventType.MESSAGE_READ))
    try:
        slow = [
            asyncio.ensure_future(d.deliver(endpoint(f"https://h{n}.slow-dns.hookfleet.test/hook"), event, 1))
            for n in range(delivery.DNS_LOOKUPS_PER_ACCOUNT + 3)
        ]
        await _until(lambda: dns.running == delivery.DNS_LOOKUPS_PER_ACCOUNT, "the account's lookups to start")
        other = Endpoint(
            "wh_other",
            "acct_2",
            f"https://{REBIND_HOST}:{named_receiver.port}/other",
            frozenset(EventType),
            True,
            SECRET,
        )
        named_receiver.expect("/other")
        assert (await d.deliver(other, event, 1)).ok  # another account's host is looked up meanwhile
        results = await asyncio.wait_for(asyncio.gather(*slow), 5.0)
    finally:
        dns.answer.set()
        await d.close()
    assert dns.most_running == delivery.DNS_LOOKUPS_PER_ACCOUNT
    assert {r.outcome for r in results} == {Outcome.TIMEOUT}


@pytest.mark.parametrize("status", [b"000", b"099", b"600", b"999"])
async def test_a_status_outside_100_to_599_is_an_invalid_status_not_a_status(
    deliverer: Deliverer, tls_ca: Any, status: bytes
) -> None:
    server, port = await _hostile_server(tls_ca, b"HTTP/1.1 " + status + b" Odd\r\nContent-Length: 2\r\n\r\nok")
    try:
        result = await send(deliverer, f"https://localhost:{port}/odd")
    finally:
        server.close()
    assert (result.outcome, result.error, result.status_code) == (
        Outcome.CONNECTION_ERROR,
        "invalid status code",
        None,
    )


@pytest.mark.parametrize(
    "leftover",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nINJECT", b"HTTP/1.1 000 X\r\nContent-Length: 6\r\n\r\nINJECT", b"X"],
)
async def test_bytes_after_a_response_in_the_same_read_close_its_connection(
    deliverer: Deliverer, tls_ca: Any, leftover: bytes
) -> None:
    """The first answer carries more than one response; the next request must get its own answer, on a
    new connection, never the leftover."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    connections = 0
    first = True

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections, first
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + (b"first" + leftover if first else b"fresh")
                first = False
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        answers = [await send(deliverer, f"https://localhost:{port}/twice") for _ in range(2)]
    finally:
        server.close()
    assert [(a.status_code, a.excerpt) for a in answers] == [(200, "first"), (200, "fresh")]
    assert connections == 2


async def test_a_stored_reserved_header_is_left_out_of_the_request(
    deliverer: Deliverer, receiver: HttpsReceiver
) -> None:
    """A header stored before its name was reserved never frames the request; the others still go out."""
    url = receiver.expect("/stored", secret=SECRET)
    stored = (("Transfer-Encoding", "chunked"), ("Connection", "close"), ("X-Tenant", "7"))
    with_headers = Endpoint("wh_test", "acct_1", url, frozenset(EventType), True, SECRET, headers=stored)
    event = build_event("acct_1", EventType.MESSAGE_READ, sample_data(EventType.MESSAGE_READ))
    result = await deliverer.deliver(with_headers, event, 1)
    assert result.ok, result
    (got,) = receiver.at("/stored")
    assert got.signature_ok and got.headers["X-Tenant"] == "7"
    assert "Transfer-Encoding" not in got.headers and got.headers.get("Connection", "").lower() != "close"
