"""The exact tier: mappings split where their pages belong to different owners.

The kernel merges neighbouring anonymous mappings, and a Go heap arena is
one mapping however its pages are used, so a mapping is the wrong unit.
Readers of the owners' own structures (``owners.go.heap``: the Go heap's
page states; ``owners.go.runtime``: the runtime's off-heap structures;
``owners.c``: glibc's arenas, mmapped chunks and thread stacks) give address regions;
this module cuts the mappings they touch into pieces, counts each piece's
pages in pagemap, and shares the mapping's smaps counters out among its
pieces in proportion to those pages, so that the pieces add up to the
mapping exactly and every partition sum of the layout tier still holds.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from .._types import (ANON_OTHER, C_MALLOC, CATEGORIES, COUNTER_FIELDS, GO_HEAP, GO_RUNTIME, NFIELDS, F, Counters,
                      SmapsTable)
from .snapshot import Part

PAGE = 4096
DETAIL = ("objects", "stacks", "free", "released", "reserved")
RELEASED = 3  # index in DETAIL (owners.go.heap's states are the same indices)
# The C allocator's states (owners.c: CRegions.states), indexed by a
# C_MALLOC region's detail: in use (tcache included, as mallinfo2 counts),
# free (free chunks and top chunks), reserved (a thread-arena heap's
# address space past its size) and unassigned (c_malloc memory no
# allocator structure splits).
C_DETAIL = ("in_use", "free", "reserved", "unassigned")
C_IN_USE, C_FREE, C_RESERVED, C_UNASSIGNED = range(len(C_DETAIL))


class Region(NamedTuple):
    """Memory an owner's structures say is theirs: [start, end) is
    ``category``; ``detail`` indexes DETAIL for the Go heap, C_DETAIL for
    c_malloc, else -1."""

    start: int
    end: int
    category: int
    detail: int = -1


class Piece(NamedTuple):
    start: int
    end: int
    category: int
    detail: int


def combine(sources: Sequence[Sequence[Region]]) -> Tuple[List[Region], int]:
    """One sorted, non-overlapping list from several sources, earlier sources
    winning where they overlap; also the bytes where sources disagreed."""
    bounds = sorted({x for src in sources for r in src for x in (r.start, r.end)})
    if not bounds:
        return [], 0
    owner: List = [None] * (len(bounds) - 1)
    conflict = 0
    for src in sources:
        for r in src:
            lo, hi = bisect_right(bounds, r.start) - 1, bisect_right(bounds, r.end) - 1
            for k in range(lo, hi):
                if owner[k] is None:
                    owner[k] = r
                elif owner[k].category != r.category:
                    conflict += bounds[k + 1] - bounds[k]
    out: List[Region] = []
    for k, r in enumerate(owner):
        if r is None:
            continue
        if out and out[-1].end == bounds[k] and (out[-1].category, out[-1].detail) == (r.category, r.detail):
            out[-1] = out[-1]._replace(end=bounds[k + 1])
        else:
            out.append(Region(bounds[k], bounds[k + 1], r.category, r.detail))
    return out, conflict


def cut(start: int, end: int, regions: Sequence[Region], starts: Sequence[int], category: int) -> List[Piece]:
    """Cut [start, end) by ``regions`` (sorted, with their ``starts``); what
    no region covers keeps ``category``."""
    out: List[Piece] = []
    pos = start
    k = max(bisect_right(starts, start) - 1, 0)
    while k < len(regions) and regions[k].start < end:
        r = regions[k]
        lo, hi = max(r.start, start), min(r.end, end)
        if lo < hi:
            if pos < lo:
                out.append(Piece(pos, lo, category, -1))
            out.append(Piece(lo, hi, r.category, r.detail))
            pos = hi
        k += 1
    if pos < end:
        out.append(Piece(pos, end, category, -1))
    return out


def shares(total: int, weights: Sequence[int]) -> List[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder): the
    parts are non-negative and add up to ``total`` exactly."""
    wsum = sum(weights)
    if total == 0 or not weights:
        return [0] * len(weights)
    if wsum == 0:
        weights, wsum = [1] * len(weights), len(weights)
    parts = [total * w // wsum for w in weights]
    rest = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (total * weights[i]) % wsum, reverse=True)
    for i in order[:rest]:
        parts[i] += 1
    return parts


def split_counters(t: SmapsTable, i: int, pieces: Sequence[Piece], counts: Sequence[int]) -> List[Counters]:
    """The Counters of each piece of mapping ``i``; they add up to the mapping's.

    ``counts``: 4 per piece from pagemap (present, swapped, exclusive, zero
    pages). Resident pages weigh rss, pss and anonymous; swapped pages weigh
    swap; exclusive pages uss, the other resident ones shared; LazyFree goes
    to released Go heap pages first (MADV_FREE'd pages stay resident until
    reclaimed, GODEBUG=madvdontneed=0), then to the rest.
    """
    f = t.fields[i * NFIELDS : (i + 1) * NFIELDS]
    n = len(pieces)
    resident = [max(counts[4 * k] - counts[4 * k + 3], 0) for k in range(n)]
    swapped = [counts[4 * k + 1] for k in range(n)]
    exclusive = [min(counts[4 * k + 2], resident[k]) for k in range(n)]
    others = [r - x for r, x in zip(resident, exclusive)]
    released = [r if p.category == GO_HEAP and p.detail == RELEASED else 0 for r, p in zip(resident, pieces)]

    def pages(value: int, weights: Sequence[int]) -> List[int]:
        # Whole pages by weight; a sub-page remainder (PSS) goes with the largest share.
        parts = [m * PAGE for m in shares(value // PAGE, weights)]
        if value % PAGE:
            parts[max(range(n), key=lambda k: (parts[k], weights[k]))] += value % PAGE
        return parts

    lazy = f[F["LazyFree"]]
    lazy_released = min(lazy, sum(released) * PAGE)
    columns = {
        "size": [p.end - p.start for p in pieces],
        "rss": pages(f[F["Rss"]], resident),
        "pss": pages(f[F["Pss"]], resident),
        "uss": pages(f[F["Private_Clean"]] + f[F["Private_Dirty"]], exclusive),
        "shared": pages(f[F["Shared_Clean"]] + f[F["Shared_Dirty"]], others),
        "anonymous": pages(f[F["Anonymous"]], resident),
        "swap": pages(f[F["Swap"]], swapped),
        "lazyfree": [a + b for a, b in zip(pages(lazy_released, released), pages(lazy - lazy_released, resident))],
        "anon_huge": pages(f[F["AnonHugePages"]], resident),
    }
    return [Counters(*(columns[c][k] for c in COUNTER_FIELDS)) for k in range(n)]


def vma_counters(t: SmapsTable, i: int) -> Counters:
    """The Counters of mapping ``i`` as a whole (what accumulate() adds)."""
    f = t.fields[i * NFIELDS : (i + 1) * NFIELDS]
    return Counters(
        f[F["Size"]], f[F["Rss"]], f[F["Pss"]], f[F["Private_Clean"]] + f[F["Private_Dirty"]],
        f[F["Shared_Clean"]] + f[F["Shared_Dirty"]], f[F["Anonymous"]], f[F["Swap"]], f[F["LazyFree"]],
        f[F["AnonHugePages"]],
    )


class Split(NamedTuple):
    """What splitting changes: per category what to take away (whole
    mappings) and add (their pieces); and the Go heap detail (None where
    no Go runtime was read). ``regions``
    are those the split was made by (a sampler re-cuts new mappings by them)."""

    minus: Dict[int, Counters]
    plus: Dict[int, Counters]
    detail: Optional[Dict[str, Counters]]
    regions: Sequence[Region] = ()
    #: c_malloc's pieces by C_DETAIL state (those with a state only).
    c_detail: Optional[Dict[str, Counters]] = None
    #: Each split mapping's pieces with their Counters, by mapping index
    #: (kept only when asked: ``split(keep=True)``).
    pieces: Optional[Dict[int, List[Tuple[Piece, Counters]]]] = None


def cut_mappings(t: SmapsTable, cats: bytearray, regions: Sequence[Region], outside: int) -> List[Tuple[int, List[Piece]]]:
    """The mappings that ``regions`` split, each with its pieces: every
    anonymous mapping a region touches, or that the layout tier put in
    go_heap (its unclaimed parts get ``outside``)."""
    starts = [r.start for r in regions]
    ends = [r.end for r in regions]  # sorted too: the regions do not overlap
    todo: List[Tuple[int, List[Piece]]] = []
    for i in range(len(t)):
        name = t.names[i]
        if t.inodes[i] or (name and not name.startswith("[anon:") and name != "[heap]"):
            continue  # files, [stack], [vdso]: their layout category stands
        start, end = t.starts[i], t.ends[i]
        k = bisect_right(ends, start)  # the first region ending after start
        touched = k < len(regions) and regions[k].start < end
        if not touched and cats[i] != GO_HEAP:
            continue
        default = outside if cats[i] == GO_HEAP else cats[i]
        cut_up = cut(start, end, regions, starts, default)
        if len(cut_up) == 1 and cut_up[0].category == cats[i] and cut_up[0].detail < 0:
            continue
        todo.append((i, cut_up))
    return todo


def split(t: SmapsTable, cats: bytearray, regions: Sequence[Region], pagemap, outside: int,  # type: ignore[no-untyped-def]
          keep: bool = False) -> Split:
    """Split every anonymous mapping that a region touches, or that the
    layout tier put in go_heap, by ``regions``.

    ``outside``: the category of go_heap-classified memory that no region
    claims (GO_RUNTIME in a Go-only program, else ANON_OTHER). ``keep``:
    also return each piece's Counters (``Split.pieces``).
    """
    todo = cut_mappings(t, cats, regions, outside)
    ranges = [(p.start, p.end) for _, pieces in todo for p in pieces]
    # A mapping without shared pages (anonymous private memory nearly
    # always) needs no per-page look at pagemap's exclusive bit.
    shared = [t.fields[i * NFIELDS + F["Shared_Clean"]] + t.fields[i * NFIELDS + F["Shared_Dirty"]] for i, _ in todo]
    private = bytes(not sh for sh, (_, pieces) in zip(shared, todo) for _ in pieces)
    counts = pagemap.counts(ranges, private) if ranges else []
    minus: Dict[int, Counters] = {}
    plus: Dict[int, Counters] = {}
    detail = {name: Counters() for name in DETAIL}
    c_detail = {name: Counters() for name in C_DETAIL}
    kept: Optional[Dict[int, List[Tuple[Piece, Counters]]]] = {} if keep else None
    at = 0
    for i, pieces in todo:
        parts = split_counters(t, i, pieces, counts[4 * at : 4 * (at + len(pieces))])
        at += len(pieces)
        if kept is not None:
            kept[i] = list(zip(pieces, parts))
        minus[cats[i]] = minus.get(cats[i], Counters()) + vma_counters(t, i)
        for p, c in zip(pieces, parts):
            plus[p.category] = plus.get(p.category, Counters()) + c
            if p.category == GO_HEAP and p.detail >= 0:
                detail[DETAIL[p.detail]] = detail[DETAIL[p.detail]] + c
            elif p.category == C_MALLOC and p.detail >= 0:
                c_detail[C_DETAIL[p.detail]] = c_detail[C_DETAIL[p.detail]] + c
    return Split(minus, plus, detail, regions, c_detail, kept)


def parts(t: SmapsTable, cats: bytearray, pieces: Dict[int, List[Tuple[Piece, Counters]]]) -> List[Part]:
    """Every mapping as the figures count it: whole, in its layout
    category, or in the ``pieces`` the exact tier split it into (by
    mapping index: Split.pieces), each with the state its owner gives it."""
    out = []
    for i in range(len(t)):
        whole = [(Piece(t.starts[i], t.ends[i], cats[i], -1), vma_counters(t, i))]
        for p, c in pieces.get(i, whole):
            states = DETAIL if p.category == GO_HEAP else C_DETAIL if p.category == C_MALLOC else ()
            state = states[p.detail] if states and p.detail >= 0 else None
            out.append(Part(p.start, p.end, CATEGORIES[p.category], state, t.names[i], c))
    return out


def free_pages(free: Sequence[Tuple[int, int]]) -> Tuple[List[Region], int]:
    """The whole pages of free chunks (sorted byte ranges) as C_FREE regions,
    and the bytes of free chunks outside whole pages (pagemap counts pages:
    these are added to the free state by c_malloc_detail)."""
    out: List[Region] = []
    partial = 0
    for lo, hi in free:
        a, b = -(-lo // PAGE) * PAGE, hi // PAGE * PAGE
        if a < b:
            out.append(Region(a, b, C_MALLOC, C_FREE))
        partial += hi - lo - max(b - a, 0)
    return out, partial


# What moves with the bytes of free chunks that share pages with chunks in
# use: those pages are resident (a free chunk's header and its successor's
# prev_size are written by free()), private and anonymous.
_MOVED = ("size", "rss", "pss", "uss", "anonymous")


def _move(out: Dict[str, Counters], src: str, dst: str, n: int, fields: Sequence[str]) -> None:
    """Move ``n`` bytes of each of ``fields`` (at most what ``src`` has) from state ``src`` to ``dst``."""
    a, b = out[src].to_dict(), out[dst].to_dict()
    for f in fields:
        m = min(n, a[f])
        a[f] -= m
        b[f] += m
    out[src], out[dst] = Counters(**a), Counters(**b)


def c_malloc_detail(pieces: Dict[str, Counters], c_malloc: Counters, partial: int,
                    lazy_free: bool = False) -> Dict[str, Counters]:
    """The c_malloc states: ``pieces`` (split.c_detail) with the ``partial``
    bytes of free chunks moved from in_use to free, and what no other state
    claims in ``unassigned``; they add up to ``c_malloc`` exactly.
    ``lazy_free``: an allocator whose chunks are not read (jemalloc,
    tcmalloc): the unassigned pages it purged with MADV_FREE (LazyFree) are
    free all the same."""
    out = dict(pieces)
    _move(out, "in_use", "free", partial, _MOVED)
    claimed = out["in_use"] + out["free"] + out["reserved"]
    # Everything else of the category: the pieces marked unassigned, and
    # c_malloc mappings no allocator structure reached.
    out["unassigned"] = Counters(*(a - b for a, b in zip(c_malloc, claimed)))
    if lazy_free:
        _move(out, "unassigned", "free", out["unassigned"].lazyfree, _MOVED + ("lazyfree",))
    return out


def outside_category(go_only: bool) -> int:
    return GO_RUNTIME if go_only else ANON_OTHER


def apply(categories: Dict[str, Counters], names: Sequence[str], s: Split) -> Dict[str, Counters]:
    """The categories after the split: whole mappings out, pieces in."""
    out = dict(categories)
    for cat, c in s.minus.items():
        out[names[cat]] = Counters(*(a - b for a, b in zip(out[names[cat]], c)))
    for cat, c in s.plus.items():
        out[names[cat]] = out[names[cat]] + c
    return out


# A Sampler's count groups: the categories, then the Go heap's states.
NCAT = len(CATEGORIES)
GROUPS = NCAT + len(DETAIL)
MERGE_GAP = 1 << 20


class Intervals:
    """A classification as a Sampler counts it, cached between its ticks:
    sorted address ranges and the group of each (a category, or NCAT + a
    Go heap state; ``regions`` None: the layout tier's categories alone).
    Neighbours of one group less than MERGE_GAP apart are merged: what lies
    between two mappings is unmapped, so has no pages (a kernel without
    PAGEMAP_SCAN reads 8 bytes of pagemap per page of it, hence the bound)."""

    __slots__ = ("ranges", "groups", "private", "tier")

    def __init__(self, table: SmapsTable, cats: bytearray, regions: Optional[Sequence[Region]],
                 outside: int) -> None:
        ranges: List[Tuple[int, int]] = []
        groups = bytearray()
        cut = dict(cut_mappings(table, cats, regions, outside)) if regions is not None else {}

        def add(start: int, end: int, group: int) -> None:
            if groups and groups[-1] == group and start - ranges[-1][1] <= MERGE_GAP:
                ranges[-1] = (ranges[-1][0], end)
            else:
                ranges.append((start, end))
                groups.append(group)

        starts, ends = table.starts, table.ends
        for i in range(len(table)):
            pieces = cut.get(i)
            if pieces is None:
                add(starts[i], ends[i], cats[i])
                continue
            for p in pieces:
                add(p.start, p.end, NCAT + p.detail if p.category == GO_HEAP and p.detail >= 0 else p.category)
        self.ranges = ranges
        self.groups = bytes(groups)
        # Only resident pages are wanted, not which are exclusive: marking
        # every range private spares page_counts its pread of bit 56.
        self.private = b"\x01" * len(ranges)
        self.tier = "exact" if regions is not None else "layout"
