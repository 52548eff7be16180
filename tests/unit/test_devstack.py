"""The local stack's pure parts."""

from __future__ import annotations

import base64
import shlex
from pathlib import Path

from devstack.stack import new_cluster_id, server_options


def test_kafka_cluster_ids_never_start_with_a_dash() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def test_the_server_options_keep_a_socket_folder_with_spaces_and_quotes_whole() -> None:
    # pg_ctl starts postgres through a shell: a checkout under "/tmp/cold run" once made it
    # `postgres: invalid argument: "run/..."`, so the local stack never started from such a folder
    folder = Path("/tmp/cold run/it's here/deploy/local/.cache/pgdata")
    words = shlex.split(server_options(55432, folder))
    assert words[words.index("-k") + 1] == str(folder)
    assert words[:2] == ["-p", "55432"]
