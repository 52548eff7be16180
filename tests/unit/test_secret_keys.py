"""Which secret key a role uses (hookfleet/secret_keys.py), the key check value, a receiver's signature
check on hostile input, and the dispatcher's log line for a secret it cannot open."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from delivery.signing import hex_signature, verify_hex_signature
from dispatcher.subscription_store import _endpoint
from hookfleet.secret_keys import configured_box, is_local_stack
from hookfleet.secretbox import SecretBox, SecretKeyError, open_signing_key, seal_signing_key
from hookfleet.settings import ApiSettings, DispatcherSettings

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
REMOTE_DB = "postgresql://hookfleet@db.internal:5432/hookfleet"
LOCAL_DB = "postgresql://hookfleet@127.0.0.1:55432/hookfleet"


@pytest.mark.parametrize(
    ("url", "local"),
    [
        (LOCAL_DB, True),
        ("postgresql://hookfleet@localhost:55432/hookfleet?options=-csearch_path%3Dt_1", True),
        ("host=::1 port=55432 dbname=hookfleet", True),
        ("postgresql://hookfleet@127.0.0.1:5432/hookfleet", False),
        (REMOTE_DB, False),
        ("postgresql://hookfleet@10.0.0.5:55432/hookfleet", False),
        ("not a url", False),
    ],
)
def test_only_the_local_stack_database_counts_as_local(url: str, local: bool) -> None:
    assert is_local_stack(url) is local


@pytest.mark.parametrize("settings_class", [ApiSettings, DispatcherSettings])
@pytest.mark.parametrize("empty", [None, "", "   "])
def test_a_role_outside_the_local_stack_refuses_to_start_without_a_key(
    settings_class: type[ApiSettings] | type[DispatcherSettings], empty: str | None, tmp_path: Path
) -> None:
    settings = settings_class(database_url=REMOTE_DB, secret_key=empty, home=str(tmp_path))
    with pytest.raises(SecretKeyError, match=r"^HOOKFLEET_SECRET_KEY is not set") as caught:
        configured_box(settings)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "secret.key").exists(), "no key file may be created outside local development"


def test_local_stack_and_dev_mode_use_a_key_file_created_once(tmp_path: Path) -> None:
    local = ApiSettings(database_url=LOCAL_DB, home=str(tmp_path / "a"))
    first = configured_box(local)
    assert (tmp_path / "a" / "secret.key").stat().st_mode & 0o777 == 0o600
    sealed = first.seal("whsec_x", "wh_1")
    assert configured_box(local).open(sealed, "wh_1") == "whsec_x"  # the same key the second time
    dev = ApiSettings(database_url=REMOTE_DB, dev=True, home=str(tmp_path / "b"))
    configured_box(dev)
    assert (tmp_path / "b" / "secret.key").exists()


def test_a_given_key_or_key_file_wins(tmp_path: Path) -> None:
    sealed = SecretBox.from_b64(KEY_A).seal("whsec_x", "wh_1")
    given = configured_box(ApiSettings(database_url=REMOTE_DB, secret_key=f" {KEY_A}\n"))
    assert given.open(sealed, "wh_1") == "whsec_x"
    key_file = tmp_path / "key"
    key_file.write_text(KEY_A + "\n")
    from_file = configured_box(ApiSettings(database_url=REMOTE_DB, secret_key_file=str(key_file)))
    assert from_file.open(sealed, "wh_1") == "whsec_x"
    with pytest.raises(SecretKeyError, match=r"HOOKFLEET_SECRET_KEY_FILE .* cannot be read"):
        configured_box(ApiSettings(database_url=REMOTE_DB, secret_key_file=str(tmp_path / "missing")))
    with pytest.raises(SecretKeyError, match="not valid base64"):
        configured_box(ApiSettings(database_url=REMOTE_DB, secret_key="not base64!"))


def test_the_key_check_value_opens_only_with_its_key() -> None:
    a, b = SecretBox.from_b64(KEY_A), SecretBox.from_b64(KEY_B)
    check = a.key_check()
    assert a.opens_key_check(check)
    assert not b.opens_key_check(check)
    assert not a.opens_key_check(check[:-1] + bytes([check[-1] ^ 1]))
    assert not a.opens_key_check(a.seal("hookfleet secret key check v1", "wh_1"))  # bound to its own purpose


def test_signature_check_never_raises_on_hostile_input() -> None:
    good = hex_signature("whsec_x", b"{}")
    assert verify_hex_signature("whsec_x", b"{}", good)
    for hostile in ("é" * 64, "\udcff" * 64, "", good.upper(), good + "\x00", "ü"):
        assert verify_hex_signature("whsec_x", b"{}", hostile) is False


def test_dispatcher_skips_an_undecryptable_webhook_with_a_clear_log_line(caplog: pytest.LogCaptureFixture) -> None:
    sealed = SecretBox.from_b64(KEY_A).seal("whsec_x", "wh_1")
    row = (
        "wh_1",
        "acct_1",
        "https://example.com/",
        ["message.read"],
        True,
        sealed,
        None,
        None,
        None,
        "unordered",
        None,
        None,
        None,
        None,
        None,  # filter
        None,  # enabled_at
    )
    with caplog.at_level(logging.ERROR):
        assert _endpoint(row, SecretBox.from_b64(KEY_B)) is None
    [record] = caplog.records
    line = record.getMessage()
    assert "event=webhook_secret_undecryptable webhook_id=wh_1 account_id=acct_1 action=skipped" in line
    assert "HOOKFLEET_SECRET_KEY" in line and "whsec_x" not in line
    assert _endpoint(row, SecretBox.from_b64(KEY_A)) is not None


def test_dispatcher_opens_the_sealed_signing_keys_and_refuses_one_moved_to_another_column() -> None:
    box = SecretBox.from_b64(KEY_A)
    expires = datetime(2026, 12, 8, tzinfo=UTC)
    sealed_keys = (seal_signing_key(box, "wh_1", "whsk_new"), seal_signing_key(box, "wh_1", "whsk_old"))
    row = ("wh_1", "acct_1", "https://example.com/", ["message.read"], True, box.seal("whsec_x", "wh_1"), None, None,
           None, "unordered", None, *sealed_keys, expires, None, None)  # fmt: skip
    endpoint = _endpoint(row, box)
    assert endpoint is not None
    assert (endpoint.signing_key, endpoint.previous_signing_key) == ("whsk_new", "whsk_old")
    assert endpoint.previous_signing_key_expires_at == expires
    # The key is bound to its column: sealed as a secret, it does not open as a signing key (nor the reverse).
    with pytest.raises(SecretKeyError):
        open_signing_key(box, box.seal("whsk_new", "wh_1"), "wh_1")
    with pytest.raises(SecretKeyError):
        box.open(seal_signing_key(box, "wh_1", "whsk_new"), "wh_1")
