"""Ed25519 signatures (Standard Webhooks `v1a`): the primitive against RFC 8032's vectors, the `v1a` entry
against a fixed key and message, and where it goes in a delivery's headers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from delivery.endpoint import Endpoint
from delivery.signing import (
    asymmetric_signature,
    ed25519_sign,
    hex_signature,
    new_signing_key,
    public_key,
    request_headers,
    standard_signature,
)

# RFC 8032 §7.1, TEST 1 and TEST 2: (secret key, public key, message, signature), hex.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


def _whsk(seed_hex: str) -> str:
    return "whsk_" + base64.b64encode(bytes.fromhex(seed_hex)).decode()


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_ed25519_known_answers_rfc8032(seed: str, public: str, message: str, signature: str) -> None:
    key = _whsk(seed)
    assert ed25519_sign(key, bytes.fromhex(message)).hex() == signature
    assert ed25519_sign(key, bytes.fromhex(message)).hex() == signature  # and again, from the cached key object
    assert public_key(key) == "whpk_" + base64.b64encode(bytes.fromhex(public)).decode()


# The Standard Webhooks specification's example message, signed with RFC 8032 TEST 1's key; the expected
# value was computed by Node's crypto.sign (OpenSSL), not by this code.
KEY = _whsk(RFC8032[0][0])
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
TIMESTAMP = 1674087231
BODY = (
    b'{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z",'
    b'"data":{"id":"1f81eb52-5198-4599-803e-771906343485"}}'
)
V1A = "v1a,pbpYBMlty2hExn4zt0UTGb6BaP2Vq5AfyzjB9GGV3x/wCJKd8UjOCf8Qhaji6TKY9C5eNMnlF0GG4udaO6B7Ag=="
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_v1a_entry_known_answer() -> None:
    assert public_key(KEY) == "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    assert asymmetric_signature(KEY, MSG_ID, TIMESTAMP, BODY) == V1A


def test_v1a_signs_id_and_timestamp_too() -> None:
    raw = bytes.fromhex(RFC8032[0][1])
    verifier = Ed25519PublicKey.from_public_bytes(raw)
    signature = base64.b64decode(V1A.removeprefix("v1a,"))
    verifier.verify(signature, f"{MSG_ID}.{TIMESTAMP}.".encode() + BODY)
    with pytest.raises(InvalidSignature):
        verifier.verify(signature, f"{MSG_ID}.{TIMESTAMP + 1}.".encode() + BODY)


def test_new_signing_keys_are_fresh_standard_webhooks_keys() -> None:
    first, second = new_signing_key(), new_signing_key()
    assert first != second
    assert first.startswith("whsk_") and len(base64.b64decode(first[5:])) == 32
    assert public_key(first).startswith("whpk_") and len(base64.b64decode(public_key(first)[5:])) == 32


def test_headers_carry_v1a_after_the_v1_entries_and_leave_x_webhook_signature_alone() -> None:
    previous_key = new_signing_key()
    headers = request_headers(SECRET, None, MSG_ID, "contact.created", 1, TIMESTAMP, BODY, (), (KEY, previous_key))
    assert headers["X-Webhook-Signature"] == hex_signature(SECRET, BODY)
    assert headers["webhook-signature"].split(" ") == [
        standard_signature(SECRET, MSG_ID, TIMESTAMP, BODY),
        V1A,
        asymmetric_signature(previous_key, MSG_ID, TIMESTAMP, BODY),
    ]
    plain = request_headers(SECRET, None, MSG_ID, "contact.created", 1, TIMESTAMP, BODY)
    assert plain["webhook-signature"] == standard_signature(SECRET, MSG_ID, TIMESTAMP, BODY)
    assert {k: v for k, v in headers.items() if k != "webhook-signature"} == {
        k: v for k, v in plain.items() if k != "webhook-signature"
    }


def test_endpoint_signs_with_the_previous_key_only_during_the_overlap() -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    endpoint = Endpoint(
        "wh_1", "acct", "https://x.test/", frozenset(), True, SECRET,
        signing_key="whsk_new", previous_signing_key="whsk_old",
        previous_signing_key_expires_at=now + timedelta(hours=1),
    )  # fmt: skip
    assert endpoint.signing_keys(now) == ("whsk_new", "whsk_old")
    assert endpoint.signing_keys(now + timedelta(hours=1)) == ("whsk_new",)
    assert Endpoint("wh_1", "acct", "https://x.test/", frozenset(), True, SECRET).signing_keys(now) == ()
    assert "whsk" not in repr(endpoint)
