"""The free chunks of one glibc arena, as ``mallinfo2()`` finds them
(malloc/malloc.c, int_mallinfo): the fastbins, the regular bins (unsorted,
small and large) and the top chunk.

Only the free lists are followed, never every chunk: one 24-byte read per
free chunk (prev_size, size, fd), on pages pagemap says are present. Chunks
in a thread's tcache are marked in use and sit in no bin, so they count as
in use, as in mallinfo2.

Every chunk met is checked: it must be 16-aligned, lie inside one of the
arena's heaps with its whole size, have the size its bin holds (a fastbin
one size, a small bin one size, a large bin at least MIN_LARGE_SIZE), and
no chunk may be met twice (a cycle in its list) or overlap another (which
a chunk in two lists does); a list longer than the arena could hold is a
cycle too. The first failure gives up on the whole arena: its free lists
are then not trusted (:class:`BadList` says why).

Those reads are the cost of a fragmented arena, and cannot be batched:
each needs the fd the one before it read, and /proc/PID/mem has no vectored
read. Nor are neighbouring headers worth reading whole pages for: in
tests/cprogs/fragments.c (130,000 free chunks in 850 MiB) the headers lie
on 102,000 distinct 4 KiB pages, fewer than one in ten within 4 KiB of the
one before it in its list, and a 4 KiB read costs 1.4 times a 24-byte one
(Linux 6.18: about 2 us either way, mostly the syscall and mem_rw()'s page
walk), so reading pages would cost more than it saves.
"""

from __future__ import annotations

import bisect
import os
import struct
from itertools import islice, repeat
from operator import itemgetter, lt
from typing import List, Optional, Sequence, Tuple

from ...kernel.linux import PAGE_SIZE as PAGE
from .glibc import MS_BINS, MS_TOP, NBINS_PAIRS
from .mappings import Mappings

# malloc_state.fastbinsY[NFASTBINS] (glibc 2.27+ x86_64: after mutex,
# flags and have_fastchunks); NFASTBINS is 10 (MAX_FAST_SIZE 160).
MS_FASTBINS = 0x10
NFASTBINS = 10
MINSIZE = 32
MIN_LARGE_SIZE = 64 * 16  # NSMALLBINS * SMALLBIN_WIDTH (malloc/malloc.c)
SIZE_BITS = 7
HEADER = 24  # prev_size, size, fd
ANY_SIZE = 1 << 64

_CHUNK = struct.Struct("<QQQ")


class BadList(Exception):
    """A free list of the arena does not validate (corrupt, cyclic, or
    changed while read)."""


class Arena:
    """One arena's free chunks: ``heaps`` are its heaps' (start, end), sorted."""

    def __init__(self, maps: Mappings, addr: int, state: Sequence[int], heaps: List[Tuple[int, int]],
                 safe_linking: Optional[bool]) -> None:
        self.maps = maps
        self.addr = addr
        self.state = state
        self.heaps = heaps
        self.starts = [h[0] for h in heaps]
        # glibc 2.32+ mangles the fastbin (and tcache) fd: PROTECT_PTR(&fd, p) = (&fd >> 12) ^ p.
        self.safe_linking = safe_linking
        self.present: List[Tuple[int, int]] = []
        for lo, hi in heaps:
            self.present.extend(maps.tgt.present(lo & ~(PAGE - 1), (hi + PAGE - 1) & ~(PAGE - 1)))
        self.present_starts = [p[0] for p in self.present]
        self.budget = sum(hi - lo for lo, hi in heaps) // MINSIZE + 1  # chunks the arena can hold

    def free_chunks(self) -> List[Tuple[int, int]]:
        """Sorted, disjoint (start, end) of every free chunk and the top chunk.
        Raises BadList."""
        out: List[Tuple[int, int]] = []
        for i in range(NFASTBINS):
            size = (i + 2) * 16
            self._list(self.state[MS_FASTBINS // 8 + i], 0, size, size, f"fastbin {i}", out, fastbin=True)
        for j in range(NBINS_PAIRS):
            idx = j + 1  # bin 1 is the unsorted bin, 2..63 small, 64.. large
            if idx == 1:
                lo, hi, what = MINSIZE, ANY_SIZE, "unsorted bin"
            elif idx < 64:
                lo, hi, what = idx * 16, idx * 16, f"small bin {idx}"
            else:
                lo, hi, what = MIN_LARGE_SIZE, ANY_SIZE, f"large bin {idx}"
            head = self.addr + MS_BINS + 16 * j - 16  # the bin as a chunk: its fd is bins[2j]
            self._list(self.state[MS_BINS // 8 + 2 * j], head, lo, hi, what, out)
        self._follow(self.state[MS_TOP // 8], -1, MINSIZE, ANY_SIZE, "the top chunk", False, out, 1)
        # By start alone: comparing two ints, not two tuples, a third of the
        # sort's time over a hundred thousand chunks; no two valid chunks
        # share a start (the overlap check below).
        out.sort(key=itemgetter(0))
        if any(map(lt, map(itemgetter(0), islice(out, 1, None)), map(itemgetter(1), out))):
            for (_, a1), (b0, _) in zip(out, out[1:]):
                if b0 < a1:  # also a chunk in two lists, or the top chunk in one
                    raise BadList(f"free chunks overlap at {b0:#x}")
        return out

    def _list(self, p: int, stop: int, lo: int, hi: int, what: str, out: List[Tuple[int, int]],
              fastbin: bool = False) -> None:
        """The chunks of one bin's list, from ``p`` to ``stop``, into ``out``."""
        if self._follow(p, stop, lo, hi, what, fastbin, out, self.budget - len(out)) != stop:
            raise BadList("more free chunks than the arena can hold (a cycle)")

    def _follow(self, p: int, stop: int, lo: int, hi: int, what: str, fastbin: bool,
                out: List[Tuple[int, int]], steps: int) -> int:
        """Follow fd from ``p`` until ``stop``, at most ``steps`` chunks, each
        of size ``lo`` to ``hi`` (``what`` holds them), into ``out``; the
        pointer where it stopped.

        The hot loop of the walk, kept to little more than its pread: a
        chunk in the run of present pages of the one before it is checked
        by a few comparisons, any other by :meth:`_where` (which says what
        is wrong); the reads are charged to the cap together, after the
        walk. A cycle is found as Brent's algorithm finds one, comparing
        each pointer with the one saved at every power of two steps: far
        cheaper than a set of every chunk met.
        """
        tgt = self.maps.tgt
        room = tgt.room(HEADER)
        pread, mem, unpack, append = os.pread, tgt.mem, _CHUNK.unpack, out.append
        run_lo = run_hi = end = reads = 0
        mark, power = -1, 1
        try:
            for _ in repeat(None, min(steps, room)):
                if p == stop:
                    return p
                if p == mark:
                    raise BadList(f"chunk {p:#x} met twice (a cycle)")
                if p & 15 or not (run_lo <= p and p + HEADER <= run_hi):
                    run_lo, run_hi, end = self._where(p)
                try:
                    data = pread(mem, HEADER, p)
                except OSError:
                    data = b""
                reads += 1
                if len(data) != HEADER:
                    raise BadList(f"chunk {p:#x} went away")
                _, size_word, fd = unpack(data)
                size = size_word & ~SIZE_BITS
                if not (lo <= size <= hi and not size & 15 and p + size <= end):
                    if size < MINSIZE or size & 15 or p + size > end:
                        raise BadList(f"chunk {p:#x} has size word {size_word:#x}")
                    raise BadList(f"{what} holds a chunk of {size} bytes at {p:#x}")
                append((p, p + size))
                if reads == power:
                    mark, power = p, 2 * power
                p = self._reveal(p, fd) if fastbin else fd
        finally:
            tgt.charge(HEADER * reads)
        if p != stop and room < steps:
            tgt.charge(HEADER)  # the cap is reached: this raises
        return p

    def _where(self, p: int) -> Tuple[int, int, int]:
        """The run of present pages (lo, hi, its heap's end) where the header
        at ``p`` may be read; raises BadList saying why it may not."""
        if p % 16:
            raise BadList(f"misaligned chunk pointer {p:#x}")
        k = bisect.bisect_right(self.starts, p) - 1
        if k < 0 or not p < self.heaps[k][1]:
            raise BadList(f"chunk {p:#x} lies outside the arena's heaps")
        i = bisect.bisect_right(self.present_starts, p & ~(PAGE - 1)) - 1
        if i < 0 or self.present[i][1] < p + HEADER:
            raise BadList(f"chunk {p:#x} is on a page that is not present (swapped out?)")
        heap_lo, heap_hi = self.heaps[k]
        return max(self.present[i][0], heap_lo), min(self.present[i][1], heap_hi), heap_hi

    def _reveal(self, p: int, fd: int) -> int:
        if self.safe_linking is None:  # glibc version unknown: whichever is a pointer into the arena
            revealed = ((p + 16) >> 12) ^ fd
            return revealed if revealed == 0 or (revealed % 16 == 0 and self._inside(revealed)) else fd
        return ((p + 16) >> 12) ^ fd if self.safe_linking else fd

    def _inside(self, p: int) -> bool:
        k = bisect.bisect_right(self.starts, p) - 1
        return k >= 0 and p < self.heaps[k][1]
