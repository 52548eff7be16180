"""Cost of one id (`schemas.ids.new_attempt_id`, which every delivery attempt takes), beside the
per-character loop it replaced, interleaved in one process so machine load hits both alike.

    python -m bench.ids
"""

from __future__ import annotations

import secrets
import time
import timeit

from schemas.ids import new_attempt_id

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def loop_encoded_attempt_id() -> str:
    """The previous encoder: 26 shifts and lookups, one character at a time."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "att_" + "".join(reversed(out))


def main() -> None:
    before: list[float] = []
    after: list[float] = []
    for _ in range(15):
        before.append(timeit.timeit(loop_encoded_attempt_id, number=20_000) / 20_000 * 1e6)
        after.append(timeit.timeit(new_attempt_id, number=20_000) / 20_000 * 1e6)
    for name, runs in (("previous loop encoder", before), ("schemas.ids", after)):
        runs.sort()
        print(f"{name}: min {runs[0]:.2f} us, median {runs[len(runs) // 2]:.2f} us per id")


if __name__ == "__main__":
    main()
