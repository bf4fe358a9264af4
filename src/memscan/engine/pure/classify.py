"""The layout tier of the pure-Python engine: one category per mapping from
smaps alone (``classify``), and the per-category sums (``accumulate``). The
rules and their sizes live in ``memscan.layout.rules``."""

from __future__ import annotations

from typing import List

from ..._types import (
    ANON_OTHER,
    C_MALLOC,
    CATEGORIES,
    F,
    GO_HEAP,
    GO_RUNTIME,
    MAPPED_FILES,
    NFIELDS,
    PERM_R,
    PERM_S,
    PERM_W,
    SHMEM,
    THREAD_STACKS,
    VM_NH,
    VM_NR,
    LayoutContext,
    SmapsTable,
)
from ...layout.rules import ARENA, GO_HEAP_LIMIT, GUARD_MAX, by_name
from ..protocol import Buffer

__all__ = ["classify", "accumulate"]


def _go_arena_runs(t: SmapsTable, n: int) -> bytearray:
    """Mark the mappings of Go heap arenas: runs of adjacent unnamed private
    anonymous rw-p/---p mappings that start and end on 64 MiB boundaries
    below 2^46 (runtime/malloc.go: heapArenaBytes, arena hints). MAP_NORESERVE (``nr``) marks glibc
    2.36 arenas, never Go's."""
    marks = bytearray(n)
    starts, ends, perms, names, inodes, flags = t.starts, t.ends, t.perms, t.names, t.inodes, t.vmflags
    i = 0
    while i < n:
        if perms[i] & ~(PERM_R | PERM_W) or names[i] or inodes[i] or flags[i] & VM_NR:
            i += 1
            continue
        j = i
        while (
            j + 1 < n
            and starts[j + 1] == ends[j]
            and not perms[j + 1] & ~(PERM_R | PERM_W)
            and not names[j + 1]
            and not inodes[j + 1]
            and not flags[j + 1] & VM_NR
        ):
            j += 1
        if starts[i] % ARENA == 0 and ends[j] % ARENA == 0 and ends[j] <= GO_HEAP_LIMIT:
            for k in range(i, j + 1):
                marks[k] = 1
        i = j + 1
    return marks


def classify(t: SmapsTable, ctx: LayoutContext) -> bytearray:
    """The layout tier: one category per mapping, from smaps alone.

    Order of the rules: ELF .bss intervals; names; files; Go heap arenas;
    pthread stacks (a guard ``---p`` right below an ``rw-p`` of the default
    stack size, or a smaller MAP_STACK one, VmFlags ``nh`` since kernel 6.7);
    glibc thread arenas (64 MiB aligned, ``rw-p`` head and ``---p`` tail);
    jemalloc regions (``nr``); Go runtime reservations and what lies in them;
    the rest is anon_other, or go_runtime in a Go program without C.
    """
    n = len(t)
    cats = bytearray(n)
    starts, ends, perms, names, inodes, devs, flags = (
        t.starts, t.ends, t.perms, t.names, t.inodes, t.devs, t.vmflags,
    )
    arena = _go_arena_runs(t, n) if ctx.go else bytearray(n)
    iv = ctx.intervals
    k = 0
    pending = []  # anonymous private mappings left for the structural rules
    for i in range(n):
        s = starts[i]
        while k < len(iv) and iv[k].end <= s:
            k += 1
        name = names[i]
        if not name and inodes[i] == 0:
            if k < len(iv) and iv[k].start <= s:
                cats[i] = iv[k].category
            elif perms[i] & PERM_S:
                cats[i] = SHMEM
            elif arena[i]:
                cats[i] = GO_HEAP
            else:
                cats[i] = ANON_OTHER
                pending.append(i)
            continue
        c = by_name(name, perms[i], inodes[i], devs[i], ctx) if name else MAPPED_FILES
        cats[i] = ANON_OTHER if c < 0 else c
    if not pending:
        return cats
    rw = PERM_R | PERM_W
    left = []
    for i in pending:
        size = ends[i] - starts[i]
        p = perms[i]
        if p == rw and i > 0 and cats[i - 1] == ANON_OTHER and ends[i - 1] == starts[i] and perms[i - 1] == 0 and not names[i - 1] and inodes[i - 1] == 0:
            guard = ends[i - 1] - starts[i - 1]
            if size == ctx.stack_size or (flags[i] & VM_NH and guard <= GUARD_MAX and size <= ctx.stack_size):
                cats[i] = THREAD_STACKS
                if guard <= GUARD_MAX:
                    cats[i - 1] = THREAD_STACKS
                continue
        if p == rw and starts[i] % ARENA == 0:
            if size == ARENA:
                cats[i] = C_MALLOC
                continue
            j = i + 1
            if (
                j < n
                and starts[j] == ends[i]
                and perms[j] == 0
                and cats[j] == ANON_OTHER
                and not names[j]
                and inodes[j] == 0
                and ends[j] == starts[i] + ARENA
            ):
                cats[i] = C_MALLOC
                cats[j] = C_MALLOC
                continue
        if ctx.jemalloc and p == rw and flags[i] & VM_NR:
            cats[i] = C_MALLOC
            continue
        left.append(i)
    if not ctx.go:
        return cats
    for i in left:
        if cats[i] != ANON_OTHER:
            continue
        if ctx.go_only:
            cats[i] = GO_RUNTIME
        elif perms[i] == 0 and ends[i] - starts[i] >= ARENA:
            # The page-summary and scavenge-index reservations (~1.1 GiB).
            cats[i] = GO_RUNTIME
    for i in left:
        if cats[i] != ANON_OTHER or perms[i] != rw:
            continue
        below = i > 0 and ends[i - 1] == starts[i] and cats[i - 1] == GO_RUNTIME and perms[i - 1] == 0
        above = i + 1 < n and starts[i + 1] == ends[i] and cats[i + 1] == GO_RUNTIME and perms[i + 1] == 0
        if below or above or flags[i] & VM_NH:
            # Islands mapped inside the reservations; the heap and page-alloc
            # indexes are MADV_NOHUGEPAGE'd while the heap is small.
            cats[i] = GO_RUNTIME
    return cats


def accumulate(t: SmapsTable, cats: Buffer) -> List[int]:
    """Sum each mapping into its category: a flat list of (10 + 1) x 9 ints,
    the Counters of each category in CATEGORIES order, then the total."""
    ncat = len(CATEGORIES)
    out = [0] * ((ncat + 1) * 9)
    fields = t.fields
    size, rss, pss = F["Size"], F["Rss"], F["Pss"]
    pc, pd, sc, sd = F["Private_Clean"], F["Private_Dirty"], F["Shared_Clean"], F["Shared_Dirty"]
    anon, swap, lazy, huge = F["Anonymous"], F["Swap"], F["LazyFree"], F["AnonHugePages"]
    for i in range(len(t)):
        r = i * NFIELDS
        for b in (cats[i] * 9, ncat * 9):
            out[b] += fields[r + size]
            out[b + 1] += fields[r + rss]
            out[b + 2] += fields[r + pss]
            out[b + 3] += fields[r + pc] + fields[r + pd]
            out[b + 4] += fields[r + sc] + fields[r + sd]
            out[b + 5] += fields[r + anon]
            out[b + 6] += fields[r + swap]
            out[b + 7] += fields[r + lazy]
            out[b + 8] += fields[r + huge]
    return out
