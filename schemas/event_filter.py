"""Webhook filters: a CEL expression over one event, checked when it is saved and evaluated at fan-out.

A filter reads `type`, `account_id` and `data` (the event's payload, `data.amount`, `data["a-b"]`) and
must give `true` or `false`; nothing else of the event or the fleet is in reach, and CEL has no loops, no
assignment and no I/O, so a filter can only answer. Its cost is bounded by what is accepted here:
at most `MAX_FILTER_LENGTH` characters, and at most one comprehension macro (`all`, `exists`,
`exists_one`, `map`, `filter`): nested ones would cost the product of their lists' lengths, and CEL has no
other way to repeat work. `matches` is RE2: linear in its input.

The runtime is `cel-expr-python`, the CEL project's own Python binding of its C++ implementation: chosen
by cost per evaluation (5-8x cheaper than the Rust binding on a 12 KB payload) and upkeep (no dependency)
(bench/RESULTS.md "Filter language"). Its type checker cannot take a variable named `type` (CEL's own
`type()`), so programs are compiled unchecked and the checker is asked only for names that are not
declared. Programs are compiled once per expression text and cached. An event that makes a filter fail (a
missing field, a type mismatch) is a `FilterFailed`: fan-out counts it and treats it as no match, the
preview reports it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cel_expr_python.cel as cel

from schemas.free_text import first_refused

MAX_FILTER_LENGTH = 1_000
VARIABLES = frozenset({"type", "account_id", "data"})
"""What a filter can read of an event."""
_ENV = cel.NewEnv(variables={"account_id": cel.Type.STRING, "data": cel.Type.DYN})
"""`type` is left out: declaring it is refused (it is CEL's own `type()`); unchecked programs read it from
the activation all the same."""
_MACRO = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(")
_POSITION = re.compile(r"<input>:(\d+):(\d+): (?:Syntax error: )?([^\n]*)")
_UNDECLARED = re.compile(r"undeclared reference to '([A-Za-z_][A-Za-z0-9_]*)")
_STATUS = re.compile(r"^[A-Z_]+: | \[[A-Z_]+\]$")
_CACHE_SIZE = 4_096
_STRING_LITERAL = re.compile(
    r"(?:[rR][bB]?|[bB][rR]?)?"
    r"(?:'''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\"|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\")"
)
"""CEL's string and bytes literals, single or triple quoted, raw or not: blanked before the text is searched."""
_LITERAL_ONLY = re.compile(r"(?<!\w)(?:matches|contains)(?=\s*\()")
"""Every call of matches() or contains(), member or global, in the filter with its literals blanked."""
_LITERAL_CALL = re.compile(rf"\.\s*(?P<name>matches|contains)\s*\(\s*(?P<literal>{_STRING_LITERAL.pattern})\s*\)")
"""A member call of matches() or contains() on one string literal, in the filter as written."""
MAX_MACRO_BODY = 100
"""Characters of a macro's body: 10,000 iterations of a 900-character body of comparisons took 100-200 ms
per event, of a 95-character one 5-12 ms, of `x < 0` 2-5 ms."""
MAX_PATTERNS = 4
PATTERN_COMPILE_BUDGET_S = 0.002
"""Typical patterns compile in 10-400 us; `.{1000}` takes 4.6 ms, `\\pL{200}` 280 ms."""
_COSTLY_IN_BODY = re.compile(r"(?<![.\w])data(?!\w)|(?<!\w)matches(?=\s*\()")
_WHITESPACE = "\t\n\r"
"""The control characters a filter may hold: it can span lines. Every other control, format or separator
character is refused before the parser sees it (PostgreSQL cannot store a NUL; the rest are invisible or
end a line for some reader); an event's text holding one is matched with a string escape (`"\\u2028"`)."""


class FilterError(ValueError):
    """A filter that cannot be saved: what is wrong and where (1-based line and column)."""

    def __init__(self, reason: str, line: int = 1, column: int = 1) -> None:
        self.reason = reason
        self.line = line
        self.column = column
        super().__init__(f"{reason} (line {line}, column {column})")


class FilterFailed(Exception):
    """A filter that could not answer for one event: counts as no match."""


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    text: str
    program: cel.Expression


def compile_filter(text: str) -> CompiledFilter:
    """The compiled filter, or FilterError naming what to fix and where. Cached by expression text."""
    compiled = _compile_cached(text)
    if isinstance(compiled, FilterError):
        raise compiled
    return compiled


def check_filter(text: str) -> str:
    """For validators (saving a filter, previewing one): the text itself when it compiles and each of its
    `matches()` patterns is valid and cheap to compile, else FilterError. The pattern check is here, at
    save time, and not in `compile_filter`: it is measured, and a stored filter must not stop compiling at
    fan-out because a machine was busy."""
    compile_filter(text)
    code = _blank_literals(text)
    calls = {found.start() for found in _LITERAL_ONLY.finditer(code)}
    for found in _LITERAL_CALL.finditer(text):
        if found.group("name") == "matches" and found.start("name") in calls:  # not text inside a literal
            _check_pattern(text, found.start("literal"), found.group("literal"))
    return text


def _blank_literals(text: str) -> str:
    """The filter with its string literals turned to spaces, positions kept: names inside them are text."""
    return _STRING_LITERAL.sub(lambda found: " " * len(found.group()), text)


def _check_pattern(text: str, at: int, literal: str) -> None:
    """The runtime compiles a pattern at every call, so one that takes long to compile (`\\pL{200}`:
    200 copies of every letter of Unicode, 280 ms) would cost that for every event. Timed as the fastest
    of up to 3 compiles, so a busy machine does not refuse a cheap pattern."""
    try:
        probe = _ENV.compile(f'"".matches({literal})', disable_check=True)
    except Exception as exc:  # the literal compiled within the filter: not expected, but never a 500
        raise FilterError(f"matches(): {_one_line(str(exc))}", *_line_column(text, at)) from None
    fastest = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        value = probe.eval(data={})
        fastest = min(fastest, time.perf_counter() - started)
        if value.type() == cel.Type.ERROR:
            raise FilterError(f"matches(): {_one_line(str(value.plain_value()))}", *_line_column(text, at))
        if fastest <= PATTERN_COMPILE_BUDGET_S or fastest > 10 * PATTERN_COMPILE_BUDGET_S:
            break
    if fastest > PATTERN_COMPILE_BUDGET_S:
        raise FilterError(
            f"matches(): this pattern takes {fastest * 1000:.1f} ms to compile, at most"
            f" {PATTERN_COMPILE_BUDGET_S * 1000:.0f} ms (it is compiled for every event): use smaller"
            " repetition counts or narrower classes",
            *_line_column(text, at),
        )


@lru_cache(maxsize=_CACHE_SIZE)
def _compile_cached(text: str) -> CompiledFilter | FilterError:
    """A rejected text is cached as its error too, so a stored filter that no longer compiles costs one
    lookup per event at fan-out, not one compile."""
    try:
        return _compile(text)
    except FilterError as error:
        return error


def _compile(text: str) -> CompiledFilter:
    if not text.strip():
        raise FilterError("filter is empty; leave it out (null) to receive every event of the subscribed types")
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(
            f"filter is {len(text)} characters long, at most {MAX_FILTER_LENGTH}",
            *_line_column(text, MAX_FILTER_LENGTH),
        )
    refused = first_refused(text, allowed=_WHITESPACE)
    if refused is not None:
        index, named = refused
        escape = "" if "SURROGATE" in named else f"; inside a string literal write it as \\u{ord(text[index]):04x}"
        raise FilterError(f"must not contain {named}{escape}", *_line_column(text, index))
    code = _blank_literals(text)
    macros = list(_MACRO.finditer(code))
    if len(macros) > 1:
        raise FilterError(
            "at most one of all(), exists(), exists_one(), map(), filter() per filter"
            " (nested ones cost the product of their lists' lengths)",
            *_line_column(text, macros[1].start() + 1),
        )
    try:
        program = _ENV.compile(text, disable_check=True)
    except Exception as exc:  # the binding raises RuntimeError or ValueError with the parser's report
        raise _syntax_error(str(exc), text) from None
    if macros:
        _refuse_costly_macro_body(code, macros[0].end())
    _refuse_unbounded_patterns(text, code)
    _refuse_unknown_names(text)
    return CompiledFilter(text, program)


def _refuse_unbounded_patterns(text: str, code: str) -> None:
    """`matches()` and `contains()` only on one string literal (`text.matches("literal")`), and at most
    `MAX_PATTERNS` matches(): a pattern read from the event would be a new regular expression to compile for
    every event, and `contains()` of one payload string in another costs the product of their lengths (85 KB
    in 170 KB: 160 ms), both chosen by whoever writes events. On literals, the filter's length bounds both."""
    calls = list(_LITERAL_ONLY.finditer(code))
    patterns = [call for call in calls if call.group() == "matches"]
    if len(patterns) > MAX_PATTERNS:
        raise FilterError(
            f"at most {MAX_PATTERNS} matches() per filter (each pattern is compiled for every event)",
            *_line_column(text, patterns[MAX_PATTERNS].start()),
        )
    literal_calls = {found.start("name") for found in _LITERAL_CALL.finditer(text)}
    for call in calls:
        if call.start() not in literal_calls:
            name = call.group()
            raise FilterError(
                f'{name}() takes one string literal, written text.{name}("...") (from the event, its cost'
                " would be chosen by whoever writes events)",
                *_line_column(text, call.start()),
            )


def _refuse_costly_macro_body(code: str, opened: int) -> None:
    """A macro's body runs once per element, up to the runtime's 10,000, so what costs more than its element
    is refused there: reading `data` (10,000 times the payload: a 200 KB string compared per element takes
    seconds, on the fan-out's loop) and `matches()` (the runtime compiles its pattern at every call: 10,000
    compiles of `[a-z]{1,100}[0-9]{1,100}` take 12 s even on empty strings). The body may read its element,
    `type` and `account_id`, and use every other function. `code` is the filter with its string literals
    blanked, and compiles, so its brackets balance."""
    depth, body = 0, -1
    for index in range(opened, len(code)):
        char = code[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif char == "," and depth == 0 and body < 0:
            body = index + 1
    else:
        index = len(code)
    written = code[body:index].strip() if body >= 0 else ""
    if len(written) > MAX_MACRO_BODY:
        starts = code.index(written[0], body)
        raise FilterError(
            f"the body of all(), exists(), exists_one(), map() or filter() is at most {MAX_MACRO_BODY} characters"
            f" ({len(written)} given): it runs once per element, up to 10,000 times per event",
            *_line_column(code, starts + MAX_MACRO_BODY),
        )
    found = _COSTLY_IN_BODY.search(code, body, index) if body >= 0 else None
    if found is not None:
        what = "call matches()" if found.group() != "data" else "read data"
        raise FilterError(
            f"the body of all(), exists(), exists_one(), map() or filter() cannot {what}: it runs once per"
            " element (compare the element with a literal or use startsWith(), contains(), endsWith(); test data"
            " and use matches() outside the macro)",
            *_line_column(code, found.start()),
        )


def _refuse_unknown_names(text: str) -> None:
    """The checker's "undeclared reference" errors only: its others come from `type` being a variable here."""
    try:
        _ENV.compile(text)
    except Exception as exc:  # any report is read for undeclared names, the rest ignored
        for name in _UNDECLARED.findall(str(exc)):
            first = name.split(".")[0]
            if first in VARIABLES:
                continue
            called = re.search(rf"(?<!\w){re.escape(first)}(?=\s*\()", _blank_literals(text))
            if called is not None:  # a function this runtime does not have (`indexOf`, `lowerAscii`)
                raise FilterError(
                    f"unknown function {first}(): a filter calls CEL's standard functions (size, contains,"
                    " startsWith, endsWith, matches, has, int, string, ...)",
                    *_line_column(text, called.start()),
                ) from None
            found = re.search(rf"(?<![.\w]){re.escape(first)}(?!\w)", text)
            raise FilterError(
                f"unknown name {first!r}: a filter reads type, account_id and data (e.g. data.{first})",
                *_line_column(text, found.start() if found else 0),
            ) from None


def _syntax_error(message: str, text: str) -> FilterError:
    """The parser's first error as reason, line and column (its own caret drawing left out). A position
    outside the text (the parser reports its depth limit at line 4294967295, column 0) is given as 1, 1."""
    found = _POSITION.search(message)
    if found is None:
        return FilterError(f"not a valid CEL expression: {_one_line(message.splitlines()[0])}")
    reason = _one_line(found.group(3))
    if len(reason) > 160:
        reason = reason[:160] + "..."
    line, column = int(found.group(1)), int(found.group(2))
    if not 1 <= line <= text.count("\n") + 1 or column < 1:
        line = column = 1
    return FilterError(f"syntax error: {reason}", line, column)


def _line_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a 0-based offset."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


class EventInput:
    """One event as its filters read it: converted for the runtime once per event, however many webhooks'
    filters read it."""

    __slots__ = ("_activation", "_values")

    def __init__(self, event_type: str, account_id: str, data: dict[str, Any]) -> None:
        self._values = {"type": event_type, "account_id": account_id, "data": data}
        self._activation: cel.Activation | None = None

    def activation(self) -> cel.Activation:
        """Made at the first evaluation, inside its error handling: a value the runtime cannot take (an
        integer beyond 64 bits) fails the filters, never the caller."""
        if self._activation is None:
            self._activation = _ENV.Activation(data=self._values)
        return self._activation


def matches(compiled: CompiledFilter, event: EventInput) -> bool:
    """Whether the event passes; FilterFailed when the filter cannot answer for it (never anything else)."""
    try:
        value = compiled.program.eval(event.activation())
        result = value.plain_value()
        failed = value.type() == cel.Type.ERROR
    except Exception as exc:  # a value the binding cannot convert: the filter cannot answer either
        raise FilterFailed(_one_line(str(exc))) from None
    if failed:
        raise FilterFailed(_one_line(str(result)))
    if not isinstance(result, bool):
        raise FilterFailed(f"filter gave {type(result).__name__}, not true or false")
    return result


def _one_line(message: str) -> str:
    """Short and on one line, without the runtime's status code (`NOT_FOUND: `)."""
    return _STATUS.sub("", " ".join(message.split()))[:200]
