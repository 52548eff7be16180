"""A static member leaves its group when it stops, so its partitions move at once.

librdkafka (2.16) never sends LeaveGroup for a consumer with a `group.instance.id`, neither on `close()`
nor on `unsubscribe()`: the group keeps a stopped static member's partitions unowned until its session
times out (10 s). That is right for a crash (the restart takes them back) and wrong for a rollout or a
scale-in, and confluent-kafka's AdminClient cannot remove a member. So after the bounded close's final
commit, `leave` asks the group coordinator itself: FindCoordinator, then LeaveGroup naming the member id
(read before the close) and the instance id. The coordinator removes the member only when both match, so a
replacement that already took over the instance id is never removed: it answers FENCED_INSTANCE_ID or
UNKNOWN_MEMBER_ID, and we only log it.

Bounded (`LEAVE_BOUND_S`, inside the role's stop budget) and never fatal: a failed leave is a warning, nothing
is lost, the partitions only wait the session timeout. Speaks PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL with
the same HOOKFLEET_KAFKA_* settings as librdkafka (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512): every protocol and
mechanism the settings accept.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable

from hookfleet.kafka import StaticMember
from hookfleet.settings import KafkaSecuritySettings
from hookfleet.stream import kafka_wire as wire
from hookfleet.stream.scram import HASHES, ScramClient

log = logging.getLogger(__name__)

LEAVE_BOUND_S = 3.0
"""How long the leave may take (it takes milliseconds when the coordinator answers); past it the partitions
wait the session timeout, as without the leave."""
CLIENT_ID = "hookfleet-leave-group"
MAX_RESPONSE = 1 << 20


class LeaveFailed(RuntimeError):
    """The leave could not be made; the message says why (never a password)."""


class BrokerConnection:
    """One connection to one broker, authenticated as the settings say; every call bounded by `deadline`
    (a `time.monotonic()` value)."""

    def __init__(self, host: str, port: int, security: KafkaSecuritySettings, deadline: float) -> None:
        self._deadline = deadline
        self._correlation = 0
        self.address = f"{host}:{port}"
        raw = socket.create_connection((host, port), timeout=self._left())
        try:
            protocol = security.kafka_security_protocol
            self._sock = tls_context(security).wrap_socket(raw, server_hostname=host) if "SSL" in protocol else raw
            if protocol.startswith("SASL_"):
                self._authenticate(security)
        except BaseException:
            raw.close()
            raise

    def _left(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the leave's time is up")
        return left

    def close(self) -> None:
        self._sock.close()

    def request(self, api: tuple[int, int], body: bytes) -> wire.Reader:
        self._correlation += 1
        self._sock.settimeout(self._left())
        self._sock.sendall(wire.frame(api, self._correlation, CLIENT_ID, body))
        size = struct.unpack(">i", self._read(4))[0]
        if not 4 <= size <= MAX_RESPONSE:
            raise wire.ProtocolError(f"response size {size} out of bounds")
        return wire.response_body(self._read(size), self._correlation)

    def _read(self, size: int) -> bytes:
        chunks, got = [], 0
        while got < size:
            self._sock.settimeout(self._left())
            chunk = self._sock.recv(size - got)
            if not chunk:
                raise ConnectionError(f"broker {self.address} closed the connection")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _authenticate(self, security: KafkaSecuritySettings) -> None:
        mechanism = security.kafka_sasl_mechanism or ""
        username = security.kafka_sasl_username or ""
        password = security.kafka_sasl_password.get_secret_value() if security.kafka_sasl_password else ""
        error, enabled = wire.read_sasl_handshake(self.request(wire.SASL_HANDSHAKE, wire.sasl_handshake(mechanism)))
        if error != wire.NONE:
            raise LeaveFailed(f"broker refused SASL {mechanism}: {wire.error_name(error)} (enabled: {enabled})")
        if mechanism == "PLAIN":
            self._token(f"\0{username}\0{password}".encode())
            return
        scram = ScramClient(HASHES[mechanism], username, password)
        scram.verify(self._token(scram.final(self._token(scram.first()))))

    def _token(self, token: bytes) -> bytes:
        error, message, answer = wire.read_sasl_authenticate(
            self.request(wire.SASL_AUTHENTICATE, wire.sasl_authenticate(token))
        )
        if error != wire.NONE:
            raise LeaveFailed(f"SASL authentication failed: {wire.error_name(error)} ({message})")
        return answer


def tls_context(security: KafkaSecuritySettings) -> ssl.SSLContext:
    """TLS as librdkafka does it with the same settings: the CA (or the system's roots), the client
    certificate when given, the broker's host name checked unless endpoint identification is `none`."""
    context = ssl.create_default_context(cafile=security.kafka_ssl_ca_location or None)
    if security.kafka_ssl_certificate_location and security.kafka_ssl_key_location:
        password = security.kafka_ssl_key_password.get_secret_value() if security.kafka_ssl_key_password else None
        context.load_cert_chain(
            security.kafka_ssl_certificate_location, security.kafka_ssl_key_location, password=password
        )
    context.check_hostname = security.kafka_ssl_endpoint_identification == "https"
    return context


Connect = Callable[[str, int, KafkaSecuritySettings, float], BrokerConnection]


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    servers = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        servers.append((host.strip("[]"), int(port)))
    return servers


def leave(
    member: StaticMember,
    member_id: str,
    security: KafkaSecuritySettings,
    bound_s: float | None = None,
    connect: Connect | None = None,
) -> int:
    """Remove `member_id` (with its instance id) from its group; returns the coordinator's answer
    (`kafka_wire.NONE` when it left). Raises LeaveFailed, OSError or TimeoutError when no answer came."""
    bound_s = LEAVE_BOUND_S if bound_s is None else bound_s
    connect = BrokerConnection if connect is None else connect
    deadline = time.monotonic() + bound_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for host, port in _servers(member.bootstrap):
            try:
                return _leave_once(member, member_id, security, deadline, connect, host, port)
            except _CoordinatorMoved as exc:
                last_error = exc
                break  # ask for the coordinator again
            except (OSError, wire.ProtocolError) as exc:  # this bootstrap server is down: try the next
                last_error = exc
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    raise LeaveFailed(f"no answer from the group coordinator within {bound_s:g}s ({last_error})")


class _CoordinatorMoved(Exception):
    pass


def _leave_once(
    member: StaticMember,
    member_id: str,
    security: KafkaSecuritySettings,
    deadline: float,
    connect: Connect,
    host: str,
    port: int,
) -> int:
    bootstrap = connect(host, port, security, deadline)
    try:
        found = wire.read_find_coordinator(
            bootstrap.request(wire.FIND_COORDINATOR, wire.find_coordinator(member.group_id))
        )
        if found.error in wire.RETRIABLE:
            raise _CoordinatorMoved(wire.error_name(found.error))
        if found.error != wire.NONE:
            raise LeaveFailed(f"FindCoordinator answered {wire.error_name(found.error)}")
        same = (found.host, found.port) == (host, port)
        coordinator = bootstrap if same else connect(found.host, found.port, security, deadline)
        try:
            body = wire.leave_group(member.group_id, member_id, member.instance_id)
            answer = wire.read_leave_group(coordinator.request(wire.LEAVE_GROUP, body)).outcome()
        finally:
            if coordinator is not bootstrap:
                coordinator.close()
    finally:
        bootstrap.close()
    if answer in wire.RETRIABLE:
        raise _CoordinatorMoved(wire.error_name(answer))
    return answer


def leave_after_close(member: StaticMember, member_id: str | None, role: str, security: KafkaSecuritySettings) -> None:
    """The leave as the close makes it: logged, never raised (a failed leave costs the session timeout)."""
    if not member_id:
        # Still joining (no JoinGroup answer yet): without its member id the leave could remove a replacement.
        log.info(
            "event=group_leave_skipped role=%s consumer=%s reason=no_member_id"
            " hint='stopped while joining: its partitions move after the session timeout (10 s)'",
            role,
            member.instance_id,
        )
        return
    started = time.monotonic()
    try:
        answer = leave(member, member_id, security)
    except (LeaveFailed, OSError, wire.ProtocolError, ValueError) as exc:
        log.warning(
            "event=group_leave_failed role=%s consumer=%s error=%r"
            " hint='its partitions move to the other members after the session timeout (10 s)'",
            role,
            member.instance_id,
            str(exc),
        )
        return
    took_ms = (time.monotonic() - started) * 1000
    if answer == wire.NONE:
        log.info("event=group_left role=%s consumer=%s took_ms=%.0f", role, member.instance_id, took_ms)
    elif answer in (wire.FENCED_INSTANCE_ID, wire.UNKNOWN_MEMBER_ID):
        # A replacement holds the instance id now (or the member had already gone): it is left alone.
        log.info(
            "event=group_leave_skipped role=%s consumer=%s reason=%s",
            role,
            member.instance_id,
            wire.error_name(answer),
        )
    else:
        log.warning(
            "event=group_leave_failed role=%s consumer=%s error=%s"
            " hint='its partitions move to the other members after the session timeout (10 s)'",
            role,
            member.instance_id,
            wire.error_name(answer),
        )
