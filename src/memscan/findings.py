"""What explain's rules share: a finding, its severities, the thresholds
that make memory worth one, and growth between snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Sequence

from ._types import CATEGORIES
from .core.snapshot import Snapshot
from .format import mib

MiB = 1 << 20
GiB = 1 << 30

#: A finding's memory must be at least this much: below it, nothing a
#: change of code or settings returns is worth the reader's time...
MIN_BYTES = 8 * MiB
#: ...and at least this share of RSS: 8 MiB of a 10 GiB process explains
#: nothing about it.
MIN_SHARE = 0.05
#: C memory is called large from this share of RSS on: a Go program with a
#: C library has some C memory; a quarter of RSS is where it stops being a
#: detail beside the Go heap.
C_LARGE_SHARE = 0.25
#: Growth over a watch is significant from this much on (a few scans' noise,
#: a GC cycle of a small heap, stays below it).
GROWTH_MIN_BYTES = 8 * MiB
#: The Go heap counts as flat while it moved by less than this, or less than
#: this share of the C growth: the runtime's own reports and GC cycles move
#: a small heap by a few MiB (its minimum goal is 4 MiB).
GO_FLAT_BYTES = 4 * MiB
GO_FLAT_SHARE = 0.10
#: Changes smaller than this are left out of the text (they print as 0.0 MiB).
SHOWN_BYTES = MiB // 10

#: Most urgent first: "warning" is likely a defect (a leak), "notice" is
#: memory that can be had back by a setting or a call, "info" explains a
#: figure and needs no action.
SEVERITIES = ("warning", "notice", "info")


@dataclass(frozen=True)
class Finding:
    """One diagnosis: ``id`` (stable, for scripts), ``severity`` (one of
    SEVERITIES), a one-line ``title``, the explanation ``text``, and the
    ``numbers`` it rests on (bytes in ``*_bytes``, seconds in
    ``*_seconds``, shares as fractions of 1)."""

    id: str
    severity: str
    title: str
    text: str
    numbers: Dict[str, float] = field(default_factory=dict)


def significant(part: int, rss: int, share: float = MIN_SHARE) -> bool:
    return rss > 0 and part >= MIN_BYTES and part >= share * rss


def signed(g: Mapping[str, int], cat: str) -> str:
    """``cat`` and its change in ``g``, e.g. "c_malloc +12.0 MiB"."""
    return f"{cat} {mib(g[cat], sign=True)}"


def growth(snaps: Sequence[Snapshot]) -> Dict[str, int]:
    """Each category's rss change from the first snapshot to the last, and
    the total's ("total")."""
    first, last = snaps[0], snaps[-1]
    out = {}
    if first.categories is not None and last.categories is not None:
        out = {c: last.categories[c].rss - first.categories[c].rss for c in CATEGORIES}
    out["total"] = last.total.rss - first.total.rss
    return out
