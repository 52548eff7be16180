"""HOOKFLEET_EGRESS_PROXY: its shape, what a CONNECT says, how a proxy's failure reads in the delivery log,
and the password kept out of every text (the tunnel itself is tested against squid in
tests/integration/test_egress_proxy.py)."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from delivery.egress_proxy import EgressProxy, ProxyError, ProxyRefused
from delivery.http1 import ConnectFailed
from delivery.outcome import classify_error
from hookfleet.settings import ApiSettings, DeliverySettings, DispatcherSettings
from schemas.models import Outcome

PASSWORD = "s3cr%40t"  # percent-escaped "s3cr@t"


def test_the_dispatcher_and_the_api_read_the_same_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKFLEET_EGRESS_PROXY", f"http://fleet:{PASSWORD}@squid.egress:3128")
    for role in (DispatcherSettings, ApiSettings):
        proxy = role().egress_proxy
        assert proxy is not None and proxy.get_secret_value().endswith("@squid.egress:3128")
    monkeypatch.setenv("HOOKFLEET_EGRESS_PROXY", "")
    assert DeliverySettings().egress_proxy is None  # empty means unset: deliveries go direct


@pytest.mark.parametrize(
    ("url", "wrong"),
    [
        (f"https://fleet:{PASSWORD}@squid:3128", "scheme 'https'"),
        (f"socks5://fleet:{PASSWORD}@squid:1080", "scheme 'socks5'"),
        (f"http://fleet:{PASSWORD}@squid", "no port"),
        (f"http://fleet:{PASSWORD}@squid:99999", "no port"),
        (f"http://fleet:{PASSWORD}@:3128", "no host"),
        (f"http://fleet:{PASSWORD}@squid:3128/path", "a path"),
        (f"http://fleet:{PASSWORD}@squid:0", "no port"),
        (f"http://fleet:{PASSWORD}@squid:70000", "no port"),
        (f"http://fleet:{PASSWORD}@squid\u2028egress:3128", "a host that is not ASCII"),
        (f"http://fleet:{PASSWORD}@squid egress:3128", "a host that is not a host name or IP address"),
        (f'http://fleet:{PASSWORD}@squid"egress:3128', "a host that is not a host name or IP address"),
        (f"http://fleet:{PASSWORD}@b\u00fccher.example:3128", "write an international name in its xn-- form"),
        (f"http://fleet:{PASSWORD}@{'a' * 100_000}:3128", "a host that is not a host name or IP address"),
        (f"http://fleet:{PASSWORD}@[::1:3128", "a host that cannot be read"),
    ],
)
def test_a_malformed_proxy_url_is_refused_naming_what_is_wrong_never_the_password(url: str, wrong: str) -> None:
    with pytest.raises(ValidationError) as refused:
        DeliverySettings(egress_proxy=url)
    text = str(refused.value)
    assert "HOOKFLEET_EGRESS_PROXY must be http://[user:password@]host:port" in text and wrong in text
    assert "s3cr" not in text


def test_the_settings_mask_the_proxy_url() -> None:
    settings = DeliverySettings(egress_proxy=f"http://fleet:{PASSWORD}@squid:3128")
    assert "s3cr" not in repr(settings) and "s3cr" not in str(settings)


def test_the_connect_names_the_address_and_carries_basic_credentials() -> None:
    proxy = EgressProxy.from_url(f"http://fleet:{PASSWORD}@squid.egress:3128")
    assert (proxy.host, proxy.port) == ("squid.egress", 3128)
    expected = "Basic " + base64.b64encode(b"fleet:s3cr@t").decode()
    head = "CONNECT 203.0.113.7:8443 HTTP/1.1\r\nHost: 203.0.113.7:8443\r\n"
    assert proxy.connect_request("203.0.113.7", 8443).decode() == f"{head}Proxy-Authorization: {expected}\r\n\r\n"
    assert "s3cr" not in repr(proxy) and expected not in repr(proxy)


def test_an_ipv6_address_is_bracketed_and_no_credentials_no_header() -> None:
    proxy = EgressProxy.from_url("http://10.0.0.5:3128")
    assert proxy.authorization is None
    request = proxy.connect_request("2001:db8::1", 443)
    assert request == b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"


@pytest.mark.parametrize(
    ("cause", "error"),
    [
        (ProxyRefused(403), "egress proxy refused CONNECT: 403"),
        (ProxyRefused(407), "egress proxy refused CONNECT: 407"),
        (ProxyError("egress proxy unreachable (connection refused)"), "egress proxy unreachable (connection refused)"),
    ],
)
def test_a_proxy_failure_is_a_retryable_connection_error_with_its_own_text(cause: ProxyError, error: str) -> None:
    wrapped = ConnectFailed(f"connect failed ({type(cause).__name__})")
    wrapped.__cause__ = cause
    assert classify_error(wrapped) == (Outcome.CONNECTION_ERROR, error)


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("http://fleet:s3cr%40t%3Ax@squid.egress:3128", b"s3cr@t:x"),  # percent-escaped @ and :
        ("http://fleet:s3cr@t:x@squid.egress:3128", b"s3cr@t:x"),  # raw: the last @ ends the credentials
        ("http://fleet@squid.egress:3128", b""),
        ("http://[2001:db8::1]:3128", None),
        ("http://squid_egress:3128", None),  # a container name
    ],
)
def test_credentials_raw_or_escaped_and_hosts_of_every_kind_are_read(url: str, password: bytes | None) -> None:
    proxy = EgressProxy.from_url(DeliverySettings(egress_proxy=url).egress_proxy.get_secret_value())  # type: ignore[union-attr]
    credentials = None if password is None else "Basic " + base64.b64encode(b"fleet:" + password).decode()
    assert proxy.port == 3128 and proxy.authorization == credentials
