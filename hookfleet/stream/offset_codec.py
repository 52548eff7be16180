"""Finished offsets above the committed one, carried in Kafka's commit metadata: pure, no I/O.

Kafka stores one offset per partition meaning "everything below is done". Deliveries finish out of order,
so without more a crash re-sends everything consumed after the oldest unfinished delivery — for one busy
webhook stuck behind a slow one, that was 85 % of a burst. With each commit we also store which offsets
above it are already finished (the technique of Confluent's parallel consumer), and the next owner skips
them: a crash then re-sends only what was really in flight plus what finished after the last commit.

Format: `hf1:<base>:<base64(zlib(varints))>`, the varints being (gap, length) of each run of finished
offsets, the first gap counted from `base` (the committed offset, which is itself unfinished). Kafka caps
commit metadata (broker `offset.metadata.max.bytes`, 4,096 by default): when the runs do not fit in
`max_chars`, the highest runs are dropped. Dropping is safe: those offsets are only delivered again.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable

PREFIX = "hf1"
MAX_METADATA_CHARS = 4000


def _runs(base: int, offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted (start, length) runs of the offsets strictly above `base`."""
    runs: list[tuple[int, int]] = []
    for offset in sorted(o for o in offsets if o > base):
        if runs and runs[-1][0] + runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((offset, 1))
    return runs


def _varint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _pack(base: int, runs: list[tuple[int, int]]) -> str:
    raw = bytearray()
    previous_end = base
    for start, length in runs:
        _varint(start - previous_end, raw)
        _varint(length, raw)
        previous_end = start + length
    packed = base64.b64encode(zlib.compress(bytes(raw), 6)).decode("ascii")
    return f"{PREFIX}:{base}:{packed}"


def encode_finished(base: int, finished: Iterable[int], max_chars: int = MAX_METADATA_CHARS) -> str:
    """Commit metadata for offset `base` naming the finished offsets above it ("" when there are none)."""
    runs = _runs(base, finished)
    if not runs:
        return ""
    text = _pack(base, runs)
    while len(text) > max_chars and runs:
        runs = runs[: len(runs) // 2]  # keep the lowest runs: they are the ones a restart reaches first
        text = _pack(base, runs) if runs else ""
    return text


def decode_finished(base: int, metadata: str | None) -> frozenset[int]:
    """The finished offsets recorded with the commit at `base`; empty for foreign or damaged metadata."""
    if not metadata or not metadata.startswith(PREFIX + ":"):
        return frozenset()
    try:
        _, written_base, packed = metadata.split(":", 2)
        if int(written_base) != base:  # metadata of another commit: trust nothing in it
            return frozenset()
        raw = zlib.decompress(base64.b64decode(packed, validate=True))
    except (ValueError, zlib.error):
        return frozenset()
    offsets: set[int] = set()
    values: list[int] = []
    value = shift = 0
    for byte in raw:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        values.append(value)
        value = shift = 0
    cursor = base
    for gap, length in zip(values[::2], values[1::2], strict=False):
        start = cursor + gap
        offsets.update(range(start, start + length))
        cursor = start + length
    return frozenset(offsets)
