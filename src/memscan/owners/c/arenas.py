"""glibc's thread arenas in a live process (malloc/arena.c).

Every 64 MiB-aligned address (4 huge pages with ``glibc.malloc.hugetlb=2``
before 2.42, from ``mp_.hp_pagesize``) in an anonymous ``rw-p`` mapping
whose page is present is a ``heap_info`` candidate, kept only when it passes
every check (sizes, mapping shape, the ``prev`` chain, the arena's ``top``
and ``system_mem``, its bins, and the ``next`` ring through ``main_arena``;
VmFlags ``nr`` only warns). An arena whose ``malloc_state`` fails (``top``,
``system_mem``, bins) is read again, up to four times, before it is
rejected: its thread may be allocating.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

from ..._types import VM_NR
from ...kernel.linux import PAGE_SIZE as PAGE
from .glibc import MS_BINS, MS_NEXT, MS_SIZE, MS_SYSTEM_MEM, MS_TOP, NBINS_PAIRS, Glibc
from .mappings import VM_AC, Mappings, is_none, is_rw


class ThreadArenas:
    """The thread arenas of one c_regions() call: their heaps and the ring."""

    def __init__(self, maps: Mappings, glibc: Glibc) -> None:
        self.maps = maps
        self.glibc = glibc
        self.heap_cands: Dict[int, Tuple[int, int, int, int, int, int]] = {}
        self.arena_state: Dict[int, Tuple[int, ...]] = {}
        self.ring_complete = False  # every arena of the ring validated: "arena" is mallinfo2's

    def find_heaps(self) -> Dict[int, List[int]]:
        """Validated thread arenas: ar_ptr -> its heaps' bases."""
        cands: Dict[int, Tuple[int, int, int, int, int, int]] = {}  # base -> (ar, prev, size, mprot, pagesize, hdr)
        for r in self.maps.rows:
            if not (r.anon and is_rw(r)):
                continue
            a = (r.start + self.glibc.heap_max - 1) & ~(self.glibc.heap_max - 1)
            while a < r.end:
                w = self.maps.tgt.words_if_present(a, 6)
                if w is not None:
                    h = self._heap_info(a, w)
                    if h is not None:
                        cands[a] = h
                a += self.glibc.heap_max
        # The prev chains: every heap must lead back to a first heap of its arena.
        arenas: Dict[int, List[int]] = {}
        for a, (ar, prev, *_rest) in cands.items():
            seen = 0
            b, ok = a, True
            while True:
                bar, bprev, _, _, _, hdr = cands[b]
                if bar != ar:
                    ok = False
                    break
                if bprev == 0:
                    ok = bar == b + hdr
                    break
                if bprev not in cands or seen > 4096:
                    ok = False
                    break
                b = bprev
                seen += 1
            if ok:
                arenas.setdefault(ar, []).append(a)
            else:
                self.maps.warn(f"heap_info-like header at {a:#x} rejected: its prev chain does not reach its arena")
        self.heap_cands = cands
        valid: Dict[int, List[int]] = {}
        for ar, bases in arenas.items():
            bases.sort()
            if self._arena_ok(ar, bases, cands):
                valid[ar] = bases
        # A hint only: glibc <= 2.36 maps heaps MAP_NORESERVE (nr,
        # no ac); 2.37+ does not.
        if self.maps.has_flags and self.glibc.version is not None and self.glibc.version <= (2, 36):
            odd = []
            for b in (b for bs in valid.values() for b in bs):
                i = self.maps.row_at(b)
                if i is not None and (not self.maps.rows[i].flags & VM_NR or self.maps.rows[i].flags & VM_AC):
                    odd.append(b)
            if odd:
                self.maps.warn(f"{len(odd)} thread-arena heap(s) lack VmFlags nr (or have ac), unlike glibc "
                               f"{self.glibc.version[0]}.{self.glibc.version[1]}'s (first {odd[0]:#x})")
        return valid

    def _heap_info(self, a: int, w: Tuple[int, ...]) -> Optional[Tuple[int, int, int, int, int, int]]:
        ar, prev, size, mprot, pagesize = w[:5]
        version, heap_max = self.glibc.version, self.glibc.heap_max
        new = version is None or version >= (2, 35)
        old = version is None or version < (2, 35)
        hdr = 0
        if new and (ar == a + 0x30 or (prev and (ar - 0x30) % heap_max == 0)):
            hdr = 0x30
            if pagesize < PAGE or pagesize & (pagesize - 1):
                return None
        elif old and (ar == a + 0x20 or (prev and (ar - 0x20) % heap_max == 0)):
            hdr, pagesize = 0x20, PAGE
        else:
            return None
        if prev == 0 and ar != a + hdr:
            return None
        if prev and (prev % heap_max or prev == a):
            return None
        if not (hdr < size <= mprot <= heap_max) or size % pagesize or mprot % pagesize:
            return None
        if not self.maps.covered(a, a + mprot, lambda r: r.anon and is_rw(r)):
            return None
        if mprot < heap_max and not self.maps.covered(a + mprot, a + heap_max, lambda r: r.anon and is_none(r)):
            return None
        return (ar, prev, size, mprot, pagesize, hdr)

    def _arena_ok(self, ar: int, bases: List[int], cands) -> bool:  # type: ignore[no-untyped-def]
        """The malloc_state check of the arena at ``ar`` with heaps ``bases``. The
        target runs on: a failed check is read again (heap_infos, then the
        malloc_state, close together) up to four times before the arena is
        rejected."""
        why = ""
        for attempt in range(5):
            if attempt:
                for b in bases:
                    w = self.maps.tgt.words_if_present(b, 6)
                    h = None if w is None else self._heap_info(b, w)
                    if h is None or h[0] != ar:
                        self.maps.warn(f"arena at {ar:#x} rejected: the heap_info at {b:#x} changed or went away")
                        return False
                    cands[b] = h
            why = self._arena_check(ar, bases, cands)
            if not why:
                return True
        self.maps.warn(f"arena at {ar:#x} ({len(bases)} heap(s)) rejected: {why}")
        return False

    def _arena_check(self, ar: int, bases: List[int], cands) -> str:  # type: ignore[no-untyped-def]
        data = self.maps.tgt.read_if_present(ar, MS_SIZE)
        if data is None:
            return "its malloc_state is not readable (page not present)"
        ms = struct.unpack(f"<{MS_SIZE // 8}Q", data)
        top = ms[MS_TOP // 8]
        system_mem = ms[MS_SYSTEM_MEM // 8]
        total = sum(cands[b][2] for b in bases)
        holder = next((b for b in bases if b <= top < b + cands[b][2]), None)
        if holder is None:
            return f"top {top:#x} is in none of its heaps"
        w = self.maps.tgt.words_if_present(top, 2)
        if w is None:
            return f"top chunk {top:#x} not readable"
        if top + (w[1] & ~7) != holder + cands[holder][2]:
            return f"top chunk {top:#x} + {w[1] & ~7:#x} does not end its heap at {holder + cands[holder][2]:#x}"
        if system_mem != total:
            return f"system_mem {system_mem} != sum of its heaps' sizes {total}"
        bad = 0
        for j in range(NBINS_PAIRS):
            k = MS_BINS // 8 + 2 * j
            fd, bk = ms[k], ms[k + 1]
            me = ar + MS_BINS + 16 * j - 16
            if fd == me and bk == me:
                continue
            if not (any(b <= fd < b + cands[b][2] for b in bases) and any(b <= bk < b + cands[b][2] for b in bases)):
                bad += 1
        if bad > 2:
            return f"{bad} of its bins point outside its heaps"
        self.arena_state[ar] = ms
        return ""

    def check_ring(self, valid: Dict[int, List[int]]) -> Dict[int, List[int]]:
        """The ``next`` ring (ar+0x870) is circular, through
        every validated arena, with exactly one member outside the heaps:
        ``main_arena``, in libc's writable data (which finds main_arena
        when the signature scan found none)."""
        states = self.arena_state
        if not valid and not self.glibc.main_arena:
            return valid
        start = self.glibc.main_arena or next(iter(valid))
        ring = [start]
        cur = start
        for _ in range(4096):
            if cur in states:
                nxt = states[cur][MS_NEXT // 8]
            else:
                w = self.glibc.libc_words(cur + MS_NEXT, 1) if self.glibc.in_libc_rw(cur) else None
                if w is None:
                    w = self.maps.tgt.words_if_present(cur + MS_NEXT, 1)
                if w is None:
                    self.maps.warn(f"arena ring broken at {cur:#x} (not readable): thread arenas not validated")
                    return {}
                nxt = w[0]
            if nxt == start:
                break
            if nxt in ring:
                self.maps.warn(f"arena ring loops back to {nxt:#x}, not to {start:#x}: thread arenas not validated")
                return {}
            ring.append(nxt)
            cur = nxt
        else:
            self.maps.warn("arena ring does not close within 4096 steps: thread arenas not validated")
            return {}
        outside = [m for m in ring if m not in valid]
        libc_members = [m for m in outside if self.glibc.in_libc_rw(m)]
        if len(libc_members) != 1:
            self.maps.warn(f"arena ring has {len(libc_members)} members in libc's data (want main_arena alone): "
                           "thread arenas not validated")
            return {}
        ring_main = libc_members[0]
        if self.glibc.main_arena and ring_main != self.glibc.main_arena:
            self.maps.warn(f"arena ring names main_arena {ring_main:#x}, the signature scan "
                           f"{self.glibc.main_arena:#x}: thread arenas not validated")
            return {}
        self.glibc.main_arena = ring_main
        others = [m for m in outside if m != ring_main]
        if others:
            self.maps.warn(f"{len(others)} arena(s) in the ring were not validated (first {others[0]:#x}): "
                           "their heaps are not claimed")
        members = set(ring)
        stray = [ar for ar in valid if ar not in members]
        if stray:
            self.maps.warn(f"{len(stray)} arena(s) that validated are not in the arena ring (first {stray[0]:#x}): "
                           "their heaps are not claimed")
        self.ring_complete = not others
        return {ar: bs for ar, bs in valid.items() if ar in members}
