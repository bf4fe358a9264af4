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
no chunk may be met twice or overlap another; a list longer than the arena
could hold is a cycle. The first failure gives up on the whole arena: its
free lists are then not trusted (:class:`BadList` says why).
"""

from __future__ import annotations

import bisect
import os
import struct
from typing import List, Optional, Sequence, Set, Tuple

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
        seen: Set[int] = set()
        for i in range(NFASTBINS):
            head = self.state[MS_FASTBINS // 8 + i]
            p = head
            while p:
                size, fd = self._chunk(p, seen)
                if size != (i + 2) * 16:
                    raise BadList(f"fastbin {i} holds a chunk of {size} bytes at {p:#x}")
                out.append((p, p + size))
                p = self._reveal(p, fd)
        for j in range(NBINS_PAIRS):
            head = self.addr + MS_BINS + 16 * j - 16  # the bin as a chunk: its fd is bins[2j]
            p = self.state[MS_BINS // 8 + 2 * j]
            while p != head:
                size, fd = self._chunk(p, seen)
                idx = j + 1  # bin 1 is the unsorted bin, 2..63 small, 64.. large
                if 2 <= idx < 64 and size != idx * 16:
                    raise BadList(f"small bin {idx} holds a chunk of {size} bytes at {p:#x}")
                if idx >= 64 and size < MIN_LARGE_SIZE:
                    raise BadList(f"large bin {idx} holds a chunk of {size} bytes at {p:#x}")
                out.append((p, p + size))
                p = fd
        top = self.state[MS_TOP // 8]
        size, _ = self._chunk(top, seen)
        out.append((top, top + size))
        out.sort()
        for (_, a1), (b0, _) in zip(out, out[1:]):
            if b0 < a1:
                raise BadList(f"free chunks overlap at {b0:#x}")
        return out

    def _chunk(self, p: int, seen: Set[int]) -> Tuple[int, int]:
        """(chunksize, fd) of the chunk at ``p``, checked. (Run once per
        free chunk: its reads go straight to /proc/PID/mem, counted against
        the cap.)"""
        if p % 16:
            raise BadList(f"misaligned chunk pointer {p:#x}")
        if p in seen:
            raise BadList(f"chunk {p:#x} met twice (a cycle)")
        if len(seen) >= self.budget:
            raise BadList("more free chunks than the arena can hold (a cycle)")
        seen.add(p)
        k = bisect.bisect_right(self.starts, p) - 1
        if k < 0 or not p < self.heaps[k][1]:
            raise BadList(f"chunk {p:#x} lies outside the arena's heaps")
        i = bisect.bisect_right(self.present_starts, p & ~(PAGE - 1)) - 1
        if i < 0 or self.present[i][1] < p + 24:
            raise BadList(f"chunk {p:#x} is on a page that is not present (swapped out?)")
        tgt = self.maps.tgt
        tgt.charge(24)
        try:
            data = os.pread(tgt.mem, 24, p)
        except OSError:
            data = b""
        if len(data) != 24:
            raise BadList(f"chunk {p:#x} went away")
        _, size_word, fd = _CHUNK.unpack(data)
        size = size_word & ~SIZE_BITS
        if size < MINSIZE or size % 16 or p + size > self.heaps[k][1]:
            raise BadList(f"chunk {p:#x} has size word {size_word:#x}")
        return size, fd

    def _reveal(self, p: int, fd: int) -> int:
        if self.safe_linking is None:  # glibc version unknown: whichever is a pointer into the arena
            revealed = ((p + 16) >> 12) ^ fd
            return revealed if revealed == 0 or (revealed % 16 == 0 and self._inside(revealed)) else fd
        return ((p + 16) >> 12) ^ fd if self.safe_linking else fd

    def _inside(self, p: int) -> bool:
        k = bisect.bisect_right(self.starts, p) - 1
        return k >= 0 and p < self.heaps[k][1]
