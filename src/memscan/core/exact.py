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

from bisect import bisect_left, bisect_right
from functools import partial
from itertools import compress, count, islice, repeat
from operator import add, and_, eq, ge, itemgetter, lt, ne, neg, not_, sub
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


#: A mapping's piece: a region clipped to the mapping, or a part of it no
#: region claims (detail -1). The same record as Region, so that a region
#: inside a mapping is its own piece, not a copy.
Piece = Region


def combine(sources: Sequence[Sequence[Region]]) -> Tuple[List[Region], int]:
    """One sorted, non-overlapping list from several sources, earlier sources
    winning where they overlap; also the bytes where sources disagreed."""
    claimed: List[Region] = []
    conflict = 0
    for src in sources:
        claimed, disagreed = _claim(claimed, [r for r in src if r.start < r.end])
        conflict += disagreed
    # Neighbours of one (category, detail) become one region.
    starts, ends = list(map(itemgetter(0), claimed)), list(map(itemgetter(1), claimed))
    keys = list(map(itemgetter(2, 3), claimed))
    joins = list(map(and_, map(eq, ends, islice(starts, 1, None)), map(eq, keys, islice(keys, 1, None))))
    if not any(joins):
        return claimed, conflict
    out = claimed[:1]
    for r, join in zip(islice(claimed, 1, None), joins):
        if join:
            out[-1] = out[-1]._replace(end=r.end)
        else:
            out.append(r)
    return out, conflict


def _claim(claimed: List[Region], src: List[Region]) -> Tuple[List[Region], int]:
    """``claimed`` (sorted, disjoint) and what the regions of ``src`` cover
    that it does not; also the bytes of ``claimed`` they cover with another
    category. A region at a time against what is claimed, so that a few
    large regions (a C arena around the whole pages of its free chunks)
    take their gaps between tens of thousands of claims a slice at a time."""
    ordered = sorted(src, key=itemgetter(0))
    if any(map(lt, map(itemgetter(0), islice(ordered, 1, None)), map(itemgetter(1), ordered))):
        # Regions of one source that overlap: the first listed wins, as if
        # the source's halves were two sources.
        half = len(src) // 2
        claimed, first = _claim(claimed, src[:half])
        claimed, second = _claim(claimed, src[half:])
        return claimed, first + second
    if not claimed:
        return ordered, 0
    starts, ends = list(map(itemgetter(0), claimed)), list(map(itemgetter(1), claimed))
    new: List[Region] = []
    conflict = 0
    for r in ordered:
        k0 = bisect_right(ends, r.start)  # the first claim ending after r starts
        k1 = bisect_left(starts, r.end, k0)  # past the last claim starting before r ends
        if k0 == k1:
            new.append(r)
            continue
        over = claimed[k0:k1]
        if list(map(itemgetter(2), over)).count(r.category) != len(over):
            conflict += sum(min(r.end, c.end) - max(r.start, c.start) for c in over if c.category != r.category)
        if r.start < starts[k0]:
            new.append(Region(r.start, starts[k0], r.category, r.detail))
        gap_lo, gap_hi = ends[k0 : k1 - 1], starts[k0 + 1 : k1]
        new.extend(Region(a, b, r.category, r.detail)
                   for a, b in compress(zip(gap_lo, gap_hi), map(lt, gap_lo, gap_hi)))
        if ends[k1 - 1] < r.end:
            new.append(Region(ends[k1 - 1], r.end, r.category, r.detail))
    # Two sorted runs: the sort merges them.
    return sorted(claimed + new, key=itemgetter(0)), conflict


def cut(start: int, end: int, regions: Sequence[Region], starts: Sequence[int], category: int) -> List[Piece]:
    """Cut [start, end) by ``regions`` (sorted, with their ``starts``); what
    no region covers keeps ``category``."""
    k = max(bisect_right(starts, start) - 1, 0)
    if k < len(regions) and regions[k].end <= start:
        k += 1
    inside = regions[k:bisect_left(starts, end, k)]
    if not inside:
        return [Piece(start, end, category, -1)]
    # A heap's regions mostly follow one another without gaps (combine()
    # leaves none inside an arena it claims): the regions themselves are the
    # pieces, found a run at a time, instead of a Piece built per region.
    ends = list(map(itemgetter(1), inside))
    gaps = list(compress(count(), map(ne, ends, islice(map(itemgetter(0), inside), 1, None))))
    out: List[Piece] = []
    if inside[0].start > start:
        out.append(Piece(start, inside[0].start, category, -1))
    at = 0
    for g in gaps:
        out.extend(inside[at : g + 1])
        out.append(Piece(ends[g], inside[g + 1].start, category, -1))
        at = g + 1
    out.extend(inside[at:])
    if out[0].start < start:
        out[0] = out[0]._replace(start=start)
    if out[-1].end > end:
        out[-1] = out[-1]._replace(end=end)
    elif out[-1].end < end:
        out.append(Piece(out[-1].end, end, category, -1))
    return out


def shares(total: int, weights: Sequence[int]) -> List[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder): the
    parts are non-negative and add up to ``total`` exactly."""
    wsum = sum(weights)
    if total == 0 or not weights:
        return [0] * len(weights)
    if wsum == 0:
        weights, wsum = [1] * len(weights), len(weights)
    if total == wsum:  # as when smaps and pagemap count the same pages: no remainders to share out
        return list(weights)
    parts = [total * w // wsum for w in weights]
    rest = total - sum(parts)
    if rest:
        order = sorted(range(len(weights)), key=lambda i: (total * weights[i]) % wsum, reverse=True)
        for i in order[:rest]:
            parts[i] += 1
    return parts


def split_columns(t: SmapsTable, i: int, pieces: Sequence[Piece], counts: Sequence[int]) -> List[List[int]]:
    """The Counters of each piece of mapping ``i`` as columns, one list per
    COUNTER_FIELDS (two columns may be one list); they add up to the mapping's.

    ``counts``: 4 per piece from pagemap (present, swapped, exclusive, zero
    pages). Resident pages weigh rss, pss and anonymous; swapped pages weigh
    swap; exclusive pages uss, the other resident ones shared; LazyFree goes
    to released Go heap pages first (MADV_FREE'd pages stay resident until
    reclaimed, GODEBUG=madvdontneed=0), then to the rest.
    """
    f = t.fields[i * NFIELDS : (i + 1) * NFIELDS]
    n = len(pieces)
    resident = [max(p - z, 0) for p, z in zip(counts[0::4], counts[3::4])]
    swapped = counts[1::4]
    exclusive = list(map(min, counts[2::4], resident))
    if exclusive == resident:  # a private mapping: one list, so that pages() shares its work
        exclusive = resident
    others = list(map(sub, resident, exclusive))
    zeros = [0] * n
    # Of a heap's tens of thousands of pieces, rss, pss and anonymous are
    # most often the same shares of the same weights: each is made once.
    made: Dict[Tuple[int, int], List[int]] = {}

    def pages(value: int, weights: List[int]) -> List[int]:
        # Whole pages by weight; a sub-page remainder (PSS) goes with the largest share.
        if value == 0:
            return zeros
        key = (value, id(weights))
        if key not in made:
            parts = [m * PAGE for m in shares(value // PAGE, weights)]
            if value % PAGE:
                # The first of the largest (share, weight): the largest -index breaks ties.
                parts[-max(zip(parts, weights, map(neg, range(n))))[2]] += value % PAGE
            made[key] = parts
        return made[key]

    lazy = f[F["LazyFree"]]
    if lazy:
        released = [r if p.category == GO_HEAP and p.detail == RELEASED else 0 for r, p in zip(resident, pieces)]
        lazy_released = min(lazy, sum(released) * PAGE)
        lazyfree = list(map(add, pages(lazy_released, released), pages(lazy - lazy_released, resident)))
    else:
        lazyfree = zeros
    columns = {
        "size": [p.end - p.start for p in pieces],
        "rss": pages(f[F["Rss"]], resident),
        "pss": pages(f[F["Pss"]], resident),
        "uss": pages(f[F["Private_Clean"]] + f[F["Private_Dirty"]], exclusive),
        "shared": pages(f[F["Shared_Clean"]] + f[F["Shared_Dirty"]], others),
        "anonymous": pages(f[F["Anonymous"]], resident),
        "swap": pages(f[F["Swap"]], swapped),
        "lazyfree": lazyfree,
        "anon_huge": pages(f[F["AnonHugePages"]], resident),
    }
    return [columns[c] for c in COUNTER_FIELDS]


def state_sums(pieces: Sequence[Piece], columns: Sequence[List[int]]) -> Dict[Tuple[int, int], Counters]:
    """The sum of the ``columns`` (split_columns) over the pieces of each
    (category, detail), in the order they first appear: a few sums over
    whole columns rather than a Counters per piece."""
    keys = list(map(itemgetter(2, 3), pieces))
    states = dict.fromkeys(keys)
    if len(states) == 1:
        return {keys[0]: Counters(*map(sum, columns))}
    sums: Dict[int, List[int]] = {}  # by column (id): one sum per state
    masks = [list(map(eq, keys, repeat(key))) for key in states]
    for col in columns:
        if id(col) not in sums:
            sums[id(col)] = [sum(compress(col, m)) for m in masks]
    return {key: Counters(*(sums[id(col)][j] for col in columns)) for j, key in enumerate(states)}


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
    ranges = [p[:2] for _, pieces in todo for p in pieces]
    # A mapping without shared pages (anonymous private memory nearly
    # always) needs no per-page look at pagemap's exclusive bit.
    shared = [t.fields[i * NFIELDS + F["Shared_Clean"]] + t.fields[i * NFIELDS + F["Shared_Dirty"]] for i, _ in todo]
    private = b"".join(bytes((not sh,)) * len(pieces) for sh, (_, pieces) in zip(shared, todo))
    counts = pagemap.counts(ranges, private) if ranges else []
    minus: Dict[int, Counters] = {}
    plus: Dict[int, Counters] = {}
    detail = {name: Counters() for name in DETAIL}
    c_detail = {name: Counters() for name in C_DETAIL}
    kept: Optional[Dict[int, List[Tuple[Piece, Counters]]]] = {} if keep else None
    at = 0
    for i, pieces in todo:
        columns = split_columns(t, i, pieces, counts[4 * at : 4 * (at + len(pieces))])
        at += len(pieces)
        if kept is not None:
            kept[i] = list(zip(pieces, map(Counters, *columns)))
        minus[cats[i]] = minus.get(cats[i], Counters()) + vma_counters(t, i)
        for (category, state), c in state_sums(pieces, columns).items():
            plus[category] = plus.get(category, Counters()) + c
            if category == GO_HEAP and state >= 0:
                detail[DETAIL[state]] = detail[DETAIL[state]] + c
            elif category == C_MALLOC and state >= 0:
                c_detail[C_DETAIL[state]] = c_detail[C_DETAIL[state]] + c
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


def c_state_regions(states: Sequence[Tuple[int, int, str]]) -> Tuple[List[Region], int]:
    """The regions of the C allocator's states (sorted ``(start, end,
    state)``, CRegions.states): of free chunks their whole pages, and the
    bytes of free chunks outside whole pages (pagemap counts pages: these
    are added to the free state by c_malloc_detail). A fragmented heap has
    a hundred thousand free chunks: whole lists at a time, no loop per chunk."""
    free = list(map(eq, map(itemgetter(2), states), repeat(C_DETAIL[C_FREE])))
    lo = list(map(itemgetter(0), compress(states, free)))
    hi = list(map(itemgetter(1), compress(states, free)))
    # Only a chunk of a page or more can hold a whole page: most are smaller.
    big = list(map(ge, map(sub, hi, lo), repeat(PAGE)))
    first = [(x + PAGE - 1) & -PAGE for x in compress(lo, big)]
    last = [x & -PAGE for x in compress(hi, big)]
    whole = list(map(lt, first, last))
    first, last = list(compress(first, whole)), list(compress(last, whole))
    outside_pages = sum(hi) - sum(lo) - (sum(last) - sum(first))
    # tuple.__new__ makes each record without running namedtuple's __new__ (Python code).
    out = list(map(partial(tuple.__new__, Region), zip(first, last, repeat(C_MALLOC), repeat(C_FREE))))
    out += [Region(s, e, C_MALLOC, C_DETAIL.index(st)) for s, e, st in compress(states, map(not_, free))]
    return out, outside_pages


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
