"""CPython's small-object allocator (pymalloc, Objects/obmalloc.c) in a
live process: its arenas, each a plain 1 MiB anonymous mmap (CPython 3.10+
on 64-bit: 1 MiB arenas of 16 KiB pools), and their used and free pools.

Found without symbols, as ``sys._debugmallocstats()`` counts them:

- ``usedpools`` (the heads of the used pools of the 32 size classes) by a
  scan of the interpreter's writable data and the ``.bss`` after it: a
  512-byte window where every class's pair either points to itself minus
  16 (no used pool) or to two 16 KiB-aligned pool headers of that class;
- ``arenas`` (a malloc'ed vector of 48-byte ``arena_object``) as the word of
  that data pointing to a vector whose records hold the arenas of the used
  pools found (``pool_header.arenaindex``); its length from the glibc
  chunk it is in;
- every arena of the vector, then every carved pool's header:
  ``ref.count`` 0 is an empty pool, kept for reuse.

Used pools are ``in use``; empty pools, pools never carved and the part
lost to alignment are ``free``. Only 3.10+'s geometry is read (256 KiB
arenas of 4 KiB pools before): older interpreters are left alone.
"""

from __future__ import annotations

import os
import struct
from typing import Dict, List, Optional, Sequence, Tuple

from .mappings import Mappings, is_rw, merge

ARENA = 1 << 20  # ARENA_BITS 20 with USE_LARGE_ARENAS (64-bit), 3.10+
POOL = 1 << 14  # POOL_BITS 14 with USE_LARGE_POOLS and the radix tree, 3.10+
POOL_OVERHEAD = 48  # sizeof(struct pool_header)
NCLASSES = 32  # size classes of 16 bytes up to SMALL_REQUEST_THRESHOLD 512
ARENA_OBJECT = 48  # sizeof(struct arena_object)
MAX_ARENAS = 1 << 20  # a vector longer than a TiB of arenas is no arenas vector
SAMPLE_POOLS = 4

_POOL = struct.Struct("<IIQQQII")  # count, (pad), freeblock, nextpool, prevpool, arenaindex, szidx
ARENAINDEX, SZIDX = 5, 6
_ARENA = struct.Struct("<QQIIQQQ")  # address, pool_address, nfreepools, ntotalpools, freepools, next, prev


def _python_rows(maps: Mappings) -> List[Tuple[int, int]]:
    """The interpreter's writable data: rw-p rows of a file named python*
    or libpython*, and the anonymous row right after each (its .bss)."""
    out = []
    for i, r in enumerate(maps.rows):
        base = os.path.basename(r.name)
        if not base.startswith(("python", "libpython")) or not is_rw(r):
            continue
        out.append((r.start, r.end))
        if i + 1 < len(maps.rows) and maps.rows[i + 1].start == r.end and maps.rows[i + 1].anon:
            out.append((r.end, maps.rows[i + 1].end))
    return out


class Pymalloc:
    """One c_regions() call's reader of pymalloc's arenas."""

    def __init__(self, maps: Mappings) -> None:
        self.maps = maps
        # The interpreter's writable data as words, by address of the first.
        self.data: List[Tuple[int, Tuple[int, ...]]] = []

    def find(self) -> None:
        """Claim the arenas found, their free pools into ``maps.states``."""
        rows = _python_rows(self.maps)
        if not rows:
            return
        for start, end in rows:
            self.data.extend((lo, struct.unpack(f"<{len(data) // 8}Q", data))
                             for lo, data in self.maps.tgt.read_present(start, end))
        used = self._usedpools()
        if used is None:
            return
        pools = [p for p in used if p]
        if not pools:
            return
        vector = self._arenas_vector(pools[:SAMPLE_POOLS])
        if vector is None:
            self.maps.warn("pymalloc's usedpools found but not its arenas vector: its arenas are not attributed")
            return
        self._claim(*vector)

    # -- usedpools

    def _usedpools(self) -> Optional[List[int]]:
        """The first used pool of each class (0: none), from the one
        usedpools window in the interpreter's data; None when there is
        none, or more than one."""
        hits: List[List[int]] = []
        for base, words in self.data:
            for k in range(len(words) - 2 * NCLASSES + 1):
                w, w1 = words[k], words[k + 1]
                if not (w == w1 == base + 8 * k - 16 or (w and w1 and w % POOL == 0 and w1 % POOL == 0)):
                    continue
                got = self._window(words, k, base)
                if got is not None:
                    hits.append(got)
        return hits[0] if len(hits) == 1 else None

    def _window(self, words: Sequence[int], k: int, base: int) -> Optional[List[int]]:
        out = []
        for i in range(NCLASSES):
            nxt, prv = words[k + 2 * i], words[k + 2 * i + 1]
            me = base + 8 * (k + 2 * i) - 16
            if nxt == prv == me:
                out.append(0)
                continue
            if not nxt or nxt % POOL or not prv or prv % POOL:
                return None
            h = self._pool(nxt)
            if h is None or h[SZIDX] != i:
                return None
            out.append(nxt)
        return out if any(out) else None

    def _pool(self, p: int) -> Optional[Tuple[int, ...]]:
        i = self.maps.row_at(p)
        if i is None or not (self.maps.rows[i].anon and is_rw(self.maps.rows[i])):
            return None
        data = self.maps.tgt.read_if_present(p, _POOL.size)
        return None if data is None else _POOL.unpack(data)

    # -- the arenas vector

    def _arenas_vector(self, pools: List[int]) -> Optional[Tuple[int, int]]:
        """(address, slots) of the arenas vector: the word of the
        interpreter's data pointing to records that hold the arena of every
        sampled pool."""
        idx = []
        for p in pools:
            h = self._pool(p)
            if h is None:
                return None
            idx.append((p, h[ARENAINDEX]))
        found = set()
        for _, words in self.data:
            for v in set(words):
                if v % 16 or v < 1 << 16 or v >= 1 << 47 or v in found:
                    continue
                if all(self._holds(v, i, p) for p, i in idx):
                    found.add(v)
        if len(found) != 1:
            return None
        v = found.pop()
        # Its length from the glibc chunk it is in: maxarenas * 48 bytes
        # were asked of realloc (_PyObject_Malloc's new_arena), and a chunk
        # holds less than 48 bytes more than asked.
        head = self.maps.tgt.words_if_present(v - 16, 2)
        if head is None:
            return None
        size = head[1] & ~7
        usable = size - (16 if head[1] & 2 else 8)
        slots = usable // ARENA_OBJECT
        if not 1 <= slots <= MAX_ARENAS:
            return None
        return v, slots

    def _holds(self, v: int, i: int, p: int) -> bool:
        i_row = self.maps.row_at(v + ARENA_OBJECT * i)
        if i_row is None or not is_rw(self.maps.rows[i_row]):
            return False
        w = self.maps.tgt.words_if_present(v + ARENA_OBJECT * i, 2)
        return w is not None and w[0] <= p < w[0] + ARENA and w[0] < w[1] <= w[0] + ARENA

    # -- the arenas

    def _claim(self, v: int, slots: int) -> None:
        data = self.maps.tgt.read_if_present(v, ARENA_OBJECT * slots)
        if data is None:
            self.maps.warn(f"pymalloc's arenas vector at {v:#x} is not readable")
            return
        counts: Dict[str, int] = {"pymalloc_arenas": 0, "pymalloc_used_pools": 0, "pymalloc_free_pools": 0,
                                  "pymalloc_allocated_bytes": 0}
        bad = 0
        for k in range(slots):
            address, pool_address, nfree, ntotal, *_ = _ARENA.unpack_from(data, ARENA_OBJECT * k)
            if not address:
                continue
            end = address + ARENA
            first = -(-address // POOL) * POOL
            if not (first <= pool_address <= end and ntotal in (ARENA // POOL, ARENA // POOL - 1)
                    and nfree <= ntotal):
                bad += 1
                continue
            if not self.maps.covered(address, end, lambda r: r.anon and is_rw(r)) or self.maps.is_claimed(address, end):
                bad += 1
                continue
            self.maps.claim(address, end, "pymalloc arena")
            counts["pymalloc_arenas"] += 1
            counts["pymalloc_free_pools"] += nfree
            free = [(address, first)] if first > address else []
            # The arena is anonymous rw memory (checked above): one pagemap
            # look for all its carved pools, then a read per present header.
            present = self.maps.tgt.present(first, end)
            k = 0
            for p in range(first, pool_address, POOL):
                while k < len(present) and present[k][1] <= p:
                    k += 1
                header = self.maps.tgt.pread(p, _POOL.size) if k < len(present) and present[k][0] <= p else None
                h = None if header is None else _POOL.unpack(header)
                if h is None or h[0] == 0:
                    free.append((p, p + POOL))
                    continue
                counts["pymalloc_used_pools"] += 1
                counts["pymalloc_allocated_bytes"] += h[0] * (h[SZIDX] + 1) * 16
            free.append((pool_address, end))
            self.maps.states.extend((lo, hi, "free") for lo, hi in merge(free))
        if bad:
            self.maps.warn(f"{bad} of pymalloc's arena records do not validate: those arenas are not attributed")
        self.maps.counters.update(counts)
        self.maps.found["pymalloc_arenas"] = counts["pymalloc_arenas"]
