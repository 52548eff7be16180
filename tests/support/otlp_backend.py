"""A real OTLP/HTTP trace backend for tests: receives what the SDK's exporter sends and answers queries.

The exporter under test speaks OTLP/HTTP with protobuf bodies (POST /v1/traces); this backend decodes them
with the OTLP protocol definitions themselves (opentelemetry-proto's ExportTraceServiceRequest) and answers
an ExportTraceServiceResponse, as a collector does. Anything else (another path, another content type, a
body that does not decode) is answered 4xx and kept in `rejected`, so a test can assert nothing was refused.
It runs in the test's own process: no binary to build or start.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class Span:
    service: str
    trace_id: str  # 32 hex digits, as in a traceparent header
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def decode(body: bytes) -> list[Span]:
    """The spans of one OTLP ExportTraceServiceRequest; raises DecodeError on a body that is not one."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        service=str(resource.get("service.name", "")),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                    )
                )
    return spans


class OtlpBackend:
    """OTLP/HTTP traces in on 127.0.0.1 (an ephemeral port); `trace(id)` answers a trace's spans by start."""

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self.rejected: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-backend", daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return sorted((s for s in self._spans if s.trace_id == trace_id), key=lambda s: s.start_ns)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval_s)
        return True

    def _accept(self, path: str, content_type: str, encoding: str, body: bytes) -> tuple[int, bytes]:
        if path != "/v1/traces":
            return self._reject(404, f"POST {path}: only /v1/traces is served")
        if content_type.split(";")[0].strip() != PROTOBUF:
            return self._reject(415, f"Content-Type {content_type!r}: expected {PROTOBUF}")
        try:
            spans = decode(gzip.decompress(body) if encoding == "gzip" else body)
        except (DecodeError, OSError) as exc:
            return self._reject(400, f"body of {len(body)} bytes is not an ExportTraceServiceRequest: {exc}")
        with self._lock:
            self._spans.extend(spans)
        return 200, ExportTraceServiceResponse().SerializeToString()

    def _reject(self, status: int, reason: str) -> tuple[int, bytes]:
        with self._lock:
            self.rejected.append(reason)
        return status, reason.encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, answer = backend._accept(
                    self.path, self.headers.get("Content-Type", ""), self.headers.get("Content-Encoding", ""), body
                )
                self.send_response(status)
                self.send_header("Content-Type", PROTOBUF if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads `rejected`, not stderr

        return Handler

    def start(self) -> OtlpBackend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
