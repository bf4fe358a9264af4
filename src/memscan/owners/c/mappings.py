"""The mappings one ``c_regions()`` call reads, and what it has found in
them so far: the regions claimed (never two claims on one byte), glibc's
figures, the counts of what was found and the warnings.

Each allocator's reader (:mod:`.glibc`, :mod:`.arenas`, :mod:`.stacks`,
:mod:`.chunks`, :mod:`.preloaded`) looks at the mappings through one
:class:`Mappings` and records what it finds there.
"""

from __future__ import annotations

import bisect
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ..._types import PERM_R, PERM_S, PERM_W, PERM_X, VMFLAG_BIT, SmapsTable
from ..memory import TargetMemory

#: VmFlags ``ac`` (VM_ACCOUNT: charged to the commit limit), which a
#: MAP_NORESERVE (``nr``) mapping lacks: jemalloc's regions, glibc <= 2.36's
#: thread-arena heaps.
VM_AC = VMFLAG_BIT["ac"]


class LimitReached(Exception):
    """The read cap of one call is reached; caught before c_regions() returns."""


class Row(NamedTuple):
    start: int
    end: int
    perms: int
    flags: int
    name: str
    anon: bool  # private anonymous (inode 0, no name or [anon:...]); [heap]/[stack] not included


def rows(table: SmapsTable) -> List[Row]:
    out = []
    for i in range(len(table)):
        name = table.names[i]
        perms = table.perms[i]
        anon = (
            table.inodes[i] == 0
            and not perms & PERM_S
            and (name == "" or (name.startswith("[anon:") and not name.startswith("[anon_shmem:")))
        )
        out.append(Row(table.starts[i], table.ends[i], perms, table.vmflags[i], name, anon))
    out.sort()
    return out


def is_rw(r: Row) -> bool:
    return r.perms & (PERM_R | PERM_W | PERM_X | PERM_S) == PERM_R | PERM_W


def is_none(r: Row) -> bool:
    return r.perms & (PERM_R | PERM_W | PERM_X) == 0 and not r.perms & PERM_S


def merge(ranges: Iterable[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for a, b in sorted(r for r in ranges if r[0] < r[1]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def overlapping(ranges: List[Tuple[int, int]], start: int, end: int) -> List[Tuple[int, int]]:
    """The ranges (sorted, disjoint) overlapping [start, end)."""
    i = max(bisect.bisect_right(ranges, (start, start)) - 1, 0)
    out = []
    while i < len(ranges) and ranges[i][0] < end:
        if ranges[i][1] > start:
            out.append(ranges[i])
        i += 1
    return out


class Mappings:
    """One c_regions() call: the target's mappings and what was found in them."""

    def __init__(self, pid: int, table: SmapsTable, tgt: TargetMemory, skip: Sequence[Tuple[int, int]]) -> None:
        self.pid = pid
        self.table = table
        self.tgt = tgt
        self.rows = rows(table)
        self.starts = [r.start for r in self.rows]
        self.warnings: List[str] = []
        self.counters: Dict[str, int] = {}
        self.found: Dict[str, int] = {
            "main_arena": 0, "mp_": 0, "arenas": 0, "heaps": 0, "chunks": 0, "chunk_bytes": 0,
            "pthread_stacks": 0, "stacks_by_shape": 0, "pages_probed": 0,
        }
        self.intervals: List[Tuple[int, int, str]] = []
        self.states: List[Tuple[int, int, str]] = []  # glibc arenas' states (CRegions.states)
        self.claimed: List[Tuple[int, int]] = []
        self.has_flags = any(r.flags for r in self.rows)
        self.heap_rows = [r for r in self.rows if r.name == "[heap]"]
        # [heap] is one brk range; its rows (split by mprotect or madvise) are contiguous.
        self.heap_range: Optional[Tuple[int, int]] = None
        if self.heap_rows:
            first, last = self.heap_rows[0], self.heap_rows[-1]
            contiguous = sum(r.end - r.start for r in self.heap_rows) == last.end - first.start
            self.heap_range = (first.start, last.end if contiguous else first.end)
        self.skip = merge(skip)  # sorted, disjoint: not walked

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def claim(self, start: int, end: int, kind: str) -> None:
        if self.is_claimed(start, end):  # cannot happen: callers check first
            raise AssertionError(f"{kind} {start:#x}-{end:#x} overlaps a region already claimed")
        self.intervals.append((start, end, kind))
        bisect.insort(self.claimed, (start, end))

    def claimed_in(self, start: int, end: int) -> List[Tuple[int, int]]:
        """The claimed intervals (sorted, disjoint) overlapping [start, end)."""
        return overlapping(self.claimed, start, end)

    def is_claimed(self, start: int, end: int) -> bool:
        return bool(self.claimed_in(start, end))

    def row_at(self, addr: int) -> Optional[int]:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.rows[i].end:
            return i
        return None

    def covered(self, lo: int, hi: int, pred) -> bool:  # type: ignore[no-untyped-def]
        """[lo, hi) is covered, without gaps, by rows satisfying ``pred``."""
        pos = lo
        while pos < hi:
            i = self.row_at(pos)
            if i is None or not pred(self.rows[i]):
                return False
            pos = self.rows[i].end
        return True
