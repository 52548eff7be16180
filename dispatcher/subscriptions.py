"""The in-memory subscription index: (account, event type) -> active endpoints. Pure, no I/O.

The dispatcher answers "who gets this event?" from memory, never with a query per event. The index is
replaced by periodic full reloads and patched by per-webhook change notifications (subscription_store.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from delivery.endpoint import Endpoint
from schemas.catalog import EventType


class SubscriptionIndex:
    def __init__(self, endpoints: Iterable[Endpoint] = ()) -> None:
        self._by_id: dict[str, Endpoint] = {}
        self._by_key: dict[tuple[str, EventType], list[Endpoint]] = {}
        self.replace_all(endpoints)

    def replace_all(self, endpoints: Iterable[Endpoint]) -> None:
        self._by_id = {e.id: e for e in endpoints}
        self._rebuild()

    def upsert(self, endpoint: Endpoint) -> None:
        self._by_id[endpoint.id] = endpoint
        self._rebuild_account(endpoint.account_id)

    def remove(self, webhook_id: str) -> None:
        gone = self._by_id.pop(webhook_id, None)
        if gone is not None:
            self._rebuild_account(gone.account_id)

    def get(self, webhook_id: str) -> Endpoint | None:
        return self._by_id.get(webhook_id)

    def match(self, account_id: str, event_type: EventType) -> list[Endpoint]:
        """Active endpoints of this account subscribed to this type, in a stable order."""
        return self._by_key.get((account_id, event_type), [])

    def __len__(self) -> int:
        return len(self._by_id)

    def _rebuild(self) -> None:
        self._by_key = {}
        for endpoint in sorted(self._by_id.values(), key=lambda e: e.id):
            self._add(endpoint)

    def _rebuild_account(self, account_id: str) -> None:
        self._by_key = {k: v for k, v in self._by_key.items() if k[0] != account_id}
        for endpoint in sorted(self._by_id.values(), key=lambda e: e.id):
            if endpoint.account_id == account_id:
                self._add(endpoint)

    def _add(self, endpoint: Endpoint) -> None:
        if not endpoint.active:
            return
        for event_type in endpoint.events:
            self._by_key.setdefault((endpoint.account_id, event_type), []).append(endpoint)
