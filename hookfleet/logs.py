"""Structured logging: one `key=value` event per line, never a secret or a full payload."""

from __future__ import annotations

import logging
import sys


def setup(level: str = "INFO", role: str = "hookfleet") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"ts=%(asctime)s level=%(levelname)s role={role} pid=%(process)d logger=%(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
