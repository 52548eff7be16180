"""The client side of SASL SCRAM (RFC 5802; SHA-256 and SHA-512 as RFC 7677 and Kafka use them), pure.

For hookfleet/stream/leave_group.py, which authenticates its own connection to the group coordinator with
the same HOOKFLEET_KAFKA_SASL_* settings librdkafka uses. The password stays in this object: it is in no
message, log line or exception; only the proof derived from it travels.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class ScramError(ValueError):
    """The server's answer does not hold (wrong nonce, bad signature, or its own error)."""


def _saslname(username: str) -> str:
    return username.replace("=", "=3D").replace(",", "=2C")


def _attributes(message: str) -> dict[str, str]:
    parts = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            parts[key] = value
    return parts


class ScramClient:
    """One SCRAM exchange: `first()`, then `final(server_first)`, then `verify(server_final)`."""

    def __init__(self, hash_name: str, username: str, password: str, nonce: str | None = None) -> None:
        """`hash_name`: hashlib's name (sha256, sha512; sha1 for RFC 5802's own test vector). `nonce`: for
        known-answer tests only; by default 24 random bytes."""
        self._hash = hash_name
        self._password = password.encode()
        self._nonce = nonce or base64.b64encode(secrets.token_bytes(24)).decode()
        self._first_bare = f"n={_saslname(username)},r={self._nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self._first_bare}".encode()

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self._hash).digest()

    def final(self, server_first: bytes) -> bytes:
        """The client-final message with its proof, from the server-first message."""
        text = server_first.decode(errors="replace")
        fields = _attributes(text)
        if "e" in fields:
            raise ScramError(f"server refused: {fields['e']}")
        nonce, salt, iterations = fields.get("r", ""), fields.get("s", ""), fields.get("i", "")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise ScramError("server nonce does not extend the client's")
        if not iterations.isdigit() or int(iterations) < 1:
            raise ScramError(f"bad iteration count {iterations[:20]!r}")
        salted = hashlib.pbkdf2_hmac(self._hash, self._password, base64.b64decode(salt), int(iterations))
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self._hash, client_key).digest()
        without_proof = f"c=biws,r={nonce}"  # biws: base64("n,,"), no channel binding
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        """The server proved it knows the password too; a ScramError otherwise."""
        fields = _attributes(server_final.decode(errors="replace"))
        if "e" in fields:
            raise ScramError(f"server refused: {fields['e']}")
        if not self._server_signature or not hmac.compare_digest(
            base64.b64decode(fields.get("v", "")), self._server_signature
        ):
            raise ScramError("server signature does not match")
