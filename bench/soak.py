"""`python -m bench.soak`: the whole fleet at half its capacity for 30 minutes (bench/stamina.py)."""

from __future__ import annotations

import sys

from bench import stamina

if __name__ == "__main__":
    sys.exit(stamina.main("soak", rate_factor=0.5, minutes=30, window_s=60, drain_timeout_s=300))
