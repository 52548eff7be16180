"""The static member's leave: Kafka protocol messages against known bytes, SCRAM against the RFC test vectors,
and the leave's flow (coordinator moved, replacement fenced, no answer) against a scripted broker."""

from __future__ import annotations

import logging
import struct

import pytest

from hookfleet.kafka import StaticMember
from hookfleet.settings import KafkaSecuritySettings
from hookfleet.stream import kafka_wire as wire
from hookfleet.stream import leave_group
from hookfleet.stream.scram import ScramClient, ScramError


def test_find_coordinator_request_known_bytes() -> None:
    request = wire.frame(wire.FIND_COORDINATOR, 7, "cid", wire.find_coordinator("grp"))
    assert request == bytes.fromhex(
        "00000013"  # size 19
        "000a" "0002" "00000007"  # api key 10 (FindCoordinator), version 2, correlation id 7
        "0003" "636964"  # client id "cid"
        "0003" "677270"  # key "grp"
        "00"  # key type: group
    )  # fmt: skip


def test_leave_group_request_known_bytes() -> None:
    body = wire.leave_group("g", "m-1", "pod.x")
    assert wire.frame(wire.LEAVE_GROUP, 1, "c", body) == bytes.fromhex(
        "0000001e"  # size 30
        "000d" "0003" "00000001" "0001" "63"  # LeaveGroup v3, correlation 1, client id "c"
        "0001" "67"  # group "g"
        "00000001"  # one member
        "0003" "6d2d31"  # member id "m-1"
        "0005" "706f642e78"  # group instance id "pod.x"
    )  # fmt: skip


def test_sasl_requests_known_bytes() -> None:
    assert wire.sasl_handshake("PLAIN") == bytes.fromhex("0005") + b"PLAIN"
    assert wire.sasl_authenticate(b"\0u\0p") == bytes.fromhex("00000004") + b"\0u\0p"
    assert wire.SASL_HANDSHAKE == (17, 1) and wire.SASL_AUTHENTICATE == (36, 1)


def test_find_coordinator_response_decoded() -> None:
    payload = bytes.fromhex(
        "00000007"  # correlation id
        "00000000" "0000" "ffff"  # throttle, error NONE, error message null
        "00000001" "0009" "3132372e302e302e31" "00004a94"  # node 1, host 127.0.0.1, port 19092
    )  # fmt: skip
    found = wire.read_find_coordinator(wire.response_body(payload, 7))
    assert found == wire.Coordinator(error=0, node_id=1, host="127.0.0.1", port=19092)


def test_leave_group_response_decoded_with_the_members_error() -> None:
    payload = bytes.fromhex(
        "00000002" "00000000" "0000"  # correlation 2, throttle, error NONE
        "00000001" "0003" "6d2d31" "0005" "706f642e78" "0052"  # member m-1, pod.x, FENCED_INSTANCE_ID (82)
    )  # fmt: skip
    answer = wire.read_leave_group(wire.response_body(payload, 2))
    assert answer.members == [("m-1", "pod.x", 82)]
    assert answer.outcome() == wire.FENCED_INSTANCE_ID


def test_sasl_responses_decoded() -> None:
    handshake = bytes.fromhex("000000030000000000020005") + b"PLAIN" + bytes.fromhex("000d") + b"SCRAM-SHA-256"
    assert wire.read_sasl_handshake(wire.response_body(handshake, 3)) == (0, ["PLAIN", "SCRAM-SHA-256"])
    authenticate = bytes.fromhex("00000004003a0006") + b"denied" + bytes.fromhex("000000000000000000000000")
    assert wire.read_sasl_authenticate(wire.response_body(authenticate, 4)) == (58, "denied", b"")


def test_a_short_or_foreign_response_is_a_protocol_error() -> None:
    with pytest.raises(wire.ProtocolError, match="expected 8"):
        wire.response_body(bytes.fromhex("00000009"), 8)
    with pytest.raises(wire.ProtocolError, match="cut short"):
        wire.read_find_coordinator(wire.response_body(bytes.fromhex("000000010000000000"), 1))


def test_scram_sha_256_rfc_7677_vector() -> None:
    client = ScramClient("sha256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = client.final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    client.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(ScramError, match="signature"):
        client.verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")


def test_scram_sha_1_rfc_5802_vector() -> None:
    client = ScramClient("sha1", "user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    final = client.final(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    assert final == b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    client.verify(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


def test_scram_refuses_a_server_nonce_that_is_not_its_own() -> None:
    client = ScramClient("sha256", "user", "pencil", nonce="abc")
    with pytest.raises(ScramError, match="nonce"):
        client.final(b"r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert (
        b"," in ScramClient("sha256", "a,b=c", "p").first()
        and b"n=a=2Cb=3Dc," in ScramClient("sha256", "a,b=c", "p").first()
    )


# ------------------------------------------------------------------------------------------------- the flow

MEMBER = StaticMember("b1:9092,b2:9092", "grp", "pod.dispatcher.fanout")


class ScriptedBroker:
    """Stands in for `BrokerConnection`: answers each request from a script of (api key, response body)."""

    def __init__(self, script: list[tuple[str, int, bytes]]) -> None:
        self.script = script
        self.requests: list[tuple[str, int, bytes]] = []

    def connect(self, host: str, port: int, security: KafkaSecuritySettings, deadline: float) -> ScriptedBroker:
        self._address = f"{host}:{port}"
        return self

    def request(self, api: tuple[int, int], body: bytes) -> wire.Reader:
        self.requests.append((self._address, api[0], body))
        address, key, answer = self.script.pop(0)
        assert (address, key) == (self._address, api[0]), (address, key, self._address, api)
        return wire.Reader(answer)

    def close(self) -> None:
        pass


def _coordinator(error: int, host: str = "b2", port: int = 9092) -> bytes:
    encoded = host.encode()
    return struct.pack(">ihhih", 0, error, -1, 2, len(encoded)) + encoded + struct.pack(">i", port)


def _left(error: int = 0, member_error: int = 0) -> bytes:
    return (
        struct.pack(">ihi", 0, error, 1)
        + wire.leave_group("", "m-1", "pod.dispatcher.fanout")[2 + 4 :]
        + struct.pack(">h", member_error)
    )


def test_the_leave_asks_the_coordinator_named_for_the_group() -> None:
    broker = ScriptedBroker([("b1:9092", 10, _coordinator(0)), ("b2:9092", 13, _left())])
    assert leave_group.leave(MEMBER, "m-1", KafkaSecuritySettings(), connect=broker.connect) == wire.NONE  # type: ignore[arg-type]
    assert broker.requests[1][2] == wire.leave_group("grp", "m-1", "pod.dispatcher.fanout")


def test_a_coordinator_that_moved_is_asked_for_again() -> None:
    broker = ScriptedBroker(
        [
            ("b1:9092", 10, _coordinator(wire.COORDINATOR_LOAD_IN_PROGRESS)),
            ("b1:9092", 10, _coordinator(0)),
            ("b2:9092", 13, _left(wire.NOT_COORDINATOR)),
            ("b1:9092", 10, _coordinator(0, host="b1")),
            ("b1:9092", 13, _left()),
        ]
    )
    assert leave_group.leave(MEMBER, "m-1", KafkaSecuritySettings(), connect=broker.connect) == wire.NONE  # type: ignore[arg-type]
    assert not broker.script


def test_a_replacement_holding_the_instance_id_is_left_alone(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = ScriptedBroker([("b1:9092", 10, _coordinator(0)), ("b2:9092", 13, _left(0, wire.FENCED_INSTANCE_ID))])
    monkeypatch.setattr(leave_group, "BrokerConnection", broker.connect)
    with caplog.at_level(logging.INFO):
        leave_group.leave_after_close(MEMBER, "m-1", "dispatcher-fanout", KafkaSecuritySettings())
    assert "event=group_leave_skipped" in caplog.text and "FENCED_INSTANCE_ID" in caplog.text


def test_no_answer_is_a_warning_within_the_bound(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leave_group, "LEAVE_BOUND_S", 0.3)
    member = StaticMember("127.0.0.1:1", "grp", "pod.recorder")  # nothing listens on port 1
    security = KafkaSecuritySettings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                                     kafka_sasl_username="u", kafka_sasl_password="hunter2-secret")  # fmt: skip
    with caplog.at_level(logging.INFO):
        leave_group.leave_after_close(member, "m-1", "recorder", security)
    assert "event=group_leave_failed" in caplog.text and "consumer=pod.recorder" in caplog.text
    assert "hunter2-secret" not in caplog.text
