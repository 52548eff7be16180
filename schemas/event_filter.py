"""Webhook filters: a CEL expression over one event, checked when it is saved and evaluated at fan-out.

A filter reads `type`, `account_id` and `data` (the event's payload, `data.amount`, `data["a-b"]`) and
must give `true` or `false`; nothing else of the event or the fleet is in reach, and CEL has no loops, no
assignment and no I/O, so a filter can only answer. Its cost is bounded by what is accepted here:
at most `MAX_FILTER_LENGTH` characters, and at most one comprehension macro (`all`, `exists`,
`exists_one`, `map`, `filter`): nested ones would cost the product of their lists' lengths, and CEL has no
other way to repeat work. `matches` is RE2-like (the Rust `regex` crate): linear in its input.

The language is `common-expression-language` (CEL compiled in Rust): chosen by cost per evaluation and
upkeep (bench/RESULTS.md "Filter language"). Programs are compiled once per expression text and cached.
An event that makes a filter fail (a missing field, a type mismatch) is a `FilterFailed`: fan-out counts it
and treats it as no match, the preview reports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cel

MAX_FILTER_LENGTH = 1_000
VARIABLES = frozenset({"type", "account_id", "data"})
"""What a filter can read of an event."""
_TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type"})
"""CEL's type identifiers (`type(data.n) == int`): the library reports them among the variables."""
_MACRO = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)?")
_POSITION = re.compile(r"<input>:(\d+):(\d+): (?:Syntax error: )?([^\n]*)")
_CACHE_SIZE = 4_096


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
    program: cel.Program
    reads_data: bool
    """Only then does an event's payload need converting for it (the costly part of an evaluation)."""


def compile_filter(text: str) -> CompiledFilter:
    """The compiled filter, or FilterError naming what to fix and where. Cached by expression text."""
    compiled = _compile_cached(text)
    if isinstance(compiled, FilterError):
        raise compiled
    return compiled


def check_filter(text: str) -> str:
    """For validators: the text itself when it compiles, else FilterError."""
    compile_filter(text)
    return text


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
    macros = list(_MACRO.finditer(text))
    if len(macros) > 1:
        raise FilterError(
            "at most one of all(), exists(), exists_one(), map(), filter() per filter"
            " (nested ones cost the product of their lists' lengths)",
            *_line_column(text, macros[1].start() + 1),
        )
    try:
        program = cel.compile(text)
    except (ValueError, RuntimeError) as exc:
        raise _syntax_error(str(exc)) from None
    except BaseException as exc:
        if not _is_panic(exc):
            raise
        raise FilterError("not a valid CEL expression") from None
    bound = {m.group(1) for m in macros if m.group(1)}
    unknown = sorted(set(program.variables()) - VARIABLES - _TYPE_NAMES - bound)
    if unknown:
        name = unknown[0]
        found = re.search(rf"(?<![.\w]){re.escape(name)}(?!\w)", text)
        raise FilterError(
            f"unknown name {name!r}: a filter reads type, account_id and data (e.g. data.{name})",
            *_line_column(text, found.start() if found else 0),
        )
    return CompiledFilter(text, program, "data" in program.variables())


def _syntax_error(message: str) -> FilterError:
    """The library's first error as reason, line and column (its own caret drawing left out)."""
    found = _POSITION.search(message)
    if found is None:
        return FilterError(f"not a valid CEL expression: {message.splitlines()[0][:200]}")
    reason = found.group(3).strip()
    if len(reason) > 160:
        reason = reason[:160] + "..."
    return FilterError(f"syntax error: {reason}", int(found.group(1)), int(found.group(2)))


def _line_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a 0-based offset."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


class EventInput:
    """One event as its filters read it: converted for the library once per event, however many webhooks'
    filters read it, and its payload only when a filter reads `data`."""

    __slots__ = ("_context", "_data", "_has_data")

    def __init__(self, event_type: str, account_id: str, data: dict[str, Any]) -> None:
        self._data = data
        self._context = cel.Context({"type": event_type, "account_id": account_id})
        self._has_data = False

    def context(self, reads_data: bool) -> cel.Context:
        if reads_data and not self._has_data:
            self._context.add_variable("data", self._data)
            self._has_data = True
        return self._context


def matches(compiled: CompiledFilter, event: EventInput) -> bool:
    """Whether the event passes; FilterFailed when the filter cannot answer for it (never anything else)."""
    try:
        result = compiled.program.execute(event.context(compiled.reads_data))
    except Exception as exc:  # the library raises KeyError, TypeError, RuntimeError, ...: all mean "cannot answer"
        raise FilterFailed(_evaluation_error(exc)) from None
    except BaseException as exc:
        if not _is_panic(exc):
            raise
        raise FilterFailed("the filter library failed on this event") from None
    if not isinstance(result, bool):
        raise FilterFailed(f"filter gave {type(result).__name__}, not true or false")
    return result


def _is_panic(exc: BaseException) -> bool:
    """A Rust panic inside the library (pyo3's PanicException derives from BaseException, so `except
    Exception` misses it): none is known, but one must not stop fan-out or the API."""
    return type(exc).__name__ == "PanicException"


def _evaluation_error(exc: Exception) -> str:
    """One short line: the library's messages run over several lines (a regex's caret drawing)."""
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0] if exc.args else ''}"[:200]
    first = " ".join(str(exc).split()).split(". ")[0]
    return f"{type(exc).__name__}: {first}"[:200]
