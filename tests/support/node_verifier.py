"""Standard Webhooks `v1a` signatures checked by Node's Ed25519 (tests/support/verify_v1a.js): an
implementation independent of the one that signs, run on what a real receiver got."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("verify_v1a.js")


@dataclass(frozen=True)
class NodeVerdict:
    entries: int
    """How many `v1a` entries `webhook-signature` carried."""
    verified: list[bool]
    """Per public key: the README's receiver check (a `v1a` entry verifies, the timestamp within 5 min)."""
    matches: list[list[int]]
    """Per public key: the indexes of the `v1a` entries it verifies."""


def node_verify(public_keys: Sequence[str], headers: Mapping[str, str], body: bytes, now: float) -> NodeVerdict:
    node = shutil.which("node")
    assert node is not None, "node (v18 or later) is needed to check Ed25519 signatures independently"
    request = {
        "public_keys": list(public_keys),
        "headers": {name.lower(): value for name, value in headers.items()},
        "body_b64": base64.b64encode(body).decode(),
        "now": now,
    }
    done = subprocess.run(
        [node, str(SCRIPT)], input=json.dumps(request).encode(), capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    answer = json.loads(done.stdout)
    return NodeVerdict(answer["entries"], answer["verified"], answer["matches"])
