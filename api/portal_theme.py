"""The settings page's theme for a portal link: accent colour, light or dark, font stack.

The values come from the page's query string and end up in CSS, so they pass `schemas.api.PortalTheme`
first (a colour is exactly #rrggbb; a font stack is family names of letters, digits, spaces and hyphens),
and this module writes only CSS custom properties from them (settings.css reads the variables). Text on
the accent is black or white, whichever contrasts more, so any accent stays readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from pydantic import ValidationError

from schemas.api import PortalTheme

THEME_PARAMS = ("accent", "mode", "font")
GENERIC_FONTS = frozenset(
    {
        "serif",
        "sans-serif",
        "monospace",
        "cursive",
        "fantasy",
        "system-ui",
        "ui-serif",
        "ui-sans-serif",
        "ui-monospace",
        "ui-rounded",
        "math",
        "emoji",
    }
)
_DARK = {
    "--ink": "#e6edf3",
    "--muted": "#9198a1",
    "--line": "#3d444d",
    "--bg": "#151b23",
    "--surface": "#0d1117",
    "--field-line": "#656c76",
    "--ok": "#3fb950",
    "--ok-bg": "#12261e",
    "--bad": "#ff7b72",
    "--bad-bg": "#2d1519",
    "--off-bg": "#262c36",
    "--warn-line": "#9e6a03",
    "--warn-bg": "#272115",
    "--info-bg": "#121d2f",
    "--accent": "#4493f8",
    "--focus": "#4493f8",
}


class ThemeError(ValueError):
    """A theme parameter that is not allowed; the message names it, its value and the fix."""


def read_theme(query: Mapping[str, str]) -> PortalTheme | None:
    """The theme a page's query string asks for (other parameters are not the theme's business)."""
    given = {name: query[name] for name in THEME_PARAMS if name in query}
    if not given:
        return None
    try:
        return PortalTheme.model_validate(given)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        name = str(first["loc"][0])
        shown = given[name][:60].encode("ascii", "backslashreplace").decode()
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ThemeError(f"theme parameter {name}={shown!r} is refused: {message}") from None


def theme_query(theme: PortalTheme | None) -> str:
    """`?accent=...&mode=...&font=...` of the values set ('' for none): what a portal link carries, and what
    the page hands on to its theme stylesheet."""
    values = {name: value for name, value in theme.model_dump().items() if value is not None} if theme else {}
    return "?" + urlencode(values) if values else ""


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _luminance(colour: str) -> float:
    """WCAG 2 relative luminance."""

    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def on_accent(accent: str) -> str:
    """White or near-black text on the accent, whichever has the higher contrast ratio."""
    lum = _luminance(accent)
    return "#ffffff" if (1.05 / (lum + 0.05)) >= ((lum + 0.05) / (_luminance("#1b1f24") + 0.05)) else "#1b1f24"


def _darker(colour: str) -> str:
    return "#" + "".join(f"{int(v * 0.85):02x}" for v in _rgb(colour))


def _font_stack(stack: str) -> str:
    return ", ".join(f if f.lower() in GENERIC_FONTS else f'"{f}"' for f in stack.split(", "))


def theme_css(theme: PortalTheme) -> str:
    variables: dict[str, str] = {}
    if theme.mode == "dark":
        variables.update(_DARK)
    accent = theme.accent or variables.get("--accent")
    if accent:
        variables.update({"--accent": accent, "--focus": accent, "--accent-hover": _darker(accent)})
        variables["--on-accent"] = on_accent(accent)
    if theme.font:
        variables["--font"] = _font_stack(theme.font)
    lines = [f"  {name}: {value};" for name, value in variables.items()]
    if theme.mode:
        lines.insert(0, f"  color-scheme: {theme.mode};")
    return ":root {\n" + "\n".join(lines) + "\n}\n"
