"""The page states of one heap arena, from what was read of it: its spans
array, the live mspans it names, the page allocator's bitmaps, the grown
ranges and the Ps' page caches (see :mod:`memscan.owners.go.heap` for the
states and why pages are counted as they are)."""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Tuple

from ..._errors import HeapChanged
from . import bits
from .layout import Layout

OBJECTS, STACKS, FREE, RELEASED, RESERVED = range(5)
#: Index = state; the same names as ``exact.DETAIL``.
STATE_NAMES = ("objects", "stacks", "free", "released", "reserved")


class Span(NamedTuple):
    """A live (in-use or manual) mspan."""

    start: int
    end: int  # startAddr + npages * pageSize
    state: int


def arena_states(lay: Layout, base: int, spans: Tuple[int, ...], info: Dict[int, Span],
                 cover: List[Tuple[int, int]], alloc: int, scav: int,
                 grown: List[Tuple[int, int]], caches: List[Tuple[int, int, int]]) -> Tuple[bytearray, int]:
    """The state of every page of the arena at ``base``, and which of
    its pages are unsettled (changed while they were read; bit i = page i)."""
    n, ps = lay.spans_len, lay.page_size
    full = (1 << n) - 1
    grown_bits = bits.range_bits(grown, base, n, ps)
    if (alloc | scav) & ~grown_bits & full:
        raise HeapChanged(f"page bits set outside the grown heap in arena {base:#x}")
    owned, unsettled = span_pages(lay, base, spans, info, cover, bits.page_flags(alloc, n), bits.page_flags(scav, n))
    objects, stacks = bits.flag_bits(owned, OBJECTS + 1), bits.flag_bits(owned, STACKS + 1)
    spanned = objects | stacks
    cached, cached_scav = bits.cache_bits(caches, base, n, ps)
    # Allocated without a span: expected only for pages in a P's page
    # cache and for Go 1.26+ random padding (allocated and scavenged).
    # Any other page had its span freed or made while we read (or is
    # being scavenged right now, a few pages at a time).
    unsettled |= alloc & ~scav & ~cached & ~spanned & grown_bits
    # Scavenged and not in a span: free scavenged pages and the padding,
    # both counted released by MemStats; pages in a page cache had their
    # scavenged bit moved into the cache.
    released = (scav | (cached_scav & alloc)) & grown_bits & ~spanned
    states = bytearray([FREE]) * n
    for mask, state in ((full & ~grown_bits, RESERVED), (released, RELEASED), (objects, OBJECTS),
                        (stacks, STACKS)):
        for lo, hi in bits.runs(mask):
            states[lo:hi] = bytes([state]) * (hi - lo)
    return states, unsettled

def span_pages(lay: Layout, base: int, spans: Tuple[int, ...], info: Dict[int, Span],
               cover: List[Tuple[int, int]], alloc: bytes, scav: bytes) -> Tuple[bytearray, int]:
    """Per page of the arena at ``base``: OBJECTS + 1 or STACKS + 1 when
    a live span owns it, else 0; and the pages in live spans that
    disagree (changed while we read them; bit i = page i).

    A live span's pages all point to it (so no two live spans share a
    page), are allocated and not scavenged. A span lies inside the
    arenas, but may cross from one arena into an adjacent one (objects
    larger than the rest of an arena): it must fit in one run of
    contiguous arenas, not in one arena."""
    ps = lay.page_size
    arena_end = base + lay.arena_bytes
    owned = bytearray(lay.spans_len)
    marks = {lay.span_in_use: OBJECTS + 1, lay.span_manual: STACKS + 1}
    unsettled = 0
    for p in set(spans):
        s = info.get(p)
        if s is None:
            continue  # nil or dead
        if not (base <= s.start and s.end <= arena_end):
            if s.start % ps or s.end <= s.start or not any(lo <= s.start and s.end <= hi for lo, hi in cover):
                raise HeapChanged(f"live span at {s.start:#x}-{s.end:#x} lies outside the heap arenas")
        lo = (max(s.start, base) - base) // ps
        hi = (min(s.end, arena_end) - base) // ps
        if lo >= hi:
            continue  # a stale pointer to an mspan reused elsewhere
        mark, k = marks[s.state], hi - lo
        if spans[lo:hi].count(p) == k and alloc.count(1, lo, hi) == k and not scav.count(1, lo, hi):
            owned[lo:hi] = bytes([mark]) * k
            continue
        for i in range(lo, hi):  # some pages changed under us: page by page
            if spans[i] == p and alloc[i] and not scav[i]:
                owned[i] = mark
            else:
                unsettled |= 1 << i
    return owned, unsettled
