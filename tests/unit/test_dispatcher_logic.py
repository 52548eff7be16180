"""Known-answer tests of the dispatcher's pure logic: signatures, routing, SSRF verdicts, matching,
outcome classification and low-water-mark offsets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from delivery.address_guard import BlockedAddressError, is_blocked
from delivery.deliverer import parse_target
from delivery.endpoint import Endpoint
from delivery.http1 import ConnectFailed, ProtocolError, ServerDisconnected
from delivery.outcome import classify_error, classify_status
from delivery.signing import (
    hex_signature,
    hmac_sha256,
    new_secret,
    signature_headers,
    standard_signature,
    verify_hex_signature,
)
from dispatcher.routing import PARKS_HEADER, parks_of, route_failure, route_park
from dispatcher.subscriptions import SubscriptionIndex
from hookfleet import USER_AGENT
from hookfleet.stream.ledger import LowWaterMark
from schemas.catalog import EventType
from schemas.models import Outcome
from schemas.topics import Topics

BODY = b'{"id":"evt_1","type":"message.read","created_at":"2026-11-27T10:15:03.123Z","account_id":"a","data":{}}'


def test_hex_signature_known_answer() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
    assert hex_signature("Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


@pytest.mark.parametrize(
    ("key", "data", "expected"),
    [  # RFC 4231 test cases 1, 2, 6 (a 131-byte key: longer than the block, hashed first) and 7
        (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (
            b"\xaa" * 131,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            b"\xaa" * 131,
            b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to "
            b"be hashed before being used by the HMAC algorithm.",
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ],
)
def test_hmac_sha256_known_answers(key: bytes, data: bytes, expected: str) -> None:
    assert hmac_sha256(key, data).hex() == expected
    assert hmac_sha256(key, data) == hmac.digest(key, data, "sha256")  # and again, from the cached key state


@pytest.mark.parametrize("length", [0, 1, 63, 64, 65, 200])
def test_hmac_sha256_equals_the_standard_library_at_every_key_length(length: int) -> None:
    key = bytes(range(256))[:length]
    assert hmac_sha256(key, BODY) == hmac.digest(key, BODY, "sha256")


def test_hex_signature_matches_documented_receiver_formula() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    expected = hmac.new(secret.encode("utf-8"), BODY, hashlib.sha256).hexdigest()
    assert hex_signature(secret, BODY) == expected
    assert verify_hex_signature(secret, BODY, expected)
    assert not verify_hex_signature(secret, BODY + b" ", expected)


def test_standard_signature_known_answer_and_public_verifier_accepts_it() -> None:
    # The standard-webhooks specification's example secret, id, timestamp and payload.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, timestamp = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
    payload = b'{"test": 2432232314}'
    assert standard_signature(secret, msg_id, timestamp, payload) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    now = int(datetime.now(UTC).timestamp())
    headers = signature_headers(secret, None, "evt_1", "message.read", 1, now, BODY)
    assert StandardWebhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_rotation_signs_with_both_secrets_and_keeps_the_documented_header_single() -> None:
    new, old = new_secret(), new_secret()
    now = int(datetime.now(UTC).timestamp())
    headers = signature_headers(new, old, "evt_1", "message.read", 2, now, BODY)
    assert headers["X-Webhook-Signature"] == hex_signature(new, BODY)
    assert headers["X-Webhook-Signature-Previous"] == hex_signature(old, BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert StandardWebhook(old).verify(BODY, headers) and StandardWebhook(new).verify(BODY, headers)
    assert headers["X-Webhook-Attempt"] == "2" and headers["X-Webhook-Id"] == headers["webhook-id"] == "evt_1"


def test_new_secret_format() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert secret != new_secret()


TOPICS = Topics.with_prefix("p.")


@pytest.mark.parametrize(
    ("attempt", "stage", "topic", "next_attempt", "due"),
    [
        (1, "10s", "p.webhooks.retry.10s", 2, 1_000 + 10_000),
        (2, "60s", "p.webhooks.retry.60s", 3, 1_000 + 60_000),
        (3, "5m", "p.webhooks.retry.5m", 4, 1_000 + 300_000),
        (4, "dead", "p.webhooks.dead", 4, 1_000),
    ],
)
def test_route_failure_follows_the_schedule(attempt: int, stage: str, topic: str, next_attempt: int, due: int) -> None:
    route = route_failure(attempt, 1_000, TOPICS)
    assert (route.stage, route.topic, route.next_attempt, route.due_at_ms) == (stage, topic, next_attempt, due)


def test_route_failure_uses_configured_delays_and_rejects_bad_attempts() -> None:
    assert route_failure(2, 0, TOPICS, (0.5, 1.5, 3.0)).due_at_ms == 1_500
    for bad in (0, 5):
        with pytest.raises(ValueError, match=r"attempt must be 1\.\.4"):
            route_failure(bad, 0, TOPICS)


def test_park_keeps_the_attempt_number() -> None:
    route = route_park(3, 5_000, TOPICS)
    assert (route.topic, route.next_attempt, route.due_at_ms) == ("p.webhooks.retry.10s", 3, 15_000)


@pytest.mark.parametrize(
    ("parks", "topic", "due_at_ms"),
    [
        (-1, "p.webhooks.retry.10s", 15_000),
        (0, "p.webhooks.retry.10s", 15_000),
        (1, "p.webhooks.retry.60s", 65_000),
        (2, "p.webhooks.retry.5m", 305_000),
        (40, "p.webhooks.retry.5m", 305_000),
    ],
)
def test_a_task_parked_again_waits_longer_up_to_the_last_delay(parks: int, topic: str, due_at_ms: int) -> None:
    route = route_park(2, 5_000, TOPICS, parks=parks)
    assert (route.topic, route.next_attempt, route.due_at_ms) == (topic, 2, due_at_ms)


@pytest.mark.parametrize(
    ("headers", "parks"),
    [
        (None, 0),
        ([], 0),
        ([("traceparent", b"00-ab-cd-01"), (PARKS_HEADER, b"2")], 2),
        ([(PARKS_HEADER, b"x1")], 0),
        ([(PARKS_HEADER, b"-1")], 0),
        ([(PARKS_HEADER, None)], 0),
        ([(PARKS_HEADER, b"9" * 40)], 0),  # absurdly long: ignored, not parsed
    ],
)
def test_the_park_count_is_read_from_its_header_and_anything_odd_counts_as_none(
    headers: list[tuple[str, bytes | None]] | None, parks: int
) -> None:
    assert parks_of(headers) == parks


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("8.8.8.8", False),
        ("93.184.216.34", False),
        ("2606:4700:4700::1111", False),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.32.0.1", False),
        ("192.168.1.1", True),
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("0.0.0.0", True),  # noqa: S104 - a verdict, not a bind
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # CGNAT
        ("100.128.0.1", False),
        ("224.0.0.1", True),  # multicast
        ("255.255.255.255", True),
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("fd00:ec2::254", True),
        ("ff02::1", True),
        ("::ffff:10.0.0.1", True),  # IPv4-mapped private
        ("::ffff:127.0.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("2002:a00:1::", True),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 of 169.254.169.254
        ("64:ff9b::808:808", False),  # NAT64 of 8.8.8.8
    ],
)
def test_ssrf_verdicts(address: str, blocked: bool) -> None:
    assert is_blocked(address) is blocked


def test_allow_list_opens_only_its_network() -> None:
    allow = [ipaddress.ip_network("127.0.0.0/8")]
    assert not is_blocked("127.0.0.1", allow)
    assert not is_blocked("::ffff:127.0.0.1", allow)
    assert is_blocked("10.0.0.1", allow)
    assert is_blocked("::1", allow)


def _endpoint(wid: str, account: str, events: set[EventType], active: bool = True) -> Endpoint:
    return Endpoint(wid, account, "https://example.com/", frozenset(events), active, "whsec_x")


def test_subscription_matching() -> None:
    index = SubscriptionIndex(
        [
            _endpoint("wh_2", "a", {EventType.MESSAGE_READ, EventType.MESSAGE_SENT}),
            _endpoint("wh_1", "a", {EventType.MESSAGE_READ}),
            _endpoint("wh_3", "a", {EventType.MESSAGE_READ}, active=False),
            _endpoint("wh_4", "b", {EventType.MESSAGE_READ}),
        ]
    )
    assert [e.id for e in index.match("a", EventType.MESSAGE_READ)] == ["wh_1", "wh_2"]
    assert [e.id for e in index.match("a", EventType.MESSAGE_SENT)] == ["wh_2"]
    assert index.match("a", EventType.CONTACT_CREATED) == []
    assert index.match("c", EventType.MESSAGE_READ) == []
    index.upsert(_endpoint("wh_1", "a", {EventType.MESSAGE_READ}, active=False))
    assert [e.id for e in index.match("a", EventType.MESSAGE_READ)] == ["wh_2"]
    assert index.get("wh_1") is not None and not index.get("wh_1").active  # type: ignore[union-attr]
    index.remove("wh_2")
    assert index.match("a", EventType.MESSAGE_READ) == [] and index.get("wh_2") is None
    assert [e.id for e in index.match("b", EventType.MESSAGE_READ)] == ["wh_4"]


def test_endpoint_repr_hides_secrets_and_rotation_window() -> None:
    now = datetime.now(UTC)
    e = Endpoint("wh_1", "a", "https://x/", frozenset(), True, "whsec_new", "whsec_old", now + timedelta(hours=1))
    assert "whsec" not in repr(e)
    assert e.signing_secrets(now) == ("whsec_new", "whsec_old")
    assert e.signing_secrets(now + timedelta(hours=2)) == ("whsec_new", None)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCESS),
        (204, Outcome.SUCCESS),
        (299, Outcome.SUCCESS),
        (301, Outcome.HTTP_ERROR),
        (404, Outcome.HTTP_ERROR),
        (500, Outcome.HTTP_ERROR),
        (199, Outcome.HTTP_ERROR),
    ],
)
def test_classify_status(status: int, outcome: Outcome) -> None:
    assert classify_status(status)[0] is outcome


def test_classify_errors() -> None:
    assert classify_error(BlockedAddressError("literal")) == (Outcome.BLOCKED, "blocked address")
    blocked_lookup = _wrapped(ConnectFailed("connect failed"), BlockedAddressError("x resolves only to blocked"))
    assert classify_error(blocked_lookup) == (Outcome.BLOCKED, "blocked address")
    assert classify_error(TimeoutError()) == (Outcome.TIMEOUT, "timeout")
    assert classify_error(ConnectionRefusedError(111, "refused")) == (Outcome.CONNECTION_ERROR, "connection refused")
    assert classify_error(BrokenPipeError(32, "pipe")) == (Outcome.CONNECTION_ERROR, "server disconnected")
    cert = ssl.SSLCertVerificationError("bad cert")
    assert classify_error(cert) == (Outcome.TLS_ERROR, "tls error")


def _wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            _wrapped(ConnectFailed("connect failed"), ssl.SSLCertVerificationError("unknown ca")),
            (Outcome.TLS_ERROR, "tls error"),
        ),
        (
            _wrapped(ConnectFailed("connect failed"), ConnectionRefusedError(111, "refused")),
            (Outcome.CONNECTION_ERROR, "connection refused"),
        ),
        (_wrapped(ConnectFailed("connect failed"), TimeoutError()), (Outcome.TIMEOUT, "timeout")),
        (ServerDisconnected("server disconnected"), (Outcome.CONNECTION_ERROR, "server disconnected")),
        (
            _wrapped(ServerDisconnected("server disconnected"), ConnectionResetError(104, "reset")),
            (Outcome.CONNECTION_ERROR, "server disconnected"),
        ),
        (ProtocolError("response headers over the limit"), (Outcome.CONNECTION_ERROR, "invalid response")),
        (
            _wrapped(ConnectFailed("connect failed"), OSError(113, "no route")),
            (Outcome.CONNECTION_ERROR, "connection error (ConnectFailed)"),
        ),
        (socket.gaierror(socket.EAI_NONAME, "no"), (Outcome.CONNECTION_ERROR, "dns lookup failed")),
        (TimeoutError(), (Outcome.TIMEOUT, "timeout")),
    ],
)
def test_classify_client_errors_by_their_cause_chain(error: BaseException, expected: tuple[Outcome, str]) -> None:
    assert classify_error(error) == expected


def test_low_water_mark_never_passes_unfinished_work() -> None:
    lwm = LowWaterMark()
    for offset in (10, 11, 12, 13):
        lwm.begin(offset)
    assert lwm.finish(12) is None and lwm.committable is None
    assert lwm.finish(10) == 11
    assert lwm.finish(13) is None  # 11 still pending
    assert lwm.finish(11) == 14
    assert lwm.pending == 0
    lwm.begin(20)
    assert lwm.committable == 14
    with pytest.raises(ValueError, match="must increase"):
        lwm.begin(20)


@pytest.mark.parametrize(
    ("url", "server_name", "host_header", "port", "path"),
    [
        ("https://hooks.example.com/in", "hooks.example.com", "hooks.example.com", 443, "/in"),
        ("https://Hooks.Example.com:8443", "hooks.example.com", "hooks.example.com:8443", 8443, "/"),
        ("https://[2001:db8::1]:9443/a b?x=1&y=é", "2001:db8::1", "[2001:db8::1]:9443", 9443, "/a%20b?x=1&y=%C3%A9"),
        ("https://203.0.113.7/p%2Fq", "203.0.113.7", "203.0.113.7", 443, "/p%2Fq"),
        ("https://bücher.example/x", "xn--bcher-kva.example", "xn--bcher-kva.example", 443, "/x"),
    ],
)
def test_a_url_becomes_the_request_target(url: str, server_name: str, host_header: str, port: int, path: str) -> None:
    target = parse_target(url)
    assert (target.server_name, target.host_header, target.port, target.path) == (server_name, host_header, port, path)
    head = target.request_head({"X-Webhook-Id": "evt_1", "Authorization": "Bearer t"}, 12).decode()
    assert head == (
        f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
        "X-Webhook-Id: evt_1\r\nAuthorization: Bearer t\r\nContent-Length: 12\r\n\r\n"
    )


@pytest.mark.parametrize("url", ["http://example.com/", "https:///nohost", "https://user:pw@example.com/"])
def test_only_plain_https_urls_are_targets(url: str) -> None:
    with pytest.raises(ValueError, match="https with a host"):
        parse_target(url)


def test_a_header_that_is_not_one_line_is_never_written() -> None:
    target = parse_target("https://example.com/")
    with pytest.raises(ValueError, match="not one line"):
        target.request_head({"X-Custom": "a\r\nX-Injected: 1"}, 0)
