"""The fan-out's idempotency store, pure: window expiry, the memory bound, a first publish read again."""

from __future__ import annotations

import re

import pytest

from dispatcher.idempotency import KeyStore, Verdict, digest
from hookfleet.kafka import Headers
from schemas.idempotency import FirstSight, InvalidIdempotencyKey, changelog_key, key_from_headers

HOUR_MS = 3_600_000
T0 = 1_800_000_000_000


def k(name: str, account: str = "acct_1") -> bytes:
    return digest(changelog_key(account, name))


def test_a_second_publish_within_the_window_is_a_duplicate_and_the_first_read_again_is_not() -> None:
    store = KeyStore(window_ms=24 * HOUR_MS, max_keys=10)
    assert store.judge(k("order-1"), 100, T0) is Verdict.NEW
    store.record(k("order-1"), 100, T0)
    assert store.judge(k("order-1"), 100, T0 + 5) is Verdict.READ_AGAIN  # the same message after a crash
    assert store.judge(k("order-1"), 101, T0 + 5) is Verdict.DUPLICATE
    assert store.judge(k("order-1"), 99, T0 + 5) is Verdict.DUPLICATE  # an earlier copy read after the first
    assert store.judge(k("order-1", account="acct_2"), 102, T0 + 5) is Verdict.NEW  # keys are per account
    assert store.judge(k("order-2"), 103, T0 + 5) is Verdict.NEW


def test_the_window_ends_a_key_even_before_it_is_evicted() -> None:
    store = KeyStore(window_ms=HOUR_MS, max_keys=10)
    store.record(k("a"), 1, T0)
    assert store.judge(k("a"), 2, T0 + HOUR_MS - 1) is Verdict.DUPLICATE
    assert store.judge(k("a"), 2, T0 + HOUR_MS) is Verdict.NEW
    store.record(k("a"), 2, T0 + HOUR_MS)  # starts afresh
    assert store.judge(k("a"), 3, T0 + HOUR_MS + 1) is Verdict.DUPLICATE
    assert store.judge(k("a"), 2, T0 + HOUR_MS + 1) is Verdict.READ_AGAIN


def test_expiry_evicts_exactly_the_keys_whose_window_is_over_oldest_first() -> None:
    store = KeyStore(window_ms=HOUR_MS, max_keys=100)
    for n in range(10):
        store.record(k(f"key-{n}"), n, T0 + n * 1000)
    assert store.expire(T0 + HOUR_MS + 4500) == 5  # seen at T0 .. T0+4000
    assert len(store) == 5 and store.evicted_expired == 5
    assert store.judge(k("key-5"), 99, T0 + HOUR_MS + 4500) is Verdict.DUPLICATE
    assert store.judge(k("key-4"), 99, T0 + HOUR_MS + 4500) is Verdict.NEW


def test_a_lookup_evicts_expired_keys_at_most_once_a_second() -> None:
    store = KeyStore(window_ms=1000, max_keys=100)
    store.record(k("a"), 1, T0)
    store.judge(k("b"), 2, T0 + 10)
    assert len(store) == 1
    store.judge(k("b"), 2, T0 + 1500)  # a's window is over, and a second has passed since the last sweep
    assert len(store) == 0 and store.evicted_expired == 1


def test_the_bound_holds_and_evicts_the_oldest_sixty_fourth_at_once() -> None:
    store = KeyStore(window_ms=24 * HOUR_MS, max_keys=128)
    for n in range(128):
        store.record(k(f"key-{n}"), n, T0 + n)
    assert len(store) == 128
    store.record(k("key-128"), 128, T0 + 128)
    assert len(store) == 127 and store.evicted_bound == 2  # 128 // 64 evicted, then the new one added
    assert store.judge(k("key-0"), 999, T0 + 200) is Verdict.NEW
    assert store.judge(k("key-1"), 999, T0 + 200) is Verdict.NEW
    assert store.judge(k("key-2"), 999, T0 + 200) is Verdict.DUPLICATE
    for n in range(129, 10_000):
        store.record(k(f"key-{n}"), n, T0 + n)
        assert len(store) <= 128
    assert store.judge(k("key-9999"), 1, T0 + 10_000) is Verdict.DUPLICATE


def test_restore_skips_expired_records_and_a_key_written_again_keeps_its_latest_sight() -> None:
    store = KeyStore(window_ms=HOUR_MS, max_keys=10)
    now = T0 + 2 * HOUR_MS
    store.restore(k("old"), 1, T0, now)
    store.restore(k("again"), 2, T0 + HOUR_MS // 2, now)  # window over, then written again by a later owner
    store.restore(k("again"), 7, T0 + HOUR_MS + HOUR_MS // 2, now)
    assert len(store) == 1
    assert store.judge(k("old"), 3, now) is Verdict.NEW
    assert store.judge(k("again"), 7, now) is Verdict.READ_AGAIN
    assert store.judge(k("again"), 8, now) is Verdict.DUPLICATE


def test_the_changelog_value_round_trips() -> None:
    sight = FirstSight("acct_1", "order-1", "evt_1", 42, T0)
    assert FirstSight.from_json(sight.to_json()) == sight
    assert sight.to_json().startswith(b'{"account_id":"acct_1","idempotency_key":"order-1","event_id":"evt_1"')


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, None),
        ([("traceparent", b"00-x")], None),
        ([("idempotency-key", b"order-1")], "order-1"),
        ([("idempotency-key", "r\u00e9f-1")], "r\u00e9f-1"),
        ([("idempotency-key", b"x" * 200)], "x" * 200),
        ([("Idempotency-Key", b"order-1")], "order-1"),  # as HTTP writes it
        ([("IDEMPOTENCY-KEY", b"order-1")], "order-1"),
        ([("idempotency_key", b"order-1")], None),  # another header
    ],
)
def test_the_key_comes_from_the_header(headers: Headers | None, expected: str | None) -> None:
    assert key_from_headers(headers) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "must be 1-200 bytes (got 0)"),
        (None, "must be 1-200 bytes (got 0)"),
        (b"x" * 201, "must be 1-200 bytes (got 201)"),
        (b"\xff\xfe", "must be UTF-8"),
        (b"a\nb", "must not contain U+000A (LINE FEED)"),
        (b"a\x00b", "must not contain U+0000 (NULL)"),
        (b"a\x7fb", "must not contain U+007F (CONTROL CHARACTER)"),
        ("a\u2028b".encode(), "must not contain U+2028 (LINE SEPARATOR)"),
        ("a\u0085b".encode(), "must not contain U+0085 (NEXT LINE)"),
        ("\u202eorder-1".encode(), "must not contain U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("order\u200b-1".encode(), "must not contain U+200B (ZERO WIDTH SPACE)"),
        ("\ufefforder-1".encode(), "must not contain U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
        (b"\xed\xa0\x80", "must be UTF-8"),  # an encoded lone surrogate
        ("a\ud800", "must be UTF-8"),  # a str header value holding one
        ("\u00e9" * 100 + "x", "must be 1-200 bytes (got 201)"),  # counted in bytes, not characters
    ],
)
def test_an_unusable_key_is_refused_naming_the_header(raw: bytes | str | None, message: str) -> None:
    with pytest.raises(InvalidIdempotencyKey, match=re.escape(f"header idempotency-key: {message}")):
        key_from_headers([("idempotency-key", raw)])


@pytest.mark.parametrize("second", [b"order-1", b"order-2", None])
def test_a_key_given_twice_is_refused_whatever_the_second_says(second: bytes | None) -> None:
    with pytest.raises(InvalidIdempotencyKey, match="header idempotency-key: given 2 times; set it once"):
        key_from_headers([("idempotency-key", b"order-1"), ("traceparent", b"00-x"), ("idempotency-key", second)])


def test_a_key_given_twice_in_two_spellings_is_refused_too() -> None:
    with pytest.raises(InvalidIdempotencyKey, match="header idempotency-key: given 2 times; set it once"):
        key_from_headers([("Idempotency-Key", b"order-1"), ("idempotency-key", b"order-2")])
