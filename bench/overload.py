"""`python -m bench.overload`: the whole fleet at twice its capacity for 3 minutes, then drained
(bench/stamina.py)."""

from __future__ import annotations

import sys

from bench import stamina

if __name__ == "__main__":
    sys.exit(stamina.main("overload", rate_factor=2.0, minutes=3, window_s=5, drain_timeout_s=600))
