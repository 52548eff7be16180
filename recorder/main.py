"""`hookfleet recorder`: the attempt log and dead letters into PostgreSQL (see recorder/loop.py)."""

from __future__ import annotations

import argparse

from hookfleet import logs
from hookfleet.kafka import check_broker
from hookfleet.settings import RecorderSettings
from hookfleet.shutdown import Shutdown
from recorder.loop import run_recorder


def run(args: argparse.Namespace) -> int:
    settings = RecorderSettings()
    logs.setup(settings.log_level, role="recorder")
    # Fail fast with one line when the broker is unreachable; a database outage is waited out instead.
    check_broker(settings.kafka_bootstrap_servers)
    return run_recorder(settings, Shutdown().install())
