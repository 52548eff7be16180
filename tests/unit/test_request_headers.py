"""The one builder of a delivery's headers (delivery.signing.request_headers), shared by the dispatcher and
the API's delivery detail."""

from __future__ import annotations

from delivery.signing import hex_signature, request_headers

BODY = b'{"id":"evt_1","type":"message.read","created_at":"2026-11-27T10:15:03.123Z","account_id":"a","data":{}}'
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_signed_attempt_carries_every_documented_header_and_the_webhooks_own() -> None:
    headers = request_headers(
        SECRET, None, "evt_1", "message.read", 2, 1_764_238_503, BODY, [("Authorization", "Bearer t")]
    )
    assert headers["X-Webhook-Signature"] == hex_signature(SECRET, BODY)
    assert headers["webhook-signature"].startswith("v1,")
    assert (headers["X-Webhook-Id"], headers["webhook-id"]) == ("evt_1", "evt_1")
    assert (headers["X-Webhook-Timestamp"], headers["webhook-timestamp"]) == ("1764238503", "1764238503")
    assert (headers["X-Webhook-Event"], headers["X-Webhook-Attempt"]) == ("message.read", "2")
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer t"
    assert "X-Webhook-Signature-Previous" not in headers


def test_without_the_body_every_header_but_the_signatures_is_there() -> None:
    # A logged attempt whose event is past retention: the same ids and timestamps, nothing to sign
    headers = request_headers(SECRET, None, "evt_1", "message.read", 1, 1_764_238_503, None)
    assert headers["webhook-id"] == "evt_1" and headers["webhook-timestamp"] == "1764238503"
    assert headers["X-Webhook-Id"] == "evt_1" and headers["Content-Type"] == "application/json"
    assert not any("signature" in name.lower() for name in headers)


def test_a_reserved_name_stored_before_it_was_reserved_never_reaches_the_request() -> None:
    custom = [("Transfer-Encoding", "chunked"), ("X-Webhook-Id", "forged"), ("X-Team", "billing")]
    headers = request_headers(SECRET, None, "evt_1", "message.read", 1, 0, BODY, custom)
    assert "Transfer-Encoding" not in headers
    assert headers["X-Webhook-Id"] == "evt_1"
    assert headers["X-Team"] == "billing"
