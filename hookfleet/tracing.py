"""OpenTelemetry tracing: one trace per event, from `EventPublisher.publish` to the delivery log.

The W3C `traceparent` travels in each Kafka message's headers: the publisher's span -> the fan-out span
(webhooks.events) -> each delivery task (webhooks.deliveries) -> one span per delivery attempt -> the
attempt record (webhooks.attempts, a `record` span when the recorder has written it) and, on failure, the
retry task in its delay topic, which the retry scheduler hands back with its headers unchanged, so the
next attempt joins the same trace. An event published without a `traceparent` gets a new root at fan-out.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, read once at
import: then the OpenTelemetry SDK is never imported, `attempt_span` returns the function it decorates
unchanged, and every other hook returns on its first line. When set, spans are exported in batches over
OTLP/HTTP (protobuf) with the standard SDK variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_EXPORTER_OTLP_HEADERS...).

The pure helpers (`traceparent_of`, `with_traceparent`, `parse_traceparent`) are what the Kafka side
needs; the context ones keep the span of the message being handled current (a contextvar), so any
message produced meanwhile carries it (`inject`, called by hookfleet.kafka's producer).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from confluent_kafka import Message

TRACEPARENT = "traceparent"
_TRACEPARENT_SHAPE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

ENABLED = bool(
    (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true"
)

_state: dict[str, Any] = {"tracer": None, "receivers": False}
_NO_HEADERS: dict[str, str] = {}
_NULL = contextlib.nullcontext()

HeaderList = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


# ------------------------------------------------------------------------------------------ pure helpers


def parse_traceparent(value: str | None) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) of a W3C traceparent (version 00), or None if malformed."""
    if not value:
        return None
    match = _TRACEPARENT_SHAPE.match(value.strip())
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2), bool(int(match.group(3), 16) & 1)


def traceparent_of(headers: HeaderList | None) -> str | None:
    """The `traceparent` among Kafka message headers (the last one wins), decoded."""
    found = None
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name == TRACEPARENT and value is not None:
            found = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return found


def with_traceparent(headers: HeaderList | None, traceparent: str) -> list[tuple[str, bytes | str | None]]:
    """`headers` with `traceparent` set to this value (any previous one replaced, the others kept)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    kept = [(name, value) for name, value in pairs if name != TRACEPARENT]
    return [*kept, (TRACEPARENT, traceparent.encode("ascii"))]


# ------------------------------------------------------------------------------------------- set-up


def setup(role: str, send_to_receivers: bool = False) -> bool:
    """Install the OTLP exporter for this process (once per process; a forked child calls it again).
    Returns whether tracing is on."""
    if not ENABLED:
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": f"hookfleet-{role}"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _state["provider"] = provider
    _state["tracer"] = provider.get_tracer("hookfleet")
    _state["receivers"] = send_to_receivers
    return True


def _tracer() -> Any:
    tracer = _state["tracer"]
    if tracer is None:  # a library user (EventPublisher) that never called setup: use its global provider
        from opentelemetry import trace

        tracer = _state["tracer"] = trace.get_tracer("hookfleet")
    return tracer


def _extract(headers: HeaderList | None) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    value = traceparent_of(headers)
    return TraceContextTextMapPropagator().extract({TRACEPARENT: value} if value else {})


# ------------------------------------------------------------------------------------ context hooks


def inject(headers: HeaderList | None) -> Any:
    """`headers` plus the current span's traceparent (hookfleet.kafka's producer, on every message)."""
    if not ENABLED:
        return headers
    from opentelemetry.trace import get_current_span

    span_context = get_current_span().get_span_context()
    if not span_context.is_valid:
        return headers
    value = f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"
    return with_traceparent(headers, value)


@contextlib.contextmanager
def _span(name: str, parent: Any, kind: str, attributes: dict[str, Any]) -> Iterator[None]:
    from opentelemetry import context, trace

    span = _tracer().start_span(name, context=parent, kind=getattr(trace.SpanKind, kind), attributes=attributes)
    token = context.attach(trace.set_span_in_context(span, parent))
    try:
        yield
    finally:
        context.detach(token)
        span.end()


def publishing(topic: str, event_id: str, event_type: str) -> contextlib.AbstractContextManager[None]:
    """The `publish` span (child of the caller's current span, if any), current while the event is produced."""
    if not ENABLED:
        return _NULL
    from opentelemetry import context

    attributes = {"messaging.system": "kafka", "messaging.destination.name": topic,
                  "hookfleet.event_id": event_id, "hookfleet.event_type": event_type}  # fmt: skip
    return _span("publish", context.get_current(), "PRODUCER", attributes)


@contextlib.contextmanager
def _resumed(parent: Any) -> Iterator[None]:
    from opentelemetry import context

    token = context.attach(parent)
    try:
        yield
    finally:
        context.detach(token)


def consumed(message: Message, stage: str) -> contextlib.AbstractContextManager[None]:
    """While the dispatcher handles one consumed message: at fan-out a `fanout` span (a new root when the
    event came without a traceparent); at delivery the task's own context, captured by the job."""
    if not ENABLED:
        return _NULL
    parent = _extract(message.headers())
    if stage != "fanout":
        return _resumed(parent)
    attributes = {"messaging.system": "kafka", "messaging.destination.name": message.topic() or "",
                  "messaging.kafka.partition": message.partition() or 0,
                  "messaging.kafka.offset": message.offset() or 0}  # fmt: skip
    return _span("fanout", parent, "CONSUMER", attributes)


def current() -> Any:
    """The current trace context, for work that starts later in another task (a queued delivery)."""
    if not ENABLED:
        return None
    from opentelemetry import context

    return context.get_current()


def adopt(saved: Any) -> None:
    """Make `saved` (from `current`) current for the rest of this asyncio task; a task's context ends with
    it, so nothing needs undoing."""
    if saved is None:
        return
    from opentelemetry import context

    context.attach(saved)


def receiver_headers() -> dict[str, str]:
    """`traceparent` for the HTTP request to a receiver, when HOOKFLEET_TRACE_RECEIVERS is on."""
    if not ENABLED or not _state["receivers"]:
        return _NO_HEADERS
    carried = traceparent_of(inject(None))
    return {TRACEPARENT: carried} if carried else _NO_HEADERS


def attempt_span(deliver: F) -> F:
    """One `deliver` span per attempt, with webhook id, event type, attempt, outcome, status and duration.
    The span stays current for the rest of the calling task, so the attempt's record and its retry task
    are its children. Tracing off: the function itself, unwrapped."""
    if not ENABLED:
        return deliver

    @functools.wraps(deliver)
    async def traced(self: Any, endpoint: Any, event: Any, attempt: int, *args: Any, **kwargs: Any) -> Any:
        from opentelemetry import context, trace

        attributes = {"hookfleet.webhook_id": endpoint.id, "hookfleet.event_id": event.id,
                      "hookfleet.event_type": event.type.value, "hookfleet.attempt": attempt}  # fmt: skip
        span = _tracer().start_span("deliver", kind=trace.SpanKind.CLIENT, attributes=attributes)
        context.attach(trace.set_span_in_context(span))
        started = time.monotonic()
        try:
            result = await deliver(self, endpoint, event, attempt, *args, **kwargs)
        except BaseException as exc:
            span.record_exception(exc)
            span.end()
            raise
        span.set_attribute("hookfleet.outcome", result.outcome.value)
        span.set_attribute("hookfleet.duration_ms", round((time.monotonic() - started) * 1000, 3))
        if result.status_code is not None:
            span.set_attribute("http.response.status_code", result.status_code)
        if not result.ok:
            span.set_status(trace.Status(trace.StatusCode.ERROR, result.error or result.outcome.value))
        span.end()
        return result

    return traced  # type: ignore[return-value]


class RecordSpans:
    """`record` spans of the recorder: opened when an attempt record is consumed, closed when its batch is
    committed to PostgreSQL."""

    def __init__(self) -> None:
        self._open: list[Any] = []

    def take(self, message: Message) -> None:
        if not ENABLED:
            return
        attributes = {
            "messaging.destination.name": message.topic() or "",
            "messaging.kafka.offset": message.offset() or 0,
        }
        span = _tracer().start_span("record", context=_extract(message.headers()), attributes=attributes)
        self._open.append(span)

    def committed(self) -> None:
        if not self._open:
            return
        for span in self._open:
            span.end()
        self._open = []
