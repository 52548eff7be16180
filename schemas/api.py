"""Request and response bodies of the management API (`/v1`).

The OpenAPI document (`/v1/openapi.json`) is generated from these models, and the API validates every
request with them, so the document and the server cannot drift apart. Request bodies are strict and
closed: an unknown field or a wrong JSON type is a 422 that names the field.
"""

from __future__ import annotations

import re
from email.headerregistry import Address
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from schemas.catalog import EventType, Kind
from schemas.event_filter import MAX_FILTER_LENGTH, check_filter
from schemas.free_text import FREE_TEXT_PATTERN, REFUSED_CLASS, check_free_text
from schemas.models import EventId, NextStep, Outcome, format_rfc3339, validate_event_list, validate_https_url

Timestamp = Annotated[
    AwareDatetime,
    PlainSerializer(format_rfc3339, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2026-11-27T10:15:03.000Z"]}),
]
"""An RFC 3339 UTC time with milliseconds, the same shape as the wire models use."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _https_url(value: str) -> str:
    """URL schemes are case-insensitive (RFC 3986 §3.1): `HTTPS://` is stored as `https://`."""
    if _CONTROL.search(value) or " " in value:
        raise ValueError("webhook url must not contain spaces or control characters; percent-encode them")
    scheme, sep, rest = value.partition("://")
    if sep and scheme.lower() == "https":
        value = "https://" + rest
    return validate_https_url(value)


WebhookName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        description="descriptive name, 1-100 characters, no line breaks, control or invisible (format) characters",
        examples=["CRM Sync"],
        json_schema_extra={"pattern": f"^[^{REFUSED_CLASS}]+$"},
    ),
    AfterValidator(check_free_text),
]
WebhookUrl = Annotated[
    str,
    Field(
        max_length=2048,
        description="https URL of the receiver; its host must resolve to a public address",
        examples=["https://crm.example.com/hooks/hookfleet"],
        json_schema_extra={"pattern": r"^[Hh][Tt][Tt][Pp][Ss]://[^\x00-\x20\x7f]+$"},
    ),
    AfterValidator(_https_url),
]
EventList = Annotated[
    list[EventType],
    Field(min_length=1, max_length=64, description="event types to receive (the catalog's types only)"),
    AfterValidator(validate_event_list),
]


# The one list of header names a webhook's own headers may not use: those hookfleet sets (signatures,
# Content-Type, Host, User-Agent), and every hop-by-hop or framing header (RFC 9110 §7.6.1, RFC 9112 §6),
# which would change how the request is framed or what the connection does (Transfer-Encoding beside our
# Content-Length is request smuggling; Upgrade, Expect and Connection change the exchange itself).
_RESERVED_PREFIXES_SHOWN = ("X-Webhook-", "webhook-", "Proxy-")
_RESERVED_NAMES_SHOWN = (
    "Content-Type",
    "Host",
    "Content-Length",
    "User-Agent",
    "Transfer-Encoding",
    "Connection",
    "Keep-Alive",
    "Upgrade",
    "Expect",
    "TE",
    "Trailer",
)
RESERVED_HEADER_PREFIXES = tuple(p.lower() for p in _RESERVED_PREFIXES_SHOWN)
RESERVED_HEADERS = frozenset(n.lower() for n in _RESERVED_NAMES_SHOWN)
RESERVED_HEADERS_SHOWN = ", ".join([f"{p}*" for p in _RESERVED_PREFIXES_SHOWN] + list(_RESERVED_NAMES_SHOWN))


def is_reserved_header(name: str) -> bool:
    """True for a name a webhook's own headers may not set (any letter case)."""
    lower = name.lower()
    return lower in RESERVED_HEADERS or lower.startswith(RESERVED_HEADER_PREFIXES)


MAX_CUSTOM_HEADERS = 20
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")  # an HTTP token (RFC 9110 §5.1)
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")  # what every HTTP stack sends unchanged


def _custom_headers(value: dict[str, str]) -> dict[str, str]:
    """Names are HTTP tokens, not reserved ones (`is_reserved_header`); values one line."""
    if len(value) > MAX_CUSTOM_HEADERS:
        raise ValueError(f"at most {MAX_CUSTOM_HEADERS} custom headers (got {len(value)})")
    seen: set[str] = set()
    for name, header_value in value.items():
        lower = name.lower()
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"header name {name[:100]!r} is not a valid HTTP header name")
        if is_reserved_header(name):
            raise ValueError(
                f"header {name} is reserved: hookfleet sets it, or it controls the connection or the request's"
                f" framing; remove it (reserved: {RESERVED_HEADERS_SHOWN})"
            )
        if lower in seen:
            raise ValueError(f"header {name} is given twice (names are case-insensitive)")
        seen.add(lower)
        if len(header_value) > 2048 or not _HEADER_VALUE.fullmatch(header_value):
            raise ValueError(f"header {name}: value must be one line of printable ASCII, at most 2048 characters")
    return value


def _any_case(word: str) -> str:
    """A JSON Schema (ECMA 262) pattern for `word` in any letter case: that dialect has no `(?i)`."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)  # letters and "-" only


_RESERVED_PATTERN = (
    "^(?:"
    + "|".join(
        [_any_case(p) for p in RESERVED_HEADER_PREFIXES] + [_any_case(n) + "$" for n in sorted(RESERVED_HEADERS)]
    )
    + ")"
)

CustomHeaders = Annotated[
    dict[str, str],
    Field(
        description="extra request headers sent with every delivery (e.g. `Authorization` for a gateway);"
        f" stored encrypted, shown masked. Reserved: {RESERVED_HEADERS_SHOWN}",
        examples=[{"Authorization": "Bearer 8f1c..."}],
        json_schema_extra={
            "maxProperties": MAX_CUSTOM_HEADERS,
            "propertyNames": {"pattern": _HEADER_NAME.pattern, "not": {"pattern": _RESERVED_PATTERN}},
            "additionalProperties": {"type": "string", "maxLength": 2048, "pattern": _HEADER_VALUE.pattern},
        },
    ),
    AfterValidator(_custom_headers),
]

DisabledReason = Literal["gone", "failing", "manual"]

AsymmetricSigning = Annotated[
    bool,
    Field(
        description="true: every delivery also carries a Standard Webhooks `v1a` Ed25519 signature in"
        " `webhook-signature`, verified with the webhook's `public_key`; false (default) removes the key."
        " The HMAC signatures are sent either way",
    ),
]

RateLimit = Annotated[
    int,
    Field(
        ge=1,
        le=10_000,
        description="deliveries per second at most, exact across the fleet (one dispatcher owns the webhook)",
        examples=[50],
    ),
]
Ordering = Annotated[
    Literal["unordered", "fifo"],
    Field(
        description="fifo: events arrive in publish order, and while one is retrying the later ones wait "
        "(up to 6 min 10 s behind a failing event); unordered (default): no waiting, retries may overtake",
    ),
]


PREVIEW_MAX_EVENTS = 10_000
"""The preview's scan bound per page: at ~25 us per event (parse and evaluate) about a quarter second."""
PREVIEW_TIME_BOUND_S = 2.0
"""The preview's time bound per page: a page stops reading after it, however few events it has read."""
PREVIEW_SAMPLES = 3


def _saved_filter(value: str) -> str:
    """`""` means no filter (how an update removes one); anything else must compile."""
    return value if value == "" else check_filter(value)


FilterText = Annotated[
    str,
    Field(
        description="a CEL expression over the event's `type`, `account_id` and `data`: only events for which it is"
        " true are delivered (after the event-type match); an event it cannot be evaluated on (a missing field, a"
        f" type mismatch) is not delivered. At most {MAX_FILTER_LENGTH} characters and one of all(), exists(),"
        " exists_one(), map(), filter(), whose body is at most 100 characters and reads only its element, type"
        " and account_id; matches() and contains() take a string literal (matches() at most 4 times); no control,"
        ' format or separator character (write one in a string as an escape, `"\\u2028"`). `""` or null: no filter',
        examples=['data.amount >= 1000 && data.currency == "eur"'],
        json_schema_extra={"maxLength": MAX_FILTER_LENGTH},
    ),
    AfterValidator(_saved_filter),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


# ------------------------------------------------------------------------------------------ webhooks


_REDRIVE_ON_RECOVERY = (
    "true: when the webhook succeeds again after failing, its dead letters since it began failing are sent again"
    " automatically, once, oldest first, at HOOKFLEET_RECOVERY_REDRIVE_RATE per second (in order for fifo)"
)


class WebhookCreate(_Request):
    name: WebhookName
    url: WebhookUrl
    events: EventList
    active: bool = True
    rate_limit_per_s: RateLimit | None = None
    ordering: Ordering = "unordered"
    headers: CustomHeaders | None = None
    asymmetric_signing: AsymmetricSigning = False
    filter: FilterText | None = None
    redrive_on_recovery: bool = Field(default=False, description=_REDRIVE_ON_RECOVERY)


class WebhookUpdate(_Request):
    """Only the fields present change; `null` leaves a field as it is."""

    name: WebhookName | None = None
    url: WebhookUrl | None = None
    events: EventList | None = None
    active: bool | None = Field(
        default=None, description="false switches the webhook off by hand; true switches it on and clears the reason"
    )
    rate_limit_per_s: Annotated[int, Field(ge=0, le=10_000, description="0 removes the limit")] | None = None
    ordering: Ordering | None = None
    headers: CustomHeaders | None = Field(default=None, description="replaces the whole map; `{}` removes them all")
    asymmetric_signing: AsymmetricSigning | None = None
    filter: FilterText | None = Field(default=None, description='replaces the filter; `""` removes it')
    redrive_on_recovery: bool | None = Field(default=None, description=_REDRIVE_ON_RECOVERY)


class WebhookView(_Response):
    id: str = Field(examples=["wh_01JD8Z6Q3K4M5N6P7R8S9T0V1W"])
    name: str
    url: str
    events: list[EventType]
    active: bool
    rate_limit_per_s: int | None = Field(default=None, description="null: no limit")
    ordering: Literal["unordered", "fifo"] = "unordered"
    redrive_on_recovery: bool = Field(default=False, description=_REDRIVE_ON_RECOVERY)
    status: Literal["healthy", "failing"]
    status_changed_at: Timestamp
    disabled_reason: DisabledReason | None = Field(
        default=None,
        description="why it is off: `gone` (the receiver answered 410), `failing` (failed for too long,"
        " HOOKFLEET_DISABLE_AFTER), `manual` (switched off by hand); null while active",
    )
    disabled_at: Timestamp | None = Field(default=None, description="when it was switched off; null while active")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="custom header names, values masked (`****` + last 4 characters of long values)",
        examples=[{"Authorization": "****c0de"}],
    )
    secret: str = Field(
        description="masked (`whsec_****` + its last 4 characters); shown in full on create and rotate, and by"
        " `GET /v1/webhooks/{id}/secret`",
        examples=["whsec_****Zw8="],
    )
    previous_secret_expires_at: Timestamp | None = Field(
        default=None, description="while set, the secret before the last rotation also signs every delivery"
    )
    asymmetric_signing: bool = Field(default=False, description="deliveries carry a `v1a` Ed25519 signature too")
    public_key: str | None = Field(
        default=None,
        description="the Ed25519 public key that verifies the `v1a` signatures (`whpk_` + base64 of its 32 bytes);"
        " null while asymmetric signing is off. The private key never leaves the server",
        examples=["whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
    )
    previous_public_key: str | None = Field(
        default=None, description="while set, the key before the last signing-key rotation also signs (`v1a`)"
    )
    previous_public_key_expires_at: Timestamp | None = Field(
        default=None, description="when the previous key stops signing; null outside a rotation's overlap"
    )
    created_at: Timestamp
    updated_at: Timestamp
    filter: str | None = Field(default=None, description="the CEL filter; null: every event of the subscribed types")


class WebhookWithSecret(WebhookView):
    secret: str = Field(
        description="the signing secret in full; store it now (`GET /v1/webhooks/{id}/secret` reveals it again)",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookList(_Response):
    data: list[WebhookView]


# ------------------------------------------------------------------------------------------ test, logs


class TestRequest(_Request):
    __test__ = False  # not a pytest class

    event_type: EventType | None = Field(
        default=None, description="catalog type whose sample is sent; default: the webhook's first event type"
    )


class TestResult(_Response):
    __test__ = False

    ok: bool = Field(description="true when the receiver answered 2xx")
    attempt_id: str
    event_id: str
    event_type: EventType
    outcome: Outcome
    status_code: int | None = Field(description="HTTP status, or null on timeout / connection / TLS error")
    error: str | None = Field(description="why it failed: http status, timeout, or the error kind")
    response_ms: int
    response_excerpt: str = Field(description="the first bytes of the response body")
    attempted_at: Timestamp


class Delivery(_Response):
    """One row of the delivery log."""

    attempt_id: str
    event_id: str
    event_type: EventType
    attempt: int = Field(ge=1)
    outcome: Outcome
    status_code: int | None
    error: str | None
    response_ms: int | None
    response_excerpt: str
    attempted_at: Timestamp
    next_step: NextStep = Field(
        description="what followed: done, retry, dead (dead-lettered), dropped, or disabled (410 Gone switched the"
        " webhook off)"
    )
    test: bool = Field(description="sent by the Test action")
    replay: str | None = Field(default=None, description="the replay (rpl_...) that sent this attempt, if any")


class DeliveryQuery(BaseModel):
    """Query string of the delivery log (strings from the URL, so not strict)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: EventType | None = None
    outcome: Outcome | None = None
    since: AwareDatetime | None = Field(default=None, description="only attempts at or after this time")
    cursor: str | None = Field(
        default=None, max_length=200, pattern=r"^[A-Za-z0-9_-]+$", description="`next_cursor` of the previous page"
    )
    limit: int = Field(default=50, ge=1, le=100)


class DeliveryPage(_Response):
    data: list[Delivery] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null on the last page")


class DeliverySearchQuery(DeliveryQuery):
    """Query string of the account's whole delivery log (`GET /v1/deliveries`): a webhook's filters and more."""

    event_id: EventId | None = Field(default=None, description="only the attempts of this event")
    status: int | None = Field(default=None, ge=100, le=599, description="only attempts answered with this HTTP status")
    until: AwareDatetime | None = Field(default=None, description="only attempts before this time")


class AccountDelivery(Delivery):
    """One row of the account's delivery log: a webhook's row and the webhook it went to."""

    webhook_id: str


class AccountDeliveryPage(_Response):
    data: list[AccountDelivery] = Field(description="newest first, every webhook of the account")
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null on the last page")


class EventDeadLetter(_Response):
    dead_at: Timestamp = Field(description="when its last attempt failed")
    last_error: str | None
    redriven_at: Timestamp | None = Field(description="when it was queued again (Recover); null: it was not")


class EventReplay(_Response):
    replay_id: str = Field(examples=["rpl_01JD8Z6Q3K4M5N6P7R8S9T0V1W"])
    created_at: Timestamp = Field(description="when the replay was started")
    queued_at: Timestamp | None = Field(description="when the replay queued this event; null: not yet")


DeliveryState = Literal["delivered", "pending", "dead_lettered", "disabled", "dropped", "failed"]


class EventWebhookDeliveries(_Response):
    """What became of one event at one webhook."""

    webhook_id: str
    webhook_name: str | None = Field(description="null when the webhook was deleted since")
    state: DeliveryState = Field(
        description="delivered: a 2xx was logged; pending: a retry, a redrive or a replay is coming; dead_lettered:"
        " its last attempt failed and it waits for Recover; disabled: the receiver answered 410 Gone and the webhook"
        " was switched off; dropped: the webhook was deleted, switched off or unsubscribed before an attempt;"
        " failed: the last attempt failed and nothing more is coming (e.g. a failed Test)"
    )
    attempts: list[Delivery] = Field(description="every logged attempt, oldest first (retries, redeliveries, replays)")
    dead_letter: EventDeadLetter | None
    replays: list[EventReplay] = Field(description="replays that selected this event, oldest first")


class EventView(_Response):
    """Where one event went: its payload while retained and every webhook it was sent to, attempt by attempt."""

    event_id: str
    event_type: EventType
    created_at: Timestamp | None = Field(description="when it was published; null once its payload is gone")
    payload: dict[str, Any] | None = Field(
        description="the event as its webhooks received it (the delivery body); null once past the retention"
    )
    webhooks: list[EventWebhookDeliveries] = Field(description="every webhook that logged an attempt of it, by id")
    truncated: bool = Field(
        default=False, description="true when the event has more attempts than one answer holds (2,000)"
    )


class RedeliverResult(_Response):
    status: Literal["queued"]
    attempt_id: str = Field(description="the log row that was redelivered")
    event_id: str
    webhook_id: str


class RecoverRequest(_Request):
    since: Timestamp | None = Field(default=None, description="only dead letters from this time on; null: all")


class RecoverResult(_Response):
    webhook_id: str
    redriven: int = Field(ge=0, description="dead-lettered deliveries queued again as a fresh attempt 1")


class WebhookSecret(_Response):
    """The signing secret in full, revealed to the account on request (it is stored encrypted, not hashed)."""

    webhook_id: str
    secret: str = Field(description="the current signing secret", examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    previous_secret_expires_at: Timestamp | None = Field(
        default=None, description="while set, the secret before the last rotation also signs every delivery"
    )


StatsWindow = Literal["24h", "7d"]


class StatsQuery(BaseModel):
    """Query string of the health stats (strings from the URL, so not strict)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: StatsWindow = Field(default="24h", description="the last 24 hours or the last 7 days, in hourly buckets")


class StatsBucket(_Response):
    """One hour of a webhook's attempts, by outcome (`dropped` rows are not attempts and are not counted)."""

    start: Timestamp = Field(description="start of the hour (UTC)")
    success: int = Field(ge=0)
    http_error: int = Field(ge=0, description="answered, but not 2xx")
    timeout: int = Field(ge=0)
    connection_error: int = Field(ge=0, description="connection or TLS error, or a blocked address")
    p50_ms: int | None = Field(
        description="median response time of the hour's attempts, as the upper bound of its histogram bucket"
        " (buckets at most ~25% wide); null: none"
    )
    p95_ms: int | None = Field(description="95th percentile response time, likewise; null: none")


class StatsSummary(_Response):
    attempts: int = Field(ge=0, description="every attempt made (retries and Test deliveries included)")
    deliveries: int = Field(ge=0, description="first attempts: events sent to this webhook, retries not counted")
    successes: int = Field(ge=0)
    failures: int = Field(ge=0, description="attempts that were not a 2xx")
    success_rate: float | None = Field(ge=0, le=1, description="successes / attempts; null when there was none")
    p50_ms: int | None = Field(description="median response time over the window (histogram bucket upper bound)")
    p95_ms: int | None = Field(description="95th percentile response time over the window, likewise")
    dead_letters: int = Field(ge=0, description="deliveries dead-lettered in the window (attempt 4 failed)")


class WebhookStats(_Response):
    webhook_id: str
    window: StatsWindow
    since: Timestamp = Field(description="start of the first bucket")
    until: Timestamp = Field(description="when the stats were computed (the last bucket is the current hour)")
    bucket_seconds: Literal[3600] = 3600
    summary: StatsSummary
    buckets: list[StatsBucket] = Field(description="oldest first, one per hour, hours without attempts included")


class DeliveryRequest(_Response):
    """The request of one attempt, rebuilt from the stored event: the body is the bytes that were sent."""

    method: Literal["POST"] = "POST"
    url: str = Field(description="the webhook's current URL")
    headers: dict[str, str] = Field(
        description="the headers of that attempt: signatures recomputed from the stored body, the attempt's"
        " timestamp and the webhook's current secret and signing key (the same as sent unless they were rotated since);"
        " custom header values masked"
    )
    body: str | None = Field(description="the raw body as sent; null once the event's payload is past retention")


class DeliveryResponse(_Response):
    status_code: int | None = Field(description="HTTP status, or null on timeout / connection / TLS error")
    error: str | None
    response_ms: int | None
    body_excerpt: str = Field(description="the first 512 bytes of the response body, as stored")
    headers: None = Field(default=None, description="response headers are not kept by the delivery log")


class DeliveryDetail(_Response):
    """One attempt: the request as sent, the response as stored, and every attempt of that event to the webhook."""

    webhook_id: str
    delivery: Delivery
    request: DeliveryRequest
    response: DeliveryResponse
    timeline: list[Delivery] = Field(description="every logged attempt of this event to this webhook, oldest first")


# ------------------------------------------------------------------------------------------ account


class AccountView(_Response):
    id: str
    name: str
    notification_email: str | None = Field(
        description="where webhook.failing / .recovered / .disabled are mailed (when the operator set up SMTP),"
        " once confirmed"
    )
    notification_email_confirmed: bool = Field(
        default=False,
        description="false until the code mailed to the address is confirmed"
        " (`POST /v1/account/notification-email/confirm`); only a confirmed address gets mail",
    )


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})+$")
"""What a notification address may be: a dot-atom local part and a host name of two labels or more (an
international domain as its xn-- form). No display name, quoted local part, comment, group or address
literal: the mail library mis-parses some of those (`a@[b.c` made it raise AttributeError) and none is
needed to reach a mailbox."""


def _notification_email(value: str) -> str:
    """The address exactly as the recorder's mail library reads it back, or a 422 naming the field."""
    if not value:
        return value
    hint = "must be one plain e-mail address like ops@example.com (no name, brackets, spaces or comments)"
    if not _EMAIL.fullmatch(value):
        raise ValueError(f"{hint} (got {value[:80]!r})")
    try:
        parsed = Address(addr_spec=value)
    except Exception:  # the parser raises ValueError, HeaderParseError, defects, AttributeError
        raise ValueError(f"{hint} (got {value[:80]!r})") from None
    if parsed.addr_spec != value:
        raise ValueError(f"{hint} (got {value[:80]!r})")
    return value


class AccountUpdate(_Request):
    notification_email: (
        Annotated[
            str,
            Field(max_length=254, json_schema_extra={"pattern": f"^(?:|{_EMAIL.pattern[1:-1]})$"}),
            AfterValidator(_notification_email),
        ]
        | None
    ) = Field(
        default=None,
        description="a plain e-mail address (no display name); an empty string removes it",
        examples=["ops@example.com"],
    )


class NotificationEmailConfirm(_Request):
    code: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the one-time code mailed to the address (valid 30 minutes, 5 tries)",
        examples=["Zk3vQ9mT2xLp"],
    )


# ------------------------------------------------------------------------------------------ replay


class ReplayRequest(_Request):
    since: Timestamp = Field(description="events first attempted at or after this time (within retention)")
    until: Timestamp | None = Field(default=None, description="and before this time; null: now")
    event_types: list[EventType] | None = Field(default=None, min_length=1, description="only these types")
    only_failed: bool = Field(default=False, description="only events this webhook has not received with a 2xx")
    dry_run: bool = Field(default=False, description="only count: nothing is sent")


class ReplayEventRef(_Response):
    event_id: str
    event_type: EventType
    first_attempted_at: Timestamp


class ReplayPreview(_Response):
    """The answer to a dry run: what a replay with the same fields would send now."""

    webhook_id: str
    dry_run: Literal[True] = True
    count: int = Field(ge=0, description="events that would be re-enqueued")
    since: Timestamp
    until: Timestamp
    first: ReplayEventRef | None
    last: ReplayEventRef | None


class ReplayView(_Response):
    """A replay and its progress: queued so far (at the replay rate), delivered (a 2xx since it was queued),
    failed (no 2xx yet: retrying on the normal schedule, or dead-lettered)."""

    id: str = Field(examples=["rpl_01JD8Z6Q3K4M5N6P7R8S9T0V1W"])
    webhook_id: str
    state: Literal["running", "done", "failed"]
    since: Timestamp
    until: Timestamp
    event_types: list[EventType] | None
    only_failed: bool
    total: int = Field(ge=0)
    queued: int = Field(ge=0)
    delivered: int = Field(ge=0)
    failed: int = Field(ge=0)
    dead: int = Field(ge=0, description="of `failed`, those dead-lettered after the last retry")
    error: str | None
    created_at: Timestamp
    finished_at: Timestamp | None


# ------------------------------------------------------------------------------------------ API keys


class ApiKeyCreate(_Request):
    label: Annotated[
        str,
        Field(
            max_length=100,
            description="what the key is for, e.g. `ci`; no line breaks, control or invisible (format) characters",
            json_schema_extra={"pattern": FREE_TEXT_PATTERN},
        ),
        AfterValidator(check_free_text),
    ] = ""


class ApiKeyView(_Response):
    id: str = Field(examples=["key_01JD8Z6Q3K4M5N6P7R8S9T0V1W"], description="pass to DELETE to revoke the key")
    label: str
    key: str = Field(description="masked (`hfk_****` + its last 4 characters)", examples=["hfk_****x9Qa"])
    created_at: Timestamp
    last_used_at: Timestamp | None = Field(description="last authenticated request, to the minute; null: never")
    revoked_at: Timestamp | None = Field(description="set once revoked: the key is refused from then on")


class ApiKeyWithSecret(ApiKeyView):
    key: str = Field(description="the API key in full; shown only in this response, store it now")


class ApiKeyList(_Response):
    data: list[ApiKeyView] = Field(description="oldest first, revoked keys included")


# ------------------------------------------------------------------------------------------ catalog, errors


class EventTypeInfo(_Response):
    type: EventType
    kind: Kind = Field(
        description="`product`: published by the product's services; `operational`: published by hookfleet about"
        " your webhooks' health (never sent to the webhook it is about)"
    )
    fires_when: str
    sample: dict[str, Any] = Field(description="a complete delivery body of this type")
    json_schema: dict[str, Any] = Field(description="JSON Schema (2020-12) of the delivery body of this type")


class EventTypeList(_Response):
    data: list[EventTypeInfo]


class FilterPreviewRequest(_Request):
    """A candidate filter run over the account's stored events of the webhook's subscribed types."""

    filter: Annotated[str, AfterValidator(check_filter)] = Field(
        description="the CEL filter to try (the same rules as the webhook's `filter`); nothing is saved",
        examples=['data.channel == "whatsapp"'],
        json_schema_extra={"maxLength": MAX_FILTER_LENGTH},
    )
    days: int = Field(default=7, ge=1, le=90, description="the last N UTC days of the log (never past its retention)")
    limit: int = Field(
        default=1_000, ge=1, le=PREVIEW_MAX_EVENTS, description="stored events read in this page at most (scan bound)"
    )
    cursor: str | None = Field(default=None, description="`next_cursor` of the previous page, unchanged")


class FilterSample(_Response):
    event_id: str
    event_type: EventType
    created_at: str = Field(description="the event's own created_at")
    error: str | None = Field(default=None, description="why the filter could not answer (errored samples only)")


class FilterPreviewSamples(_Response):
    matched: list[FilterSample] = Field(description=f"up to {PREVIEW_SAMPLES} events it lets through")
    not_matched: list[FilterSample] = Field(description=f"up to {PREVIEW_SAMPLES} events it leaves out")
    errored: list[FilterSample] = Field(description=f"up to {PREVIEW_SAMPLES} events it cannot answer for")


class FilterPreview(_Response):
    """One page of a preview, newest events first: add the pages' counts for the whole range."""

    webhook_id: str
    since: str = Field(description="the first UTC day read (YYYY-MM-DD)", examples=["2026-11-30"])
    scanned: int = Field(ge=0, description="stored events of the account read in this page")
    other_types: int = Field(ge=0, description="of those, events of types the webhook is not subscribed to")
    matched: int = Field(ge=0, description="events the filter lets through (true)")
    not_matched: int = Field(ge=0, description="events it leaves out (false)")
    errored: int = Field(ge=0, description="events it cannot answer for (a missing field, a type mismatch): not sent")
    samples: FilterPreviewSamples
    cut_short: bool = Field(
        description=f"the page stopped at the time bound ({PREVIEW_TIME_BOUND_S:g} s) before reading `limit`"
        " events; `next_cursor` goes on from there"
    )
    next_cursor: str | None = Field(description="pass it as `cursor` for the next page; null: the range is done")


class ErrorDetail(_Response):
    code: str = Field(examples=["invalid_field"])
    message: str = Field(examples=["webhook url must be https (got http://crm.example.com)"])
    field: str | None = Field(default=None, description="the request field at fault, when there is one")
    limit: str | None = Field(
        default=None,
        description="on a 429: the quota that was reached, named by its setting",
        examples=["HOOKFLEET_REDELIVERIES_PER_MINUTE"],
    )


class ErrorBody(_Response):
    error: ErrorDetail


class Health(_Response):
    status: Literal["ok", "unavailable"]
    reason: str = ""


# ------------------------------------------------------------------------------------------ portal sessions

PORTAL_LIFETIME_DEFAULT_S = 600
PORTAL_LIFETIME_MAX_S = 3600
_FONT_FAMILY = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]{0,47}")
_FONT_STACK_PATTERN = rf"^ *{_FONT_FAMILY.pattern}( *, *{_FONT_FAMILY.pattern}){{0,7}} *$"
"""The same rule as `_font_stack`, for the OpenAPI document (so a client can know a stack before sending it)."""


def _font_stack(value: str) -> str:
    """Family names of letters, digits, spaces and hyphens, separated by commas: the stack is written into
    CSS, so no quote, semicolon, brace or backslash can get there."""
    families = [family.strip(" ") for family in value.split(",")]
    if not 1 <= len(families) <= 8 or not all(_FONT_FAMILY.fullmatch(family) for family in families):
        raise ValueError(
            "must be 1-8 font family names of letters, digits, spaces and hyphens separated by commas,"
            " e.g. Inter, system-ui, sans-serif"
        )
    return ", ".join(families)


_ACCENT = r"^#[0-9a-fA-F]{6}$"


def _accent(value: str) -> str:
    if not re.fullmatch(_ACCENT, value):
        raise ValueError("must be a colour written #rrggbb, e.g. #7c3aed")
    return value


AccentColour = Annotated[
    str,
    Field(max_length=7, description="buttons and links, as #rrggbb", json_schema_extra={"pattern": _ACCENT}),
    AfterValidator(_accent),
]
FontStack = Annotated[
    str,
    Field(
        max_length=200,
        json_schema_extra={"pattern": _FONT_STACK_PATTERN},  # checked by `_font_stack`, with its own message
        description="a font stack, e.g. `Inter, system-ui, sans-serif`",
    ),
    AfterValidator(_font_stack),
]


class PortalTheme(_Request):
    """How the settings page looks inside the product: each value is checked strictly, as it ends up in CSS."""

    accent: AccentColour | None = None
    mode: Literal["light", "dark"] | None = Field(default=None, description="light (default) or dark colours")
    font: FontStack | None = None


def _whole_number(value: Any) -> Any:
    """JSON Schema's `integer` includes 600.0; a string or a fraction is still refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class PortalSessionCreate(_Request):
    lifetime_s: Annotated[int, BeforeValidator(_whole_number)] = Field(
        default=PORTAL_LIFETIME_DEFAULT_S,
        ge=60,
        le=PORTAL_LIFETIME_MAX_S,
        description="seconds the session lasts from now (60-3600); the link itself must be opened within 5 minutes",
    )
    read_only: bool = Field(default=False, description="the session can read but every change is refused (403)")
    theme: PortalTheme | None = Field(default=None, description="carried in the link's query string")


class PortalSessionView(_Response):
    id: str = Field(examples=["ps_01JD8Z6Q3K4M5N6P7R8S9T0V1W"], description="pass to DELETE to revoke the session")
    created_by_key_id: str = Field(description="the API key that asked for the session")
    created_by_key_label: str = Field(description="that key's label (empty when it has none)")
    read_only: bool
    created_at: Timestamp
    link_expires_at: Timestamp = Field(description="the link opens the session only before this time")
    expires_at: Timestamp = Field(description="the session ends at this time")
    used_at: Timestamp | None = Field(description="when the link was opened (links open once); null: not yet")
    revoked_at: Timestamp | None = Field(description="set once revoked: the link and the session are refused")


class PortalSessionLink(PortalSessionView):
    url: str = Field(
        description="the one-time link to the settings page for this account; its token is in the fragment"
        " (`#token=`), so it never reaches a server log. Hand it to one browser, once; it is shown only here"
    )


class PortalSessionList(_Response):
    data: list[PortalSessionView] = Field(description="newest first")


class PortalSessionQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(default=50, ge=1, le=200, description="how many sessions, newest first")


class PortalExchange(_Request):
    token: Annotated[str, Field(min_length=1, max_length=200, description="the token from the link's fragment")]


class PortalSessionGrant(_Response):
    session: str = Field(description="the session credential: send it as `Authorization: Bearer <session>`")
    session_id: str
    read_only: bool
    expires_at: Timestamp


__all__ = [
    "AccountDelivery",
    "AccountDeliveryPage",
    "AccountUpdate",
    "AccountView",
    "ApiKeyCreate",
    "ApiKeyList",
    "ApiKeyView",
    "ApiKeyWithSecret",
    "Delivery",
    "DeliveryDetail",
    "DeliveryPage",
    "DeliveryQuery",
    "DeliveryRequest",
    "DeliveryResponse",
    "DeliverySearchQuery",
    "DeliveryState",
    "ErrorBody",
    "ErrorDetail",
    "EventDeadLetter",
    "EventReplay",
    "EventTypeInfo",
    "EventTypeList",
    "EventView",
    "EventWebhookDeliveries",
    "FilterPreview",
    "FilterPreviewRequest",
    "FilterPreviewSamples",
    "FilterSample",
    "Health",
    "NotificationEmailConfirm",
    "PortalExchange",
    "PortalSessionCreate",
    "PortalSessionGrant",
    "PortalSessionLink",
    "PortalSessionList",
    "PortalSessionQuery",
    "PortalSessionView",
    "PortalTheme",
    "RecoverRequest",
    "RecoverResult",
    "RedeliverResult",
    "StatsBucket",
    "StatsQuery",
    "StatsSummary",
    "TestRequest",
    "TestResult",
    "Timestamp",
    "WebhookCreate",
    "WebhookList",
    "WebhookSecret",
    "WebhookStats",
    "WebhookUpdate",
    "WebhookView",
    "WebhookWithSecret",
]
