"""Kafka topic names (docs/architecture.md#topics). A prefix lets several fleets, or tests, share one cluster."""

from __future__ import annotations

from dataclasses import dataclass, fields

_EVENTS = "webhooks.events"


@dataclass(frozen=True, slots=True)
class Topics:
    events: str = _EVENTS
    deliveries: str = "webhooks.deliveries"
    retry_10s: str = "webhooks.retry.10s"
    retry_60s: str = "webhooks.retry.60s"
    retry_5m: str = "webhooks.retry.5m"
    dead: str = "webhooks.dead"
    attempts: str = "webhooks.attempts"
    invalid: str = "webhooks.invalid"
    idempotency: str = "webhooks.idempotency"
    """The fan-out's changelog of idempotency keys (compacted; partition n holds the keys of events partition n)."""

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        """`Topics.with_prefix("t1.")` -> `t1.webhooks.events`, ... (an empty prefix is the default)."""
        return cls(**{f.name: prefix + f.default for f in fields(cls)})  # type: ignore[operator]

    @property
    def prefix(self) -> str:
        """The prefix these names were made with (`with_prefix`): what HOOKFLEET_TOPIC_PREFIX must say."""
        return self.events.removesuffix(_EVENTS)

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]

    @property
    def retries(self) -> tuple[str, str, str]:
        """The delay topics in schedule order: after attempt 1, 2, 3."""
        return (self.retry_10s, self.retry_60s, self.retry_5m)
