"""Encryption at rest for webhook secrets (AES-256-GCM), keyed by HOOKFLEET_SECRET_KEY.

The database never holds a usable secret: a leaked dump without the key signs nothing. The ciphertext
is `nonce (12 bytes) || AES-GCM(secret)`; the webhook id is authenticated data, so a ciphertext copied
onto another webhook row does not decrypt.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)


_KEY_CHECK_TEXT = "hookfleet secret key check v1"
_KEY_CHECK_AAD = "hookfleet-key-check"  # never a webhook id (those start with wh_)


class SecretKeyError(ValueError):
    """The configured key is missing, malformed, or does not open a stored secret (wrong key)."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretKeyError(f"HOOKFLEET_SECRET_KEY must be 32 bytes of base64 (got {len(key)} bytes)")
        self._aead = AESGCM(key)

    @classmethod
    def from_b64(cls, value: str) -> SecretBox:
        try:
            key = base64.b64decode(value, validate=True)
        except ValueError:
            raise SecretKeyError("HOOKFLEET_SECRET_KEY is not valid base64") from None
        return cls(key)

    def seal(self, secret: str, webhook_id: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret.encode(), webhook_id.encode())

    def key_check(self) -> bytes:
        """A value only this key opens (stored once per database; see hookfleet/secret_keys.py)."""
        return self.seal(_KEY_CHECK_TEXT, _KEY_CHECK_AAD)

    def opens_key_check(self, value: bytes) -> bool:
        try:
            return self._aead.decrypt(value[:12], value[12:], _KEY_CHECK_AAD.encode()) == _KEY_CHECK_TEXT.encode()
        except InvalidTag:
            return False

    def open(self, ciphertext: bytes, webhook_id: str) -> str:
        try:
            return self._aead.decrypt(ciphertext[:12], ciphertext[12:], webhook_id.encode()).decode()
        except InvalidTag:
            raise SecretKeyError(
                f"secret of webhook {webhook_id} does not decrypt: wrong HOOKFLEET_SECRET_KEY?"
            ) from None


def ensure_key_file(path: Path) -> Path:
    """Create a key file with a fresh random key unless it exists (never overwritten: it may be the only copy)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by another process
            return path
        with os.fdopen(fd, "w") as out:
            out.write(base64.b64encode(secrets.token_bytes(32)).decode())
        log.warning("event=secret_key_generated path=%s hint='set HOOKFLEET_SECRET_KEY in production'", path)
    return path


def key_b64(secret_key: str | None, home: str) -> str:
    """The configured key, or for single-host development a key file created once under `home`."""
    if secret_key and secret_key.strip():
        return secret_key.strip()
    return ensure_key_file(Path(home).expanduser() / "secret.key").read_text().strip()


def _headers_aad(webhook_id: str) -> str:
    # Bound to the webhook *and* the column, so a headers ciphertext never opens as a secret or vice versa.
    return f"{webhook_id}/headers"


def seal_headers(box: SecretBox, webhook_id: str, headers: dict[str, str]) -> bytes | None:
    """A webhook's custom request headers, sealed like its secret (they often carry credentials)."""
    if not headers:
        return None
    return box.seal(json.dumps(headers, separators=(",", ":"), sort_keys=True), _headers_aad(webhook_id))


def open_headers(box: SecretBox, ciphertext: bytes | None, webhook_id: str) -> dict[str, str]:
    if ciphertext is None:
        return {}
    value = json.loads(box.open(bytes(ciphertext), _headers_aad(webhook_id)))
    return {str(k): str(v) for k, v in value.items()}


def _signing_key_aad(webhook_id: str) -> str:
    # Bound to the webhook and the column, as for the headers: a signing key never opens as a secret.
    return f"{webhook_id}/signing_key"


def seal_signing_key(box: SecretBox, webhook_id: str, signing_key: str) -> bytes:
    """A webhook's Ed25519 private key (`whsk_`), sealed like its secret: a leaked dump signs nothing."""
    return box.seal(signing_key, _signing_key_aad(webhook_id))


def open_signing_key(box: SecretBox, ciphertext: bytes | None, webhook_id: str) -> str | None:
    if ciphertext is None:
        return None
    return box.open(bytes(ciphertext), _signing_key_aad(webhook_id))
