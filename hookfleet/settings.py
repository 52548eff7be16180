"""Settings: one frozen pydantic-settings class per role, read from the environment.

Every role reads `KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL` (the conventional names) and its own
`HOOKFLEET_*` variables. Defaults point at the local stack (deploy/local) so `make demo` needs no
configuration. Secrets are `SecretStr`, so printing a settings object masks them.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.retry_schedule import DELAYS_S, RETRY_AFTER_CAP_S
from schemas.topics import Topics

LOCAL_KAFKA = "127.0.0.1:19092"
LOCAL_DATABASE_URL = "postgresql://hookfleet@127.0.0.1:55432/hookfleet"


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecuritySettings(BaseSettings):
    """How every Kafka client of every role authenticates and encrypts (librdkafka's security options).

    Read by `hookfleet.kafka.client_config` for every producer, consumer and admin client, and part of every
    role's settings so `hookfleet settings <role>` shows them (the password and key password masked).
    The default is the local stack's PLAINTEXT; production brokers want SASL_SSL (or SSL with client
    certificates). A password is passed to librdkafka only: never logged, never in an exception.
    """

    # hide_input_in_errors: a validation error's text would otherwise repeat the input, passwords included.
    model_config = SettingsConfigDict(env_prefix="HOOKFLEET_", frozen=True, extra="ignore", hide_input_in_errors=True)

    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT", description="librdkafka security.protocol"
    )
    kafka_ssl_ca_location: str | None = Field(
        default=None, description="CA certificate file (PEM) to verify the brokers; unset: the system's roots"
    )
    kafka_ssl_certificate_location: str | None = Field(
        default=None, description="client certificate file (PEM), for brokers that authenticate clients by TLS"
    )
    kafka_ssl_key_location: str | None = Field(default=None, description="the client certificate's key file (PEM)")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="the key file's password")
    kafka_ssl_endpoint_identification: Literal["https", "none"] = Field(
        default="https", description="verify the broker's host name against its certificate (none: do not)"
    )
    kafka_sasl_mechanism: KafkaSaslMechanism | None = Field(default=None, description="librdkafka sasl.mechanism")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecuritySettings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        given = {
            "HOOKFLEET_KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "HOOKFLEET_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "HOOKFLEET_KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        if sasl and (missing := [name for name, value in given.items() if not value]):
            raise ValueError(
                f"HOOKFLEET_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs {', '.join(missing)}"
            )
        if not sasl and (stray := [name for name, value in given.items() if value]):
            raise ValueError(
                f"{', '.join(stray)} set but HOOKFLEET_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}:"
                " set it to SASL_SSL (or SASL_PLAINTEXT) to use them"
            )
        tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        files = {
            "HOOKFLEET_KAFKA_SSL_CA_LOCATION": self.kafka_ssl_ca_location,
            "HOOKFLEET_KAFKA_SSL_CERTIFICATE_LOCATION": self.kafka_ssl_certificate_location,
            "HOOKFLEET_KAFKA_SSL_KEY_LOCATION": self.kafka_ssl_key_location,
        }
        if not tls and (stray := [name for name, value in files.items() if value]):
            raise ValueError(
                f"{', '.join(stray)} set but HOOKFLEET_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}:"
                " set it to SSL or SASL_SSL to use TLS"
            )
        if bool(self.kafka_ssl_certificate_location) != bool(self.kafka_ssl_key_location):
            raise ValueError(
                "HOOKFLEET_KAFKA_SSL_CERTIFICATE_LOCATION and HOOKFLEET_KAFKA_SSL_KEY_LOCATION go together"
            )
        return self

    def librdkafka_config(self) -> dict[str, str]:
        """The librdkafka options these settings stand for (the password in clear: for librdkafka only)."""
        config = {"security.protocol": self.kafka_security_protocol.lower()}
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            config["ssl.endpoint.identification.algorithm"] = self.kafka_ssl_endpoint_identification
            for key, value in (
                ("ssl.ca.location", self.kafka_ssl_ca_location),
                ("ssl.certificate.location", self.kafka_ssl_certificate_location),
                ("ssl.key.location", self.kafka_ssl_key_location),
            ):
                if value:
                    config[key] = value
            if self.kafka_ssl_key_password is not None:
                config["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        if self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return config


class CommonSettings(KafkaSecuritySettings):
    model_config = SettingsConfigDict(env_prefix="HOOKFLEET_", frozen=True, extra="ignore", hide_input_in_errors=True)

    kafka_bootstrap_servers: str = Field(
        default=LOCAL_KAFKA,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "HOOKFLEET_KAFKA_BOOTSTRAP_SERVERS"),
    )
    database_url: SecretStr = Field(
        default=SecretStr(LOCAL_DATABASE_URL),
        validation_alias=AliasChoices("DATABASE_URL", "HOOKFLEET_DATABASE_URL"),
        description="may carry a password, so it is masked when printed",
    )
    topic_prefix: str = Field(default="", description="prepended to every topic name")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0 = do not serve /metrics")
    log_level: str = "INFO"
    retention_days: int = Field(
        default=30, ge=1, le=3650, description="days the delivery log is kept; older day partitions are dropped"
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_shape(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"bootstrap servers must be host:port[,host:port] (got {value!r})")
        return value

    @cached_property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)


INSTANCE_ID_MAX = 200
_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class MembershipSettings(CommonSettings):
    """The stable name a consuming role's consumers join their groups with (hookfleet/stream/membership.py)."""

    instance_id: str | None = Field(
        default=None,
        description="this process's stable name in its consumer groups (the pod name): a restart gets its own"
        " partitions back at once; unset: dynamic members (a restart waits the 10 s session timeout)",
    )

    @field_validator("instance_id")
    @classmethod
    def _instance_shape(cls, value: str | None) -> str | None:
        """Empty is unset. Kafka takes any string; the bound keeps a consumer's id (this plus a suffix) in one
        readable log line, and the characters (every Kubernetes pod name fits) exclude a space, a quote or a
        line break, which would make the lines naming it ambiguous."""
        if not value:
            return None
        if len(value) > INSTANCE_ID_MAX:
            raise ValueError(
                f"HOOKFLEET_INSTANCE_ID is {len(value)} characters long; at most {INSTANCE_ID_MAX} (the pod name fits)"
            )
        if not _INSTANCE_ID.fullmatch(value):
            raise ValueError(
                f"HOOKFLEET_INSTANCE_ID={value[:60]!r} may hold only letters, digits, '.', '_' and '-', starting with"
                " a letter or digit (set it to the pod name)"
            )
        return value


def _prefixed_group(value: str, info: ValidationInfo) -> str:
    """Consumer groups carry the topic prefix too, so fleets (and tests) sharing a cluster never share
    a group."""
    prefix = str(info.data.get("topic_prefix", ""))
    return value if value.startswith(prefix) else prefix + value


_group_id = field_validator("group_id")(_prefixed_group)


class IdempotencySettings(CommonSettings):
    """The idempotency window: how long the fan-out remembers a key (dispatcher/idempotency.py), and the
    retention of its changelog topic, so the two cannot disagree."""

    idempotency_window_s: int = Field(
        default=24 * 3600,
        ge=60,
        description="a second publish of an idempotency key within this many seconds is not delivered",
    )


class TopicSettings(IdempotencySettings):
    """What `hookfleet topics ensure` creates."""

    def durability(self, brokers: int) -> tuple[int, int]:
        """(replication factor, min.insync.replicas) for a cluster of `brokers`: the production pair
        (3, 2) as soon as there are 3 brokers, so one broker may be lost or restarted while acks=all
        writes go on; explicit settings win."""
        replication = self.replication_factor or (3 if brokers >= 3 else 1)
        min_isr = self.min_insync_replicas or (2 if replication >= 3 else 1)
        return replication, min_isr

    partitions: int = Field(default=6, ge=1)
    replication_factor: int | None = Field(
        default=None, ge=1, description="unset: 3 when the cluster has 3 or more brokers, else 1"
    )
    min_insync_replicas: int | None = Field(
        default=None, ge=1, description="unset: 2 when the replication factor is 3 or more, else 1"
    )
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=60_000)


def _split_networks(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class DeliverySettings(CommonSettings):
    """How one HTTP delivery is made: shared by the dispatcher and the API's Test action."""

    delivery_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="whole attempt: connect, TLS, send, response head and body"
    )
    connect_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="TCP connect + TLS handshake (+ the CONNECT, through an egress proxy);"
        " the attempt's total still bounds it",
    )
    ca_bundle: str | None = Field(default=None, description="PEM file of extra trusted CAs (private CAs, tests)")
    trace_receivers: bool = Field(
        default=False,
        description="with tracing on (OTEL_EXPORTER_OTLP_ENDPOINT), send each attempt's W3C traceparent to receivers",
    )
    allow_networks: Annotated[list[ipaddress.IPv4Network | ipaddress.IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="CIDRs exempt from the SSRF guard, comma-separated (local testing, the demo)",
    )

    egress_proxy: SecretStr | None = Field(
        default=None,
        description="HTTP forward proxy every delivery (and the API's Test) goes through, by CONNECT to the checked"
        " address: http://[user:password@]host:port (masked: it may carry a password); unset: direct",
    )

    _split = field_validator("allow_networks", mode="before")(staticmethod(_split_networks))

    @field_validator("egress_proxy", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("egress_proxy")
    @classmethod
    def _egress_proxy_shape(cls, value: SecretStr | None) -> SecretStr | None:
        """Names what is wrong, never the value: the URL may carry the proxy's password."""
        if value is None:
            return value
        try:
            parts = urlsplit(value.get_secret_value())
            hostname = parts.hostname
        except ValueError:  # an unclosed IPv6 bracket: urllib's text would not name the setting
            raise ValueError(
                "HOOKFLEET_EGRESS_PROXY must be http://[user:password@]host:port (got a host that cannot be read)"
            ) from None
        try:
            port = parts.port
        except ValueError:
            port = None
        wrong = (
            f"scheme {parts.scheme!r}" if parts.scheme != "http"
            else "no host" if not hostname
            else host_problem(hostname) if host_problem(hostname)
            else "no port, or one outside 1-65535" if not port
            else "a path, query or fragment" if parts.path not in ("", "/") or parts.query or parts.fragment
            else None
        )  # fmt: skip
        if wrong is not None:
            raise ValueError(f"HOOKFLEET_EGRESS_PROXY must be http://[user:password@]host:port (got {wrong})")
        return value


class SecretKeySettings(CommonSettings):
    """The key that seals webhook secrets. Every API and dispatcher of a fleet must use the same one, so
    outside local development it must be given (hookfleet/secret_keys.py has the rule)."""

    secret_key: SecretStr | None = Field(
        default=None,
        description="base64 32-byte key that encrypts webhook secrets at rest (same on every API and dispatcher)",
    )
    secret_key_file: str | None = Field(
        default=None, description="file holding the key instead (a mounted Docker or Kubernetes secret)"
    )
    dev: bool = Field(
        default=False,
        description="local development: without a key, use (and create) HOOKFLEET_HOME/secret.key; "
        "implied when DATABASE_URL is the local stack's",
    )
    home: str = Field(default="~/.hookfleet")


Stage = Literal["fanout", "delivery"]
STAGES: tuple[Stage, ...] = ("fanout", "delivery")


def _split_stages(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class DispatcherSettings(DeliverySettings, SecretKeySettings, IdempotencySettings, MembershipSettings):
    group_id: str = Field(default="hookfleet-dispatcher", validate_default=True)
    _group = _group_id
    stages: Annotated[list[Stage], NoDecode] = Field(
        default_factory=lambda: list(STAGES),
        min_length=1,
        description="which stages this process runs: fanout (events -> tasks), delivery (tasks -> HTTP), or both",
    )
    max_in_flight: int = Field(
        default=5000, ge=1, description="delivery tasks held (queued or open) before the delivery partitions pause"
    )
    per_endpoint_concurrency: int = Field(default=50, ge=1, description="open requests per webhook at once")
    per_endpoint_queue: int = Field(
        default=1000, ge=1, description="queued deliveries per webhook before its partition is held back"
    )
    park_after_s: float = Field(
        default=5.0,
        gt=0,
        description="a webhook answering nothing for this long, or whose full queue would take longer, is parked",
    )
    slow_after_s: float = Field(
        default=1.0,
        gt=0,
        description="a webhook answering this slowly, with a queue it cannot drain in park_after_s, is parked",
    )
    commit_interval_s: float = Field(
        default=0.5, gt=0, le=10, description="how often offsets (with the finished ones above) are committed"
    )
    subscriptions_reload_s: float = Field(default=60.0, gt=0)
    drain_timeout_s: float = Field(default=25.0, ge=0, description="SIGTERM drain bound; below the pod grace period")
    retry_delays_s: tuple[float, float, float] = Field(
        default=DELAYS_S, description="delay before attempts 2, 3 and 4 (schemas/retry_schedule.py)"
    )
    retry_after_cap_s: float = Field(
        default=RETRY_AFTER_CAP_S, ge=0, description="longest wait a receiver's Retry-After (429/503) may ask for"
    )
    idempotency_max_keys: int = Field(
        default=50_000,
        ge=64,
        description="idempotency keys held per events partition; past it the oldest are forgotten early",
    )

    _stages = field_validator("stages", mode="before")(staticmethod(_split_stages))


class RetrySchedulerSettings(MembershipSettings):
    group_id: str = Field(default="hookfleet-retry-scheduler", validate_default=True)
    _group = _group_id
    drain_timeout_s: float = Field(
        default=10.0, ge=0, description="SIGTERM bound for outstanding hand-offs; below the pod grace period"
    )
    retry_delays_s: tuple[float, float, float] = Field(
        default=DELAYS_S, description="the dispatcher's schedule: bounds how long a task may be held"
    )
    max_hold_slack_s: float = Field(
        default=300.0, ge=0, description="a task is held at most 2 x its stage's delay + this after it was written"
    )
    retry_after_cap_s: float = Field(
        default=RETRY_AFTER_CAP_S,
        ge=0,
        description="the dispatcher's Retry-After cap: a task due up to this far ahead is relayed until due",
    )


class MailSettings(CommonSettings):
    """The SMTP server, for the recorder (notification mail) and the API (the address's confirmation code)."""

    smtp_url: SecretStr | None = Field(
        default=None, description="SMTP server for notification mail (may carry a password); unset: no mail"
    )
    smtp_from: str = Field(default="hookfleet@localhost", description="sender address of notification mail")

    @field_validator("smtp_url")
    @classmethod
    def _smtp_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parts = urlsplit(value.get_secret_value())
            if parts.scheme not in ("smtp", "smtp+starttls", "smtps") or not parts.hostname:
                raise ValueError(
                    "smtp url must be smtp://host:port, smtp+starttls://user:password@host:587"
                    f" or smtps://user:password@host:465 (got scheme {parts.scheme!r})"
                )
        return value


class RecorderSettings(MailSettings, MembershipSettings):
    group_id: str = Field(default="hookfleet-recorder", validate_default=True)
    _group = _group_id
    disable_after: timedelta = Field(
        default=timedelta(days=5),
        description="a webhook failing this long (no success) while deliveries keep failing is switched off;"
        " seconds or ISO 8601 (P5D)",
    )
    batch_max: int = Field(default=2000, ge=1)
    batch_wait_ms: int = Field(default=200, ge=0)
    recovery_redrive_rate: float = Field(
        default=10.0,
        gt=0,
        le=10_000,
        description="dead letters per second per webhook sent again when a webhook with redrive_on_recovery heals",
    )
    drain_timeout_s: float = Field(
        default=20.0,
        ge=0,
        description="SIGTERM during a database outage: retry this long, then exit uncommitted (nothing is lost)",
    )
    log_maintenance_s: float = Field(
        default=3600.0, gt=0, description="how often the log's day partitions are created ahead and pruned"
    )
    lag_export_s: float = Field(
        default=15.0, ge=0, description="how often to read broker-side consumer lag (hookfleet/broker_lag.py); 0 = off"
    )
    lag_groups: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "hookfleet-dispatcher": ["webhooks.events", "webhooks.deliveries"],
            "hookfleet-retry-scheduler": ["webhooks.retry.10s", "webhooks.retry.60s", "webhooks.retry.5m"],
            "hookfleet-recorder": ["webhooks.attempts", "webhooks.dead"],
        },
        description="unprefixed group id -> unprefixed topics whose lag is exported (JSON)",
    )


class ApiSettings(DeliverySettings, SecretKeySettings, MailSettings):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    secret_rotation_overlap_s: int = Field(default=24 * 3600, ge=0)
    max_webhooks_per_account: int = Field(default=100, ge=1, description="webhooks an account may hold")
    max_api_keys_per_account: int = Field(default=20, ge=1, description="active API keys an account may hold")
    creates_per_minute: int = Field(
        default=30, ge=1, description="webhook and API key creations per account per minute, per API process"
    )
    tests_per_minute: int = Field(
        default=10, ge=1, description="Test deliveries per account per minute, per API process"
    )
    dns_workers: int = Field(
        default=4, ge=1, le=64, description="threads resolving webhook hosts at registration (slow DNS waits there)"
    )
    dns_lookups_per_account: int = Field(
        default=2, ge=1, le=64, description="of those threads, how many one account's lookups may hold at once"
    )
    url_changes_per_minute: int = Field(
        default=30, ge=1, description="webhook URLs set (create, or PATCH of the url) per account per minute"
    )
    replay_rate_per_s: float = Field(
        default=50.0, gt=0, le=10_000, description="events a replay re-enqueues per second, per replay"
    )
    replays_per_account: int = Field(
        default=2, ge=1, description="replays of one account running at once, per API process"
    )
    max_replays_running: int = Field(
        default=8, ge=1, le=64, description="replays running at once in all, per API process (the operator's cap)"
    )
    replay_events_per_day: int = Field(
        default=100_000, ge=1, description="events one account may replay in 24 hours (counted across replicas)"
    )
    redeliveries_per_minute: int = Field(
        default=60, ge=1, description="redeliveries per account per minute, per API process"
    )
    recovers_per_minute: int = Field(
        default=10, ge=1, description="recovers (dead-letter redrives) per account per minute, per API process"
    )
    filter_previews_per_minute: int = Field(
        default=30, ge=1, description="filter preview pages per account per minute, per API process (each up to 2 s)"
    )
    public_url: str | None = Field(
        default=None,
        description="the API's public origin (https://host[:port]) that portal links are built on; unset: the"
        " request's own scheme and Host",
    )
    portal_frame_ancestors: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="origins allowed to show the settings page in an <iframe>, space-separated (CSP"
        " frame-ancestors); unset: none",
    )

    @field_validator("public_url")
    @classmethod
    def _public_origin(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return web_origin(value.strip().removesuffix("/"), "HOOKFLEET_PUBLIC_URL")

    @field_validator("portal_frame_ancestors", mode="before")
    @classmethod
    def _frame_ancestors(cls, value: Any) -> Any:
        parts = value.split() if isinstance(value, str) else value
        return tuple(web_origin(str(part), "HOOKFLEET_PORTAL_FRAME_ANCESTORS") for part in parts)


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def web_origin(value: str, setting: str) -> str:
    """`value` as an exact web origin (scheme://host[:port]), or a ValueError naming `setting`.

    Origins end up in a Content-Security-Policy header and in links handed to browsers, so nothing but an
    origin passes: no path, query, user info, wildcard or quote. https only, except on the loopback host
    (local development and tests)."""
    shown = re.sub(r"(?<=//).*@", "****@", value)[:100]  # user info is refused, and never echoed
    try:
        parts = urlsplit(value)
        port = parts.port
        hostname = parts.hostname
    except ValueError:
        raise ValueError(f"{setting}: {shown!r} is not an origin; write scheme://host[:port]") from None
    if port == 0:
        raise ValueError(f"{setting}: {shown!r} has port 0; write a port of 1-65535, or none")
    if hostname and (problem := host_problem(hostname)) is not None:
        raise ValueError(f"{setting}: {shown!r} has {problem}")
    host = parts.netloc.rpartition(":")[0] if port is not None else parts.netloc
    if (
        parts.scheme not in ("https", "http")
        or not re.fullmatch(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]", host.lower())
        or f"{parts.scheme}://{parts.netloc}" != value
    ):
        raise ValueError(f"{setting}: {shown!r} is not an origin; write scheme://host[:port], nothing after it")
    if parts.scheme == "http" and host.lower() not in _LOOPBACK_HOSTS:
        raise ValueError(f"{setting}: {shown!r} must be https (http only for localhost and 127.0.0.1)")
    return value


_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def host_problem(host: str) -> str | None:
    """What is wrong with a host of a URL setting (as urlsplit's `hostname` gives it: lowercase, an IPv6
    address without brackets), or None: a DNS name of ASCII labels or an IP address. The one host rule of
    every URL-shaped setting, so a space, U+2028 or a quote never reaches a resolver or a header."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if not host.isascii():
        return "a host that is not ASCII (write an international name in its xn-- form)"
    if len(host) > 253 or not _HOST_NAME.fullmatch(host):
        return "a host that is not a host name or IP address"
    return None
