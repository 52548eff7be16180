"""The pure rules of portal sessions and the embedded page: what a portal session may call, which origins
may frame the page, and which theme values may reach its CSS."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.auth import Caller, portal_refusal
from api.page import content_security_policy
from api.portal_theme import ThemeError, on_accent, read_theme, theme_css, theme_query
from hookfleet.settings import ApiSettings

KEY = Caller("acct_a", "key_1")
SESSION = Caller("acct_a", None, "ps_1")
READ_ONLY = Caller("acct_a", None, "ps_2", read_only=True)


@pytest.mark.parametrize(
    ("caller", "method", "path", "code"),
    [
        (KEY, "POST", "/v1/api-keys", None),
        (KEY, "POST", "/v1/portal-sessions", None),
        (SESSION, "POST", "/v1/webhooks", None),
        (SESSION, "DELETE", "/v1/webhooks/wh_1", None),
        (SESSION, "GET", "/v1/api-keys", "portal_session_not_allowed"),
        (SESSION, "DELETE", "/v1/api-keys/key_1", "portal_session_not_allowed"),
        (SESSION, "POST", "/v1/portal-sessions", "portal_session_not_allowed"),
        (SESSION, "GET", "/v1/portal-sessions", "portal_session_not_allowed"),
        (SESSION, "GET", "/v1/api-keys-and-more", None),  # a prefix of a path is not the path
        (READ_ONLY, "GET", "/v1/webhooks", None),
        (READ_ONLY, "HEAD", "/v1/webhooks", None),
        (READ_ONLY, "POST", "/v1/webhooks", "read_only_session"),
        (READ_ONLY, "PATCH", "/v1/account", "read_only_session"),
        (READ_ONLY, "PUT", "/v1/webhooks/wh_1", "read_only_session"),
        (READ_ONLY, "DELETE", "/v1/webhooks/wh_1", "read_only_session"),
        (READ_ONLY, "POST", "/v1/portal-sessions", "portal_session_not_allowed"),
    ],
)
def test_what_a_portal_session_may_call(caller: Caller, method: str, path: str, code: str | None) -> None:
    refusal = portal_refusal(caller, method, path)
    assert (refusal.code if refusal else None) == code
    if refusal is not None:
        assert refusal.status == 403 and path in refusal.message


def test_frame_ancestors_are_none_by_default_and_exactly_the_origins_given() -> None:
    assert "frame-ancestors 'none';" in content_security_policy(())
    settings = ApiSettings(
        portal_frame_ancestors="https://app.example.com  http://localhost:8000\thttps://b.example:8443"
    )
    assert settings.portal_frame_ancestors == (
        "https://app.example.com",
        "http://localhost:8000",
        "https://b.example:8443",
    )
    csp = content_security_policy(settings.portal_frame_ancestors)
    assert "frame-ancestors https://app.example.com http://localhost:8000 https://b.example:8443;" in csp
    assert ApiSettings().portal_frame_ancestors == ()


@pytest.mark.parametrize(
    "origin",
    [
        "app.example.com",  # no scheme
        "https://app.example.com/",  # a path
        "https://app.example.com/embed",
        "https://*.example.com",  # wildcard
        "https://app.example.com;script-src",  # another directive
        "'self'",
        "'unsafe-inline'",
        "http://app.example.com",  # http outside loopback
        "https://user@app.example.com",
        "https://app.example.com?x=1",
        "javascript://x",
        "https://app.example.com:99999",
        "data:",
        "https://app.example.com:0",
        "https://-app.example.com",
        "https://app..example.com",
        "https://b\u00fccher.example",
        "https://app.example.com:",
        "https://" + "a" * 10_000 + ".example",
    ],
)
def test_a_frame_ancestor_that_is_not_an_exact_origin_stops_the_settings(origin: str) -> None:
    with pytest.raises(ValidationError, match="HOOKFLEET_PORTAL_FRAME_ANCESTORS"):
        ApiSettings(portal_frame_ancestors=f"https://ok.example {origin}")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("https://hooks.example.com:0", "has port 0; write a port of 1-65535, or none"),
        ("https://b\u00fccher.example", "write an international name in its xn-- form"),
        ("https://hooks\u2028.example.com", "has a host that is not ASCII"),
        ("https://hooks.example.com\u2028/x", "has a host that is not ASCII"),
        ("https://ops:s3cret@hooks.example.com", "'https://****@hooks.example.com' is not an origin"),
        ("https://ops:s3c@ret@hooks.example.com", "'https://****@hooks.example.com' is not an origin"),
    ],
)
def test_a_public_url_is_refused_naming_the_setting_and_the_problem_never_a_password(value: str, problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ApiSettings(public_url=value)
    assert "HOOKFLEET_PUBLIC_URL" in str(refused.value) and problem in str(refused.value)
    assert "s3c" not in str(refused.value)


def test_the_public_url_is_an_origin() -> None:
    assert ApiSettings(public_url="https://hooks.example.com/").public_url == "https://hooks.example.com"
    assert ApiSettings(public_url="").public_url is None
    with pytest.raises(ValidationError, match="HOOKFLEET_PUBLIC_URL"):
        ApiSettings(public_url="https://hooks.example.com/base")


def test_a_theme_becomes_css_variables_only() -> None:
    theme = read_theme({"accent": "#7C3AED", "mode": "dark", "font": "Inter , system-ui,sans-serif", "utm": "x"})
    assert theme is not None
    assert theme_query(theme) == "?accent=%237C3AED&mode=dark&font=Inter%2C+system-ui%2C+sans-serif"
    css = theme_css(theme)
    assert "  --accent: #7C3AED;\n" in css
    assert '  --font: "Inter", system-ui, sans-serif;\n' in css
    assert "  color-scheme: dark;\n" in css and "  --surface: #0d1117;\n" in css
    assert css.startswith(":root {\n") and css.count("{") == 1 and css.count("}") == 1
    assert read_theme({"utm": "x"}) is None
    assert theme_query(None) == ""


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"accent": "red"}, "accent"),
        ({"accent": "#fff"}, "accent"),
        ({"accent": "#ffffff;}body{display:none"}, "accent"),
        ({"accent": "#ffffff\n"}, "accent"),
        ({"font": "Inter\nx"}, "font"),
        ({"mode": "auto"}, "mode"),
        ({"font": 'Inter"; } * { color: red'}, "font"),
        ({"font": "Inter\\22"}, "font"),
        ({"font": "url(x)"}, "font"),
        ({"font": ",".join(["a"] * 9)}, "font"),
        ({"font": ""}, "font"),
    ],
)
def test_a_theme_value_outside_its_allowed_set_is_refused_naming_it(query: dict[str, str], name: str) -> None:
    with pytest.raises(ThemeError, match=rf"^theme parameter {name}="):
        read_theme(query)


def test_text_on_the_accent_is_whichever_of_black_and_white_contrasts_more() -> None:
    assert on_accent("#0b5cad") == "#ffffff"
    assert on_accent("#ffd33d") == "#1b1f24"
    assert on_accent("#000000") == "#ffffff"
