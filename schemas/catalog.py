"""The event catalog: the only event types hookfleet accepts, when each fires, and a sample payload.

Two kinds, kept apart: the nine *product* types that product services publish, and the three
*operational* types hookfleet itself publishes about a webhook's health (docs/architecture.md#failure-policy).
A webhook subscribes to either kind the same way; only hookfleet may publish the operational ones.

The samples are what the "Test" action sends and what the demo publishes, so they are shaped like the
real events product services emit.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal


class EventType(StrEnum):
    MESSAGE_INCOMING = "message.incoming"
    MESSAGE_SENT = "message.sent"
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_READ = "message.read"
    MESSAGE_FAILED = "message.failed"
    CONTACT_CREATED = "contact.created"
    CONTACT_UPDATED = "contact.updated"
    CAMPAIGN_COMPLETED = "campaign.completed"
    TRANSFER_CREATED = "transfer.created"
    WEBHOOK_FAILING = "webhook.failing"
    WEBHOOK_RECOVERED = "webhook.recovered"
    WEBHOOK_DISABLED = "webhook.disabled"


Kind = Literal["product", "operational"]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    type: EventType
    fires_when: str
    sample_data: dict[str, Any]
    kind: Kind = "product"


_MESSAGE = {
    "message_id": "msg_01JD8Z6Q3K4M5N6P7R8S9T0V1W",
    "conversation_id": "conv_7781",
    "contact": {"id": "ct_1042", "phone": "+14155550123", "name": "Ana Souza"},
    "channel": "whatsapp",
}

CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        EventType.MESSAGE_INCOMING,
        "customer sends a message",
        {**_MESSAGE, "direction": "inbound", "text": "Hi, is my order on its way?"},
    ),
    CatalogEntry(
        EventType.MESSAGE_SENT,
        "your message is sent",
        {**_MESSAGE, "direction": "outbound", "text": "Yes! It ships today.", "sent_by": "agent_12"},
    ),
    CatalogEntry(
        EventType.MESSAGE_DELIVERED,
        "message delivered to phone",
        {**_MESSAGE, "direction": "outbound", "delivered_at": "2026-11-27T10:15:03Z"},
    ),
    CatalogEntry(
        EventType.MESSAGE_READ,
        "message read by customer",
        {**_MESSAGE, "direction": "outbound", "read_at": "2026-11-27T10:16:40Z"},
    ),
    CatalogEntry(
        EventType.MESSAGE_FAILED,
        "message delivery failed",
        {
            **_MESSAGE,
            "direction": "outbound",
            "error": {"code": "recipient_unreachable", "message": "The phone number is not reachable."},
        },
    ),
    CatalogEntry(
        EventType.CONTACT_CREATED,
        "new contact added",
        {"contact": {"id": "ct_1043", "name": "Bruno Lima", "phone": "+5511955550100", "tags": ["lead"]}},
    ),
    CatalogEntry(
        EventType.CONTACT_UPDATED,
        "contact info changed",
        {
            "contact": {"id": "ct_1042", "name": "Ana Souza", "email": "ana@example.com"},
            "changed_fields": ["email"],
        },
    ),
    CatalogEntry(
        EventType.CAMPAIGN_COMPLETED,
        "campaign finished",
        {
            "campaign_id": "cmp_311",
            "name": "Black Friday reminder",
            "stats": {"recipients": 1200, "sent": 1187, "delivered": 1150, "read": 802, "failed": 13},
        },
    ),
    CatalogEntry(
        EventType.TRANSFER_CREATED,
        "agent transfer initiated",
        {
            "transfer_id": "tr_5521",
            "conversation_id": "conv_7781",
            "from_agent": "agent_12",
            "to_team": "billing",
            "reason": "refund request",
        },
    ),
)

_WEBHOOK = {
    "webhook_id": "wh_01JD8Z6Q3K4M5N6P7R8S9T0V1W",
    "name": "CRM Sync",
    "url": "https://crm.example.com/hooks/hookfleet",
}

OPERATIONAL_CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        EventType.WEBHOOK_FAILING,
        "one of your webhooks started failing: a delivery to it exhausted its retries",
        {**_WEBHOOK, "active": True, "status": "failing", "reason": "dead_letter", "since": "2026-11-27T10:21:03.000Z",
         "last_error": "http 500", "dead_letters": 1, "redriven": 0},
        "operational",
    ),
    CatalogEntry(
        EventType.WEBHOOK_RECOVERED,
        "a failing webhook delivered successfully again",
        {**_WEBHOOK, "active": True, "status": "healthy", "reason": "delivered", "since": "2026-11-27T11:02:40.000Z",
         "last_error": "", "dead_letters": 0, "redriven": 3},
        "operational",
    ),
    CatalogEntry(
        EventType.WEBHOOK_DISABLED,
        "a webhook was switched off: its receiver answered 410 Gone, or it kept failing too long",
        {**_WEBHOOK, "active": False, "status": "failing", "reason": "gone", "since": "2026-11-27T10:21:03.000Z",
         "last_error": "http 410", "dead_letters": 0, "redriven": 0},
        "operational",
    ),
)  # fmt: skip

PRODUCT_TYPES: tuple[EventType, ...] = tuple(entry.type for entry in CATALOG)
"""What product services may publish."""
OPERATIONAL_TYPES: tuple[EventType, ...] = tuple(entry.type for entry in OPERATIONAL_CATALOG)
"""What hookfleet publishes about a webhook's health; a webhook is never sent one about itself."""

BY_TYPE: dict[EventType, CatalogEntry] = {entry.type: entry for entry in CATALOG + OPERATIONAL_CATALOG}


def sample_data(event_type: EventType) -> dict[str, Any]:
    """A fresh copy of the sample payload, safe for the caller to mutate."""
    import copy

    return copy.deepcopy(BY_TYPE[event_type].sample_data)
