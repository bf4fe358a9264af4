"""glibc's mmapped chunks in a live process, by a page-granular walk
(malloc/malloc.c: sysmalloc_mmap, _int_memalign).

Every present page of the anonymous ``rw-p`` mappings not claimed already
(arenas, stacks, the caller's ``skip``) is probed with one 16-byte read for a
header ``(0, len|IS_MMAPPED)`` (or the header form of glibc master after
2.42); a hit skips the chunk. The count and bytes found are checked against
``mp_.n_mmaps`` and ``mp_.mmapped_mem``.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import Dict, List, Optional, Tuple

from ...kernel.linux import PAGE_SIZE as PAGE
from ...kernel.pagemap import page_counts
from .mappings import LimitReached, Mappings, is_rw, overlapping

IS_MMAPPED = 2

_QQ = struct.Struct("<QQ")


def mmapped_chunk_len(prev_size: int, size_word: int, page: int, limit: int) -> Optional[int]:
    """Length of the mmapped chunk mapping whose header ``(prev_size,
    size_word)`` was read at the start of ``page``, or None if it is none.

    glibc <= 2.42: ``(0, len | IS_MMAPPED)``; a memalign'ed chunk's mapping
    keeps this stale header at its start (_int_memalign). glibc master after 2.42:
    ``(0 or MMAP_HP, len - 16 | IS_MMAPPED)``. The low bits must be exactly
    IS_MMAPPED (no PREV_INUSE, no NON_MAIN_ARENA), and the chunk must end by
    ``limit`` (the end of the anonymous mappings it lies in).
    """
    if size_word & 7 != IS_MMAPPED:
        return None
    size = size_word & ~7
    if prev_size == 0 and size % PAGE == 0:
        total = size
    elif prev_size in (0, 1) and (size + 16) % PAGE == 0:
        total = size + 16
    else:
        return None
    if total < PAGE or page + total > limit:
        return None
    return total


def walk_chunks(maps: Mappings) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """Probe every present page of the unclaimed anonymous rw-p
    mappings for an mmapped chunk header: the chunks (start, length)
    found, and the runs of memory walked."""
    runs: List[Tuple[int, int]] = []
    for r in maps.rows:
        if not (r.anon and is_rw(r)):
            continue
        # Cut the row by claimed intervals (a claimed heap or stack can
        # sit inside a merged mapping) and by the caller's skip ranges.
        pieces = []
        pos = r.start
        for cs, ce in sorted(maps.claimed_in(r.start, r.end) + overlapping(maps.skip, r.start, r.end)):
            if pos < cs:
                pieces.append((pos, cs))
            pos = max(pos, ce)
        if pos < r.end:
            pieces.append((pos, r.end))
        for a, b in pieces:
            if runs and runs[-1][1] == a:
                runs[-1] = (runs[-1][0], b)
            else:
                runs.append((a, b))
    chunks: List[Tuple[int, int]] = []
    pread = os.pread
    unpack = _QQ.unpack
    fd = maps.tgt.mem
    probed = gone = 0
    try:
        for rs, re_ in runs:
            skip = rs
            for lo, hi in maps.tgt.present(rs, re_):
                p = max(lo, skip)
                while p < hi:
                    maps.tgt.charge(16)
                    probed += 1
                    try:
                        data = pread(fd, 16, p)
                    except OSError as err:
                        if err.errno != errno.EIO:
                            raise
                        data = b""
                    if len(data) != 16:  # unmapped since smaps was read
                        gone += 1
                        break
                    prev_size, size_word = unpack(data)
                    if size_word & 7 == IS_MMAPPED:
                        total = mmapped_chunk_len(prev_size, size_word, p, re_)
                        if total:
                            chunks.append((p, total))
                            skip = p + total
                            p = skip
                            continue
                    p += PAGE
    except LimitReached:
        maps.warn(f"read limit of {maps.tgt.limit} bytes reached: the chunk walk stopped early, "
                  "chunks beyond it are not located")
    if gone:
        maps.warn(f"{gone} mapping(s) went away during the chunk walk (the process changed since smaps was read)")
    maps.found["pages_probed"] = probed
    return chunks, runs


def check_chunks(maps: Mappings, mp: Optional[Dict[str, int]], chunks: List[Tuple[int, int]],
                 runs: List[Tuple[int, int]]) -> None:
    """Check the chunks found against ``mp_``'s count and bytes."""
    n, total = len(chunks), sum(c[1] for c in chunks)
    maps.found["chunks"] = n
    maps.found["chunk_bytes"] = total
    if mp is None:
        if chunks:
            maps.warn(f"{n} mmapped chunk(s) ({total} bytes) found without mp_ to check them against")
        return
    want_n, want_b = mp["n_mmaps"], mp["mmapped_mem"]
    if (n, total) != (want_n, want_b):
        why = ""
        if n < want_n and runs:
            # A header on a swapped-out page is not read (that would swap it in).
            counts = page_counts(maps.tgt.pagemap, runs, maps.tgt.engine)
            swapped = sum(counts[1::4])
            if swapped:
                why = f"; {swapped} swapped-out page(s) of the walked mappings were not read"
        maps.warn(
            f"unexplained: found {n} mmapped chunk(s) of {total} bytes, glibc counts "
            f"n_mmaps={want_n}, mmapped_mem={want_b} (difference {n - want_n} chunks, "
            f"{total - want_b} bytes){why}"
        )
