"""The event catalog: the only event types hookfleet accepts, when each fires, and a sample payload.

The samples are what the "Test" action sends and what the demo publishes, so they are shaped like the
real events product services emit.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    type: EventType
    fires_when: str
    sample_data: dict[str, Any]


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

BY_TYPE: dict[EventType, CatalogEntry] = {entry.type: entry for entry in CATALOG}


def sample_data(event_type: EventType) -> dict[str, Any]:
    """A fresh copy of the sample payload, safe for the caller to mutate."""
    import copy

    return copy.deepcopy(BY_TYPE[event_type].sample_data)
