"""The one shape of a `webhooks.invalid` message, whichever role routes it there
(docs/architecture.md#invalid-messages).

A message that is not what its topic carries is moved aside instead of blocking its partition:

- value: the original bytes, unchanged (empty when the original had no value);
- key: the original key, so the message lands beside its peers;
- headers, all UTF-8 text:
  `reason` (what is wrong, `schemas.validation.first_error`'s line: names the field, never the payload),
  `source_topic`, `source_partition`, `source_offset` (where it was read, to find or replay it),
  `role` (which role moved it: dispatcher, retry-scheduler or recorder).

The original headers are not carried over, so these names always mean exactly this.
"""

from __future__ import annotations

from typing import Literal

from hookfleet.kafka import Headers, PartitionKey
from schemas.validation import REASON_MAX

Role = Literal["dispatcher", "retry-scheduler", "recorder"]

InvalidMessage = tuple[bytes, bytes | None, Headers]
"""(value, key, headers), ready for `KafkaProducer.produce(topics.invalid, value, key=key, headers=headers)`."""


def invalid_message(
    value: bytes | None, key: bytes | None, reason: str, source: PartitionKey, offset: int, role: Role
) -> InvalidMessage:
    """The invalid-topic message for the message at `offset` of `source` that could not be used."""
    topic, partition = source
    headers: Headers = [
        ("reason", reason[:REASON_MAX].encode()),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
        ("role", role.encode()),
    ]
    return value or b"", key, headers
