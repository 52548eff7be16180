"""The one rule for free text that a customer types and hookfleet writes elsewhere (a mail subject, a
header, a log line, the settings page): no line or paragraph separators and no control or format
characters (Unicode categories Zl, Zp, Cc, Cf), nor lone surrogates (Cs), which no UTF-8 writer takes.

Why: U+2028, U+2029 and U+0085 end a line for Python's mail library (it refused a webhook name holding
one and stopped the recorder), for log readers and for JavaScript; Cf characters (U+200E, U+202E,
U+FEFF, ...) are invisible and can make a name read as something else; Cc covers NUL, tab, CR and LF.
"""

from __future__ import annotations

import unicodedata

REFUSED_CATEGORIES = frozenset({"Zl", "Zp", "Cc", "Cf", "Cs"})
_CONTROL_NAMES = {
    "\x00": "NULL",
    "\t": "CHARACTER TABULATION",
    "\n": "LINE FEED",
    "\r": "CARRIAGE RETURN",
    "\x85": "NEXT LINE",
}
"""Names of the control characters most often met; the Unicode database names none of them."""


def refused_character(value: str) -> str | None:
    """The first refused character of `value`, as `U+2028 (LINE SEPARATOR)`; None when there is none."""
    found = first_refused(value)
    return None if found is None else found[1]


def first_refused(value: str, allowed: str = "") -> tuple[int, str] | None:
    """Where the first refused character of `value` is (0-based) and its name, skipping those in `allowed`
    (a multi-line text such as a filter keeps its line breaks and tabs); None when there is none."""
    for index, char in enumerate(value):
        if unicodedata.category(char) in REFUSED_CATEGORIES and char not in allowed:
            category = unicodedata.category(char)
            fallback = "LONE SURROGATE" if category == "Cs" else "CONTROL CHARACTER"
            name = unicodedata.name(char, "") or _CONTROL_NAMES.get(char, fallback)
            return index, f"U+{ord(char):04X} ({name})"
    return None


def check_free_text(value: str) -> str:
    """A pydantic AfterValidator: the field's value unchanged, or a ValueError naming the character."""
    found = refused_character(value)
    if found is not None:
        raise ValueError(f"must not contain {found}; remove it (no line breaks, control or invisible characters)")
    return value


def one_line(value: str) -> str:
    """`value` with every refused character replaced by a space: for text stored before the rule (or
    from elsewhere) that is about to be written into a mail header or a log line anyway."""
    return "".join(" " if unicodedata.category(c) in REFUSED_CATEGORIES else c for c in value)


def _refused_class() -> str:
    """The refused characters of the Basic Multilingual Plane as a regex class body (`\\x00-\\x1f...`),
    usable both by Python and by the OpenAPI document's ECMA 262 patterns. Characters above U+FFFF (a few
    rare format characters) cannot be written in that dialect's class; the validator refuses them anyway."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x10000):
        if unicodedata.category(chr(code)) in REFUSED_CATEGORIES - {"Cs"}:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))

    def esc(code: int) -> str:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


REFUSED_CLASS = _refused_class()
FREE_TEXT_PATTERN = f"^[^{REFUSED_CLASS}]*$"
"""JSON Schema pattern of a free-text field (any length, the field states its own bounds)."""
