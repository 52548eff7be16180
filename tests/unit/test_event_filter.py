"""Webhook filters, known answers: what matches, what cannot be saved (and where), what fails per event."""

from __future__ import annotations

import time
from typing import Any

import pytest

from schemas.event_filter import (
    MAX_FILTER_LENGTH,
    EventInput,
    FilterError,
    FilterFailed,
    check_filter,
    compile_filter,
    matches,
)

INVOICE: dict[str, Any] = {
    "amount": 1200,
    "currency": "eur",
    "customer": {"id": "cus_1", "tier": "gold"},
    "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 0}],
    "note": None,
}


def _event(data: dict[str, Any] | None = None, event_type: str = "invoice.paid") -> EventInput:
    return EventInput(event_type, "acct_1", INVOICE if data is None else data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('type == "invoice.paid"', True),
        ('type == "invoice.created"', False),
        ('account_id == "acct_1"', True),
        ("data.amount > 1000", True),
        ("data.amount >= 1200 && data.amount < 1201", True),
        ('data.currency in ["usd", "gbp"]', False),
        ('data.customer.tier == "gold" || data.amount > 5000', True),
        ('data["currency"].startsWith("e")', True),
        ('data.customer.id.matches("^cus_[0-9]+$")', True),
        ("has(data.refund)", False),
        ("!has(data.refund) && has(data.customer.tier)", True),
        ("data.lines.exists(l, l.qty == 0)", True),
        ("size(data.lines) == 2", True),
        ("data.note == null", True),
        ("type(data.amount) == int", True),
        ('type.endsWith(".paid")', True),
    ],
)
def test_known_answers(text: str, expected: bool) -> None:
    assert matches(compile_filter(text), _event()) is expected


def test_one_event_input_serves_filters_with_and_without_data() -> None:
    event = _event()
    assert matches(compile_filter('type == "invoice.paid"'), event)
    assert matches(compile_filter("data.amount == 1200"), event)
    assert matches(compile_filter('account_id == "acct_1"'), event)


@pytest.mark.parametrize(
    ("text", "reason", "line", "column"),
    [
        ("data.amount >", "syntax error: mismatched input '<EOF>'", 1, 14),
        ('type == "a" &&& data.x', "syntax error: token recognition error", 1, 15),
        ('type == "a"\n  && (data.x', "syntax error: missing ')'", 2, 13),
        ("amount > 10", "unknown name 'amount'", 1, 1),
        ('type == "a" && customer.tier == "gold"', "unknown name 'customer'", 1, 16),
        ('data.currency.indexOf("e") > 0', "unknown function indexOf()", 1, 15),
        ('lowerAscii(data.currency) == "eur"', "unknown function lowerAscii()", 1, 1),
        ("data.a.all(x, data.b.exists(y, x == y))", "at most one of all()", 1, 22),
        ("   ", "filter is empty", 1, 1),
        ("true || " * 200 + "true", "filter is 1604 characters long, at most 1000", 1, MAX_FILTER_LENGTH + 1),
    ],
)
def test_refused_with_reason_and_position(text: str, reason: str, line: int, column: int) -> None:
    with pytest.raises(FilterError) as refused:
        check_filter(text)
    assert refused.value.reason.startswith(reason), refused.value.reason
    assert (refused.value.line, refused.value.column) == (line, column)
    assert f"line {line}, column {column}" in str(refused.value)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("data.refund.amount > 0", 'Key not found in map : "refund"'),
        ('data.amount + "x" == "y"', "No matching overloads found : _+_(int64, string)"),
        ("data.amount / 0 == 1", "divide by zero"),
        ("data.amount", "filter gave int, not true or false"),
        ("data.customer", "filter gave dict, not true or false"),
    ],
)
def test_an_event_the_filter_cannot_answer_for_fails_with_why(text: str, why: str) -> None:
    with pytest.raises(FilterFailed) as failed:
        matches(compile_filter(text), _event())
    assert why in str(failed.value)


def test_the_same_text_compiles_once() -> None:
    assert compile_filter("data.amount > 7") is compile_filter("data.amount > 7")


def test_a_rejected_text_is_rejected_again_from_the_cache() -> None:
    for _ in range(2):
        with pytest.raises(FilterError, match="unknown name 'nope'"):
            compile_filter("nope == 1")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("data.amount * 9223372036854775807 > 0", "integer overflow"),
        ('data.currency.matches("[")', "invalid regular expression: missing ]: ["),
        ("data.lines[5].qty == 1", "Index error: index=5 size=2"),
        ("data.many.exists(n, n < 0)", "Iteration budget exceeded"),  # the runtime's own bound: 10,000
    ],
)
def test_runtime_failures_are_one_short_line_without_status_codes(text: str, why: str) -> None:
    with pytest.raises(FilterFailed) as failed:
        matches(compile_filter(text), _event({**INVOICE, "many": list(range(10_000))}))
    assert str(failed.value) == why and "\n" not in str(failed.value) and len(str(failed.value)) <= 200


def test_nesting_deeper_than_the_parsers_limit_is_refused() -> None:
    with pytest.raises(FilterError, match="recursion limit exceeded"):
        check_filter("(" * 40 + "true" + ")" * 40)


def test_a_payload_value_the_runtime_cannot_take_fails_the_filter_not_the_caller() -> None:
    event = _event({**INVOICE, "huge": 2**70})  # JSON allows it; CEL's int is 64 bits
    with pytest.raises(FilterFailed, match="out of range"):
        matches(compile_filter("data.amount > 1"), event)


@pytest.mark.parametrize(
    ("text", "named", "column"),
    [
        ('type ==\u2028"a"', "U+2028 (LINE SEPARATOR)", 8),
        ('type ==\u2029"a"', "U+2029 (PARAGRAPH SEPARATOR)", 8),
        ('type == "a\x00"', "U+0000 (NULL)", 11),  # inside a literal: PostgreSQL cannot store it
        ('type == "\u202e"', "U+202E (RIGHT-TO-LEFT OVERRIDE)", 10),
        ('type\u200b == "a"', "U+200B (ZERO WIDTH SPACE)", 5),
        ('\ufefftype == "a"', "U+FEFF (ZERO WIDTH NO-BREAK SPACE)", 1),
        ('type == "\ud800"', "U+D800 (LONE SURROGATE)", 10),
        ('type == "a"\x85', "U+0085 (NEXT LINE)", 12),
    ],
)
def test_a_control_format_or_separator_character_is_refused_by_name_and_position(
    text: str, named: str, column: int
) -> None:
    with pytest.raises(FilterError) as refused:
        check_filter(text)
    assert refused.value.reason.startswith(f"must not contain {named}"), refused.value.reason
    assert (refused.value.line, refused.value.column) == (1, column)


def test_tabs_and_line_breaks_still_lay_a_filter_out_and_an_escape_matches_a_separator_in_the_event() -> None:
    assert matches(compile_filter('type == "invoice.paid"\r\n\t&& data.currency == "eur"'), _event())
    assert matches(compile_filter('data.note == "a\\u2028b"'), _event({"note": "a\u2028b"}))


def test_a_parser_error_without_a_place_in_the_text_is_given_at_its_start() -> None:
    with pytest.raises(FilterError) as refused:
        check_filter("data" + ".a" * 300 + " == 1")  # the parser reports line 4294967295, column 0
    assert (refused.value.line, refused.value.column) == (1, 1)
    assert "[INVALID_ARGUMENT]" not in refused.value.reason and "recursion depth" in refused.value.reason


def test_matches_is_linear_in_its_input_even_for_a_backtracking_pattern() -> None:
    compiled = compile_filter('data.note.matches("(a+)+$")')
    started = time.perf_counter()
    assert not matches(compiled, _event({"note": "a" * 1_000_000 + "!"}))  # exponential for a backtracking engine
    assert time.perf_counter() - started < 1.0


def test_an_event_nested_as_deep_as_the_wire_allows_or_holding_a_separator_is_evaluated() -> None:
    deep: Any = 1
    for _ in range(250):  # deeper than the wire parser accepts (schemas/models.py reads events)
        deep = {"a": deep}
    assert matches(compile_filter("size(data.deep) == 1"), _event({"deep": deep}))
    assert matches(compile_filter('data.note.contains("\\u2028")'), _event({"note": "x\u2028y"}))


@pytest.mark.parametrize(
    ("text", "what", "column"),
    [
        ('data.lines.exists(l, data.note.matches("x"))', "read data", 22),  # 10,000 x the payload
        ("data.lines.exists(l, l.sku == data.currency)", "read data", 31),
        ("data.lines.all(l, has(data.x))", "read data", 23),
        ("data.lines.exists(data, data.qty == 0)", "read data", 25),
        ('data.lines.exists(l, l.sku.matches("^a"))', "call matches()", 28),  # 10,000 pattern compiles
        ('data.lines.filter(l, "abc".matches(l.sku)).size() > 0', "call matches()", 28),
    ],
)
def test_a_macro_body_that_would_cost_more_than_its_element_is_refused(text: str, what: str, column: int) -> None:
    with pytest.raises(FilterError) as refused:
        check_filter(text)
    body = "the body of all(), exists(), exists_one(), map() or filter()"
    assert refused.value.reason.startswith(f"{body} cannot {what}:")
    assert (refused.value.line, refused.value.column) == (1, column)


@pytest.mark.parametrize(
    "text",
    [
        'data.lines.exists(l, l.sku.startsWith("a")) && data.currency.matches("^e")',  # data and matches outside
        'data.lines.exists(l, l.sku == "data" || l.sku == ".exists(")',  # names inside literals are text
        'type == "x.all(y, data)" || data.lines.all(l, l.qty >= 0)',
        "data.lines.map(l, l.qty).size() == 2 && data.amount > 0",
    ],
)
def test_a_macro_body_reading_its_element_only_is_accepted(text: str) -> None:
    compile_filter(text)


def test_a_macro_over_the_longest_list_costs_milliseconds_not_seconds() -> None:
    compiled = compile_filter('data.many.exists(s, s.contains("b") || s + s == "x")')
    started = time.perf_counter()
    assert not matches(compiled, _event({"many": ["a" * 20] * 9_999, "big": "a" * 200_000}))
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("text", "reason", "column"),
    [
        ("data.note.matches(data.pattern)", "matches() takes one string literal", 11),
        ("data.note.contains(data.currency)", "contains() takes one string literal", 11),
        ('"abc".matches(data.pattern)', "matches() takes one string literal", 7),
        ('matches(data.note, "^a")', "matches() takes one string literal", 1),
        ('data.note.matches("^a" + "b")', "matches() takes one string literal", 11),
        (" || ".join(['data.note.matches("a")'] * 5), "at most 4 matches() per filter", 4 * 26 + 11),
        ('data.note.matches("(")', "matches(): invalid regular expression: missing ): (", 19),
        ('data.note.matches("\\\\pL{200}")', "matches(): this pattern takes", 19),  # 280 ms per event
    ],
)
def test_a_pattern_that_would_be_costly_for_every_event_is_refused_when_saved(
    text: str, reason: str, column: int
) -> None:
    with pytest.raises(FilterError) as refused:
        check_filter(text)
    assert refused.value.reason.startswith(reason), refused.value.reason
    assert (refused.value.line, refused.value.column) == (1, column)


@pytest.mark.parametrize(
    "text",
    [
        'data.customer.id.matches("^cus_[0-9]+$") && data.currency.matches(r"(?i)^EUR$")',
        "data.note.matches('''^a''') || data.note . matches( \"b\" )",
        'type == "x.matches(\\".{1000}\\")"',  # a call written inside a literal is text
        'data.note.contains("a\\"b") || data.currency.contains("eu")',  # contains() on literals
    ],
)
def test_literal_patterns_that_compile_quickly_are_saved(text: str) -> None:
    assert check_filter(text) == text


def test_the_worst_filter_that_can_be_saved_costs_milliseconds_per_event() -> None:
    text = " || ".join([f'data.note.matches("[a-z]{{{n}}}x")' for n in (90, 91, 92, 93)])
    compiled = compile_filter(check_filter(text))
    started = time.perf_counter()
    assert not matches(compiled, _event({"note": "a" * 100_000}))
    assert time.perf_counter() - started < 0.05


def test_a_macro_body_over_100_characters_is_refused_at_its_101st() -> None:
    body = " || ".join(f"l.qty == {n}" for n in range(20))
    with pytest.raises(FilterError) as refused:
        check_filter(f"data.lines.exists(l, {body})")
    assert refused.value.reason.startswith(
        f"the body of all(), exists(), exists_one(), map() or filter() is at most 100 characters ({len(body)} given)"
    )
    assert (refused.value.line, refused.value.column) == (1, len("data.lines.exists(l, ") + 101)
    fits = " || ".join(f"l.qty == {n}" for n in range(7))  # 94 characters
    assert check_filter(f"data.lines.exists(l, {fits})")
