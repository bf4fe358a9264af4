"""The exact tier's Go heap: arena mappings split by the runtime's page states.

A Go heap arena is one mapping to smaps, however its pages are used. The
runtime's own structures (read by ``goheap``) say which 8 KiB pages hold
objects, goroutine stacks, free or released memory; pagemap says which of
them are resident, swapped or exclusive. Each arena mapping is cut into
pieces by state, and the mapping's smaps counters are shared out among the
pieces in proportion to their pages, so that the pieces add up to the
mapping exactly and every partition sum of the layout tier still holds.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence, Tuple

from ._types import ANON_OTHER, COUNTER_FIELDS, GO_HEAP, GO_RUNTIME, NFIELDS, PERM_R, PERM_W, F, Counters, SmapsTable

PAGE = 4096
DETAIL = ("objects", "stacks", "free", "released", "reserved")
RESERVED = 4  # index in DETAIL; goheap's states are 0..3


class Piece(NamedTuple):
    start: int
    end: int
    detail: int  # index in DETAIL, or -1: outside every arena


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


def pieces_of(start: int, end: int, rw: bool, states: Sequence[Tuple[int, int, int]], arenas: Sequence[int],
              arena_bytes: int) -> List[Piece]:
    """Cut the mapping [start, end) by the runtime's page states.

    ``states``: sorted (start, end, state) intervals; ``arenas``: arena
    bases. Arena space mapped PROT_NONE is reserved; space outside every
    arena gets detail -1.
    """
    out: List[Piece] = []
    pos = start
    for a in sorted(arenas):
        lo, hi = max(a, start), min(a + arena_bytes, end)
        if lo >= hi:
            continue
        if pos < lo:
            out.append(Piece(pos, lo, -1))
        if not rw:
            out.append(Piece(lo, hi, RESERVED))
        else:
            cur = lo
            for s, e, st in states:
                s, e = max(s, lo), min(e, hi)
                if s >= e:
                    continue
                if cur < s:
                    out.append(Piece(cur, s, RESERVED))
                out.append(Piece(s, e, st))
                cur = e
            if cur < hi:
                out.append(Piece(cur, hi, RESERVED))
        pos = hi
    if pos < end:
        out.append(Piece(pos, end, -1))
    return _merged(out)


def _merged(pieces: List[Piece]) -> List[Piece]:
    out: List[Piece] = []
    for p in pieces:
        if out and out[-1].detail == p.detail and out[-1].end == p.start:
            out[-1] = Piece(out[-1].start, p.end, p.detail)
        else:
            out.append(p)
    return out


def split_counters(t: SmapsTable, i: int, pieces: Sequence[Piece], counts: Sequence[int]) -> List[Counters]:
    """The Counters of each piece of mapping ``i``; they add up to the mapping's.

    ``counts``: 4 per piece from pagemap (present, swapped, exclusive, zero
    pages). Resident pages weigh rss, pss and anonymous; swapped pages weigh
    swap; exclusive pages uss, the other resident ones shared; LazyFree goes
    to released pages first (MADV_FREE'd pages stay resident until reclaimed,
    GODEBUG=madvdontneed=0), then to the rest.
    """
    f = t.fields[i * NFIELDS : (i + 1) * NFIELDS]
    resident = [max(counts[4 * k] - counts[4 * k + 3], 0) for k in range(len(pieces))]
    swapped = [counts[4 * k + 1] for k in range(len(pieces))]
    exclusive = [min(counts[4 * k + 2], resident[k]) for k in range(len(pieces))]
    others = [r - x for r, x in zip(resident, exclusive)]
    released = [r if p.detail == 3 else 0 for r, p in zip(resident, pieces)]

    def pages(value: int, weights: Sequence[int]) -> List[int]:
        # Share out whole pages; the sub-page remainder (PSS) goes with the largest share.
        parts = [n * PAGE for n in shares(value // PAGE, weights)]
        if value % PAGE:
            parts[max(range(len(parts)), key=lambda k: (parts[k], weights[k]))] += value % PAGE
        return parts

    lazy = f[F["LazyFree"]]
    lazy_released = min(lazy, sum(released) * PAGE)
    lazy_parts = [a + b for a, b in zip(pages(lazy_released, released), pages(lazy - lazy_released, resident))]
    columns = {
        "size": [p.end - p.start for p in pieces],
        "rss": pages(f[F["Rss"]], resident),
        "pss": pages(f[F["Pss"]], resident),
        "uss": pages(f[F["Private_Clean"]] + f[F["Private_Dirty"]], exclusive),
        "shared": pages(f[F["Shared_Clean"]] + f[F["Shared_Dirty"]], others),
        "anonymous": pages(f[F["Anonymous"]], resident),
        "swap": pages(f[F["Swap"]], swapped),
        "lazyfree": lazy_parts,
        "anon_huge": pages(f[F["AnonHugePages"]], resident),
    }
    return [Counters(*(columns[c][k] for c in COUNTER_FIELDS)) for k in range(len(pieces))]


def vma_counters(t: SmapsTable, i: int) -> Counters:
    """The Counters of mapping ``i`` as a whole (what accumulate() adds)."""
    f = t.fields[i * NFIELDS : (i + 1) * NFIELDS]
    return Counters(
        f[F["Size"]], f[F["Rss"]], f[F["Pss"]], f[F["Private_Clean"]] + f[F["Private_Dirty"]],
        f[F["Shared_Clean"]] + f[F["Shared_Dirty"]], f[F["Anonymous"]], f[F["Swap"]], f[F["LazyFree"]],
        f[F["AnonHugePages"]],
    )


class GoHeapSplit(NamedTuple):
    """What splitting the arenas changes: per category, what to take away
    (whole mappings) and add (pieces); and the Go heap detail."""

    minus: Dict[int, Counters]
    plus: Dict[int, Counters]
    detail: Dict[str, Counters]


def split_go_heap(t: SmapsTable, cats: bytearray, states: Sequence[Tuple[int, int, int]], arenas: Sequence[int],
                  arena_bytes: int, pagemap, outside: int) -> GoHeapSplit:  # type: ignore[no-untyped-def]
    """Split every mapping that touches a Go arena, or that the layout tier
    put in go_heap, by the runtime's page states.

    ``outside``: the category of go_heap-classified memory that no arena
    covers (GO_RUNTIME in a Go-only program, else ANON_OTHER).
    """
    lo = min(arenas) if arenas else 0
    hi = max(arenas) + arena_bytes if arenas else 0
    minus: Dict[int, Counters] = {}
    plus: Dict[int, Counters] = {}
    detail = {name: Counters() for name in DETAIL}
    rw = PERM_R | PERM_W
    for i in range(len(t)):
        start, end = t.starts[i], t.ends[i]
        touches = end > lo and start < hi and any(a < end and start < a + arena_bytes for a in arenas)
        if not touches and cats[i] != GO_HEAP:
            continue
        if touches and t.names[i] and not t.names[i].startswith("[anon: Go: heap"):
            continue  # a file or named mapping inside arena space is not heap
        pieces = pieces_of(start, end, t.perms[i] == rw, states, arenas, arena_bytes)
        counts = pagemap.counts([(p.start, p.end) for p in pieces])
        parts = split_counters(t, i, pieces, counts)
        minus[cats[i]] = minus.get(cats[i], Counters()) + vma_counters(t, i)
        for p, c in zip(pieces, parts):
            if p.detail < 0:
                cat = outside if cats[i] == GO_HEAP else cats[i]
            else:
                cat = GO_HEAP
                detail[DETAIL[p.detail]] = detail[DETAIL[p.detail]] + c
            plus[cat] = plus.get(cat, Counters()) + c
    return GoHeapSplit(minus, plus, detail)


def outside_category(go_only: bool) -> int:
    return GO_RUNTIME if go_only else ANON_OTHER


def apply(categories: Dict[str, Counters], names: Sequence[str], split: GoHeapSplit) -> Dict[str, Counters]:
    """The categories after the split: whole mappings out, pieces in."""
    out = dict(categories)
    for cat, c in split.minus.items():
        out[names[cat]] = Counters(*(a - b for a, b in zip(out[names[cat]], c)))
    for cat, c in split.plus.items():
        out[names[cat]] = out[names[cat]] + c
    return out
