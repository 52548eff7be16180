"""The leave's own connection against a small broker stand-in on a real socket: TLS with the CA and host name
check, SASL PLAIN and SCRAM-SHA-512 (the stand-in verifies the proof as a broker does), wrong passwords refused
without the password in the log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from hookfleet.kafka import StaticMember
from hookfleet.settings import KafkaSecuritySettings
from hookfleet.stream import kafka_wire as wire
from hookfleet.stream import leave_group

USER, PASSWORD = "fleet", "s3cret-pass"
SALT, ITERATIONS = b"saltsaltsalt", 4096


def _string(value: str) -> bytes:
    return struct.pack(">h", len(value.encode())) + value.encode()


class StandInBroker:
    """Answers SaslHandshake, SaslAuthenticate, FindCoordinator (itself) and LeaveGroup; records the leaves."""

    def __init__(self, mechanism: str | None, tls: ssl.SSLContext | None) -> None:
        self.mechanism = mechanism
        self.left: list[tuple[str, str, str | None]] = []
        self._tls = tls
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            if self._tls is not None:
                try:
                    conn = self._tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError
            data += chunk
        return data

    def _serve(self, conn: socket.socket) -> None:
        scram: dict[str, bytes] = {}
        with conn:
            try:
                while True:
                    size = struct.unpack(">i", self._read(conn, 4))[0]
                    reader = wire.Reader(self._read(conn, size))
                    api, _version, correlation = reader.int16(), reader.int16(), reader.int32()
                    reader.nullable_string()  # client id
                    body = self._answer(api, reader, scram)
                    payload = struct.pack(">i", correlation) + body
                    conn.sendall(struct.pack(">i", len(payload)) + payload)
            except (ConnectionError, OSError):
                return

    def _answer(self, api: int, reader: wire.Reader, scram: dict[str, bytes]) -> bytes:
        if api == 17:
            asked = reader.string()
            error = 0 if asked == self.mechanism else 33
            return struct.pack(">hi", error, 1) + _string(self.mechanism or "")
        if api == 36:
            token = reader.bytes_()
            error, answer = self._authenticate(token, scram)
            return struct.pack(">h", error) + struct.pack(">h", -1) + struct.pack(">i", len(answer)) + answer + bytes(8)
        if api == 10:
            reader.string()
            return (
                struct.pack(">ihh", 0, 0, -1)
                + struct.pack(">i", 1)
                + _string("localhost")
                + struct.pack(">i", self.port)
            )
        if api == 13:
            group = reader.string()
            reader.int32()
            member_id, instance_id = reader.string(), reader.nullable_string()
            self.left.append((group, member_id, instance_id))
            return struct.pack(">ihi", 0, 0, 1) + _string(member_id) + _string(instance_id or "") + struct.pack(">h", 0)
        raise AssertionError(f"unexpected api {api}")

    def _authenticate(self, token: bytes, scram: dict[str, bytes]) -> tuple[int, bytes]:
        if self.mechanism == "PLAIN":
            return (0 if token == f"\0{USER}\0{PASSWORD}".encode() else 58), b""
        if "first" not in scram:  # client-first: n,,n=user,r=nonce
            scram["first"] = token[3:]
            nonce = dict(p.split("=", 1) for p in token[3:].decode().split(","))["r"]
            scram["server_first"] = f"r={nonce}server,s={base64.b64encode(SALT).decode()},i={ITERATIONS}".encode()
            return 0, scram["server_first"]
        without_proof, _, proof = token.decode().rpartition(",p=")
        salted = hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), SALT, ITERATIONS)
        client_key = hmac.new(salted, b"Client Key", "sha512").digest()
        stored = hashlib.sha512(client_key).digest()
        auth = scram["first"] + b"," + scram["server_first"] + b"," + without_proof.encode()
        signature = hmac.new(stored, auth, "sha512").digest()
        recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
        if hashlib.sha512(recovered).digest() != stored:
            return 58, b""
        server_key = hmac.new(salted, b"Server Key", "sha512").digest()
        return 0, b"v=" + base64.b64encode(hmac.new(server_key, auth, "sha512").digest())


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _server_tls(ca: trustme.CA, host: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(host).configure_cert(context)
    return context


@pytest.fixture
def broker_factory() -> Iterator[list[StandInBroker]]:
    made: list[StandInBroker] = []
    yield made
    for broker in made:
        broker.close()


def _member(broker: StandInBroker) -> StaticMember:
    return StaticMember(f"localhost:{broker.port}", "grp", "pod-1.recorder")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_sasl_ssl_leave_with_the_ca_and_host_name_check(
    mechanism: str, ca: trustme.CA, ca_file: str, broker_factory: list[StandInBroker]
) -> None:
    broker = StandInBroker(mechanism, _server_tls(ca, "localhost"))
    broker_factory.append(broker)
    security = KafkaSecuritySettings(
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_ca_location=ca_file,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,
    )
    assert leave_group.leave(_member(broker), "m-1", security) == wire.NONE
    assert broker.left == [("grp", "m-1", "pod-1.recorder")]


def test_a_certificate_for_another_host_is_refused(
    ca: trustme.CA, ca_file: str, broker_factory: list[StandInBroker], caplog: pytest.LogCaptureFixture
) -> None:
    broker = StandInBroker(None, _server_tls(ca, "elsewhere.example"))
    broker_factory.append(broker)
    security = KafkaSecuritySettings(kafka_security_protocol="SSL", kafka_ssl_ca_location=ca_file)
    with caplog.at_level(logging.INFO):
        leave_group.leave_after_close(_member(broker), "m-1", "recorder", security)
    assert not broker.left
    assert "event=group_leave_failed" in caplog.text
    relaxed = KafkaSecuritySettings(
        kafka_security_protocol="SSL", kafka_ssl_ca_location=ca_file, kafka_ssl_endpoint_identification="none"
    )
    assert leave_group.leave(_member(broker), "m-1", relaxed) == wire.NONE  # the CA is still checked


def test_a_wrong_password_is_refused_and_never_logged(
    broker_factory: list[StandInBroker], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leave_group, "LEAVE_BOUND_S", 0.5)
    broker = StandInBroker("SCRAM-SHA-512", None)
    broker_factory.append(broker)
    security = KafkaSecuritySettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password="not-the-password-xyz",
    )
    with caplog.at_level(logging.INFO):
        leave_group.leave_after_close(_member(broker), "m-1", "recorder", security)
    assert not broker.left
    assert "event=group_leave_failed" in caplog.text and "SASL_AUTHENTICATION_FAILED" in caplog.text
    assert "not-the-password-xyz" not in caplog.text
