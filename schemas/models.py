"""Pydantic models of every message on the wire (docs/architecture.md#wire-contract, docs/architecture.md#topics).

Validation is strict and closed (`extra="forbid"`): a producer bug surfaces as a validation error that
names the field, and the dispatcher routes that message to the invalid topic instead of guessing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, field_validator

from schemas.catalog import EventType
from schemas.retry_schedule import MAX_ATTEMPTS

EventId = Annotated[str, Field(pattern=r"^evt_[0-9A-Za-z]{1,64}$", examples=["evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W"])]
AccountId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$", examples=["acct_42"])]
ReplayId = Annotated[str, Field(pattern=r"^rpl_[0-9A-Za-z]{1,64}$", examples=["rpl_01JD8Z6Q3K4M5N6P7R8S9T0V1W"])]
WebhookId = Annotated[str, Field(pattern=r"^wh_[0-9A-Za-z]{1,64}$", examples=["wh_01JD8Z6Q3K4M5N6P7R8S9T0V1W"])]


def _utc_ms(value: datetime) -> datetime:
    """Normalise to UTC with millisecond precision so serialise -> parse is exact."""
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def format_rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Event(_Wire):
    """A product event, and the exact JSON body of every delivery of it."""

    id: EventId
    type: EventType
    created_at: AwareDatetime
    account_id: AccountId
    data: dict[str, Any]

    _utc = field_validator("created_at")(staticmethod(_utc_ms))

    @field_serializer("created_at")
    def _ser_created_at(self, value: datetime) -> str:
        return format_rfc3339(value)

    def body(self) -> bytes:
        """The delivery body: these bytes are signed and these bytes are sent."""
        return self.model_dump_json().encode()


class DeliveryTask(_Wire):
    """One event for one webhook, waiting for its next attempt (deliveries, delay and dead topics)."""

    event: Event
    webhook_id: WebhookId
    attempt: int = Field(ge=1, le=MAX_ATTEMPTS, description="the attempt this task will make (dead: the last one made)")
    due_at: int = Field(ge=0, description="epoch milliseconds when the attempt may run")
    parked: bool = Field(default=False, description="deferred because the endpoint was saturated; not an attempt")
    last_error: str | None = Field(default=None, max_length=200, description="outcome of the previous attempt")
    replay_id: ReplayId | None = Field(default=None, description="the replay that re-enqueued this event, if any")


class Outcome(StrEnum):
    SUCCESS = "success"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"
    BLOCKED = "blocked"
    DROPPED = "dropped"


NextStep = Literal["done", "retry", "dead", "dropped", "disabled"]
"""What followed an attempt; "disabled": the receiver answered 410 Gone and the webhook was switched off."""


class AttemptRecord(_Wire):
    """One delivery attempt: the row of the customer's delivery log."""

    attempt_id: Annotated[str, Field(pattern=r"^att_[0-9A-Za-z]{1,64}$")]
    event_id: EventId
    event_type: EventType
    account_id: AccountId
    webhook_id: WebhookId
    attempt: int = Field(ge=1, le=MAX_ATTEMPTS)
    outcome: Outcome
    status_code: int | None = Field(default=None, ge=100, le=599)
    error: str | None = Field(default=None, max_length=200, description="timeout / error kind, never a secret")
    response_ms: int | None = Field(default=None, ge=0)
    response_excerpt: str = Field(default="", max_length=512)
    attempted_at: AwareDatetime
    next_step: NextStep
    test: bool = False
    replay_id: ReplayId | None = Field(default=None, description="the replay this attempt belongs to, if any")
    event: Event | None = Field(
        default=None, description="the event delivered, so a row of the log can be redelivered later"
    )

    _utc = field_validator("attempted_at")(staticmethod(_utc_ms))

    @field_serializer("attempted_at")
    def _ser_attempted_at(self, value: datetime) -> str:
        return format_rfc3339(value)


def has_userinfo(url: str) -> bool:
    """True when the URL's authority has a userinfo part (`user:pass@`, `user@`, or an empty `@`): the one
    rule, used at registration and at every delivery, so a URL that registers can be delivered to."""
    return "@" in urlsplit(url).netloc


def validate_https_url(url: str) -> str:
    """Webhook URLs must be absolute https with a host; the error names the value and the fix."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError(f"webhook url must be https (got {url[:100]})")
    if not parts.hostname:
        raise ValueError(f"webhook url has no host (got {url[:100]})")
    if has_userinfo(url):
        raise ValueError(
            "webhook url must not carry credentials or an '@' before the host (user:password@, even empty);"
            " remove them and send credentials as a custom header such as Authorization"
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError(f"webhook url has an invalid port (got {url[:100]})") from None
    return url


def validate_event_list(events: list[EventType]) -> list[EventType]:
    if not events:
        raise ValueError("events must name at least one event type")
    return sorted(set(events))


class Webhook(_Wire):
    """A customer's webhook as stored and shown (the secret is never part of this view)."""

    id: WebhookId
    account_id: AccountId
    name: Annotated[str, Field(min_length=1, max_length=100)]
    url: Annotated[str, Field(max_length=2048)]
    events: list[EventType]
    active: bool
    status: Literal["healthy", "failing"]
    status_changed_at: AwareDatetime
    created_at: AwareDatetime
    updated_at: AwareDatetime

    _url = field_validator("url")(staticmethod(validate_https_url))
    _events = field_validator("events")(staticmethod(validate_event_list))


EVENT_SCHEMA_PATH = "docs/schemas/webhooks.events.schema.json"
"""The committed JSON Schema of a `webhooks.events` value, for publishers in any language
(tests/unit/test_event_schema_file.py keeps it current)."""


def published_event_schema() -> dict[str, Any]:
    """What the fan-out accepts on `webhooks.events` (validation mode: `created_at` is an RFC 3339 date-time
    with an offset). The operational types in the enum are hookfleet's own: product services never publish them."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **Event.model_json_schema(mode="validation"),
    }
