"""The tracing hooks' pure parts: traceparent in Kafka headers, and nothing at all when tracing is off."""

from __future__ import annotations

import subprocess
import sys

from hookfleet import tracing

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_is_read_from_list_or_mapping_headers_the_last_one_winning() -> None:
    assert tracing.traceparent_of(None) is None
    assert tracing.traceparent_of([("x", b"1")]) is None
    assert tracing.traceparent_of([("traceparent", b"old"), ("x", b"1"), ("traceparent", PARENT.encode())]) == PARENT
    assert tracing.traceparent_of({"traceparent": PARENT}) == PARENT


def test_with_traceparent_replaces_the_old_one_and_keeps_the_other_headers() -> None:
    headers = tracing.with_traceparent([("hookfleet-reason", b"r"), ("traceparent", b"old")], PARENT)
    assert headers == [("hookfleet-reason", b"r"), ("traceparent", PARENT.encode())]
    assert tracing.with_traceparent(None, PARENT) == [("traceparent", PARENT.encode())]


def test_parse_traceparent_accepts_only_version_00_with_nonzero_ids() -> None:
    assert tracing.parse_traceparent(PARENT) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", True)
    assert tracing.parse_traceparent(PARENT[:-2] + "00") == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        False,
    )
    for bad in ("", "garbage", "01" + PARENT[2:], f"00-{'0' * 32}-00f067aa0ba902b7-01", PARENT.upper()):
        assert tracing.parse_traceparent(bad) is None, bad


def test_off_without_an_otlp_endpoint_the_sdk_is_never_imported_and_hooks_return_what_they_got() -> None:
    code = (
        "import sys; from hookfleet import tracing\n"
        "assert not tracing.ENABLED\n"
        "from delivery.deliverer import Deliverer\n"
        "assert not hasattr(Deliverer.deliver, '__wrapped__'), 'deliver is wrapped with tracing off'\n"
        "h = [('a', b'1')]\n"
        "assert tracing.inject(h) is h and tracing.current() is None and tracing.receiver_headers() == {}\n"
        "assert not tracing.setup('dispatcher')\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'opentelemetry imported'\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_on_the_current_span_is_injected_and_a_consumed_traceparent_resumed() -> None:
    code = (
        "from hookfleet import tracing\n"
        "assert tracing.ENABLED and tracing.setup('test')\n"
        f"P = {PARENT!r}\n"
        "class M:\n"
        "    def headers(self): return [('traceparent', P.encode())]\n"
        "    def topic(self): return 't'\n"
        "    def partition(self): return 0\n"
        "    def offset(self): return 7\n"
        "with tracing.consumed(M(), 'delivery'):\n"
        "    assert tracing.traceparent_of(tracing.inject(None)) == P\n"
        "with tracing.consumed(M(), 'fanout'):\n"
        "    child = tracing.traceparent_of(tracing.inject([('x', b'1')]))\n"
        "assert child.split('-')[1] == P.split('-')[1] and child.split('-')[2] != P.split('-')[2], child\n"
        "assert tracing.inject(None) is None\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
