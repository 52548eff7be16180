"""The few Kafka protocol messages a static member's leave needs, encoded and decoded by pure functions.

librdkafka never sends LeaveGroup for a consumer with a `group.instance.id`, and confluent-kafka's
AdminClient cannot remove a group member, so hookfleet/stream/leave_group.py speaks these directly:
FindCoordinator v2, LeaveGroup v3 (the first version that names members by instance id), SaslHandshake v1
and SaslAuthenticate v1. All four are non-flexible versions (plain int16/int32-length strings, no tagged
fields), accepted by every broker from Kafka 2.4 to 4.x. Requests use header v1, responses header v0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

FIND_COORDINATOR = (10, 2)
LEAVE_GROUP = (13, 3)
SASL_HANDSHAKE = (17, 1)
SASL_AUTHENTICATE = (36, 1)
"""(api key, version) of each request sent."""

NONE = 0
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
UNKNOWN_MEMBER_ID = 25
FENCED_INSTANCE_ID = 82
ERROR_NAMES = {
    NONE: "NONE",
    COORDINATOR_LOAD_IN_PROGRESS: "COORDINATOR_LOAD_IN_PROGRESS",
    COORDINATOR_NOT_AVAILABLE: "COORDINATOR_NOT_AVAILABLE",
    NOT_COORDINATOR: "NOT_COORDINATOR",
    UNKNOWN_MEMBER_ID: "UNKNOWN_MEMBER_ID",
    30: "GROUP_AUTHORIZATION_FAILED",
    33: "UNSUPPORTED_SASL_MECHANISM",
    34: "ILLEGAL_SASL_STATE",
    35: "UNSUPPORTED_VERSION",
    58: "SASL_AUTHENTICATION_FAILED",
    69: "GROUP_ID_NOT_FOUND",
    FENCED_INSTANCE_ID: "FENCED_INSTANCE_ID",
}
RETRIABLE = frozenset({COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR})
"""The coordinator moved or is loading: ask for it again."""


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"error {code}")


class ProtocolError(ValueError):
    """A response that does not read as the request's answer (cut short, wrong correlation id)."""


# ------------------------------------------------------------------------------------------------ encoding


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _nullable_string(value: str | None) -> bytes:
    return struct.pack(">h", -1) if value is None else _string(value)


def _bytes(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value


def frame(api: tuple[int, int], correlation_id: int, client_id: str, body: bytes) -> bytes:
    """A whole request on the wire: int32 size, header v1 (api key, version, correlation id, client id), body."""
    payload = struct.pack(">hhi", api[0], api[1], correlation_id) + _nullable_string(client_id) + body
    return struct.pack(">i", len(payload)) + payload


def find_coordinator(group_id: str) -> bytes:
    """FindCoordinator v2 body: the group's coordinator (key type 0 = group)."""
    return _string(group_id) + struct.pack(">b", 0)


def leave_group(group_id: str, member_id: str, instance_id: str) -> bytes:
    """LeaveGroup v3 body: one member, named by its member id and its instance id. The coordinator removes it
    only when both match: a replacement that took over the instance id (a new member id) stays."""
    return _string(group_id) + struct.pack(">i", 1) + _string(member_id) + _nullable_string(instance_id)


def sasl_handshake(mechanism: str) -> bytes:
    """SaslHandshake v1 body: the mechanism; v1 means the SASL tokens then travel in SaslAuthenticate."""
    return _string(mechanism)


def sasl_authenticate(token: bytes) -> bytes:
    """SaslAuthenticate v1 body: one SASL token."""
    return _bytes(token)


# ------------------------------------------------------------------------------------------------ decoding


class Reader:
    """Reads a response body field by field; a short body is a ProtocolError, never an IndexError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def _take(self, size: int) -> bytes:
        if size < 0 or self._at + size > len(self._data):
            raise ProtocolError(f"response cut short: wanted {size} bytes at {self._at} of {len(self._data)}")
        chunk = self._data[self._at : self._at + size]
        self._at += size
        return chunk

    def int8(self) -> int:
        value: int = struct.unpack(">b", self._take(1))[0]
        return value

    def int16(self) -> int:
        value: int = struct.unpack(">h", self._take(2))[0]
        return value

    def int32(self) -> int:
        value: int = struct.unpack(">i", self._take(4))[0]
        return value

    def int64(self) -> int:
        value: int = struct.unpack(">q", self._take(8))[0]
        return value

    def nullable_string(self) -> str | None:
        size = self.int16()
        return None if size == -1 else self._take(size).decode(errors="replace")

    def string(self) -> str:
        return self.nullable_string() or ""

    def bytes_(self) -> bytes:
        size = self.int32()
        return b"" if size == -1 else self._take(size)


def response_body(payload: bytes, correlation_id: int) -> Reader:
    """The body of a response (its size prefix already read), after checking its header v0."""
    reader = Reader(payload)
    answered = reader.int32()
    if answered != correlation_id:
        raise ProtocolError(f"response to request {answered}, expected {correlation_id}")
    return reader


@dataclass(frozen=True, slots=True)
class Coordinator:
    error: int
    node_id: int
    host: str
    port: int


def read_find_coordinator(body: Reader) -> Coordinator:
    body.int32()  # throttle_time_ms
    error = body.int16()
    body.nullable_string()  # error_message
    return Coordinator(error=error, node_id=body.int32(), host=body.string(), port=body.int32())


@dataclass(frozen=True, slots=True)
class LeaveAnswer:
    error: int
    members: list[tuple[str, str | None, int]]
    """(member id, instance id, error) per member named in the request."""

    def outcome(self) -> int:
        """The first error, the request's or the member's; NONE when the member left."""
        if self.error != NONE:
            return self.error
        return next((code for _, _, code in self.members if code != NONE), NONE)


def read_leave_group(body: Reader) -> LeaveAnswer:
    body.int32()  # throttle_time_ms
    error = body.int16()
    count = body.int32()
    members = []
    for _ in range(max(count, 0)):
        member_id = body.string()
        instance_id = body.nullable_string()
        members.append((member_id, instance_id, body.int16()))
    return LeaveAnswer(error=error, members=members)


def read_sasl_handshake(body: Reader) -> tuple[int, list[str]]:
    """(error, the mechanisms the broker has enabled)."""
    error = body.int16()
    count = body.int32()
    return error, [body.string() for _ in range(max(count, 0))]


def read_sasl_authenticate(body: Reader) -> tuple[int, str | None, bytes]:
    """(error, error message, the server's SASL token)."""
    error = body.int16()
    message = body.nullable_string()
    token = body.bytes_()
    body.int64()  # session_lifetime_ms
    return error, message, token
