"""`hookfleet recorder`: the attempt log and dead letters into PostgreSQL (see recorder/loop.py)."""

from __future__ import annotations

import argparse

from hookfleet import logs
from hookfleet.settings import RecorderSettings
from hookfleet.shutdown import Shutdown
from recorder.loop import run_recorder


def run(args: argparse.Namespace) -> int:
    settings = RecorderSettings()
    logs.setup(settings.log_level, role="recorder")
    # A broker or database outage is waited out, alive and unready (see run_recorder).
    return run_recorder(settings, Shutdown().install())
