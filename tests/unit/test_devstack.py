"""The local stack's pure parts."""

from __future__ import annotations

import base64

from devstack.stack import new_cluster_id


def test_kafka_cluster_ids_never_start_with_a_dash() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
