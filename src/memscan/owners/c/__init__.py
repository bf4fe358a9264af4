"""The C allocator's own view of a live process's anonymous memory.

For the exact tier: the kernel merges neighbouring anonymous mappings, so
glibc's mmapped chunks, the Go runtime's mappings and other mmaps can share
one VMA; only the allocator's structures tell them apart. ``c_regions(pid,
table)`` reads those structures read-only through ``/proc/PID/mem`` and
returns address intervals of kind

=================  ============================================================
``main arena``     ``[heap]`` (brk), once ``main_arena`` validates against it
``arena``          a glibc thread-arena heap (64 MiB-aligned ``heap_info``):
                   its ``rw-p`` head and ``---p`` tail up to +64 MiB
``mmapped chunk``  one glibc mmapped chunk: its whole mapping, header included
``pthread stack``  a glibc thread stack: guard page(s) + stack, TCB at the top
``jemalloc``       an anonymous region of a preloaded jemalloc
``tcmalloc``       ``[heap]`` and the library's static metadata under tcmalloc
=================  ============================================================

(The structures are glibc's own: malloc/malloc.c, malloc/arena.c and
nptl/allocatestack.c.)

How each is found:

- ``main_arena`` by a signature scan over libc's writable
  data (a 16-aligned ``malloc_state`` with at least 64 of its 127 bins
  pointing to themselves, and, since the address 16 bytes higher collects
  as many votes when the unsorted bin is in use, every other bin, ``top``
  and ``next`` pointing where a main arena's can), or else through the
  arenas' ``next`` ring; ``mp_`` by a ranked scan (:func:`mp_candidates`).
  ``[heap]`` is the main arena's when ``main_arena.top`` lies in it and ends
  it, ``system_mem`` equals its size and ``mp_.sbrk_base`` its start; as brk
  moves in a busy process, a failed check is retried against
  a fresh ``[heap]`` end from /proc/PID/maps.
- Thread arenas: every 64 MiB-aligned address (4 huge pages with
  ``glibc.malloc.hugetlb=2`` before 2.42, from ``mp_.hp_pagesize``) in an
  anonymous ``rw-p`` mapping whose page is present is a ``heap_info``
  candidate, kept only when it passes every check (sizes, mapping
  shape, the ``prev`` chain, the arena's ``top`` and ``system_mem``, its
  bins, and the ``next`` ring through ``main_arena``; VmFlags ``nr``
  only warns). An arena whose ``malloc_state`` fails (``top``,
  ``system_mem``, bins) is read again, up to four times, before it is rejected: its thread may be allocating.
- Thread stacks: a ``---p`` guard of at most 256 KiB directly below an
  anonymous ``rw-p`` mapping, confirmed by the TCB at its top: any
  16-aligned ``pd`` in the top two pages with ``tcb == self == pd``
  (``*(pd) == pd``, ``*(pd+16) == pd``; 2.36 puts it at ``end - 0x940``, but
  the offset is not assumed). When the top pages cannot be read (not
  present), the shape alone is accepted, with a warning, when both mappings
  carry ``nh`` (MAP_STACK, kernel 6.7+) or the kernel predates ``nh``.
- Mmapped chunks by a page-granular walk: every present page of
  the anonymous ``rw-p`` mappings not claimed above is probed with one
  16-byte read for a header ``(0, len|IS_MMAPPED)`` (or the header form of
  glibc master after 2.42); a hit skips the chunk. The count and bytes
  found are checked against ``mp_.n_mmaps`` and ``mp_.mmapped_mem``.
- jemalloc: when ``libjemalloc`` is loaded and owns malloc, its
  anonymous ``rw-p`` regions with VmFlags ``nr`` (MAP_NORESERVE) and without
  ``ac``; there are no in-band headers. tcmalloc: ``[heap]`` plus the static
  metadata in the library's ``.bss``. "Owns malloc" means glibc's main arena
  is unused: ``system_mem`` 0, ``top`` still the initial one, no brk and no
  mmapped chunk in ``mp_``. (Not "uninitialised", as one might expect:
  glibc 2.34+ initialises ``main_arena`` in ``__libc_early_init``, so its
  bins point to themselves under a preloaded allocator too.)

Safety: ``/proc/PID/mem`` is opened ``O_RDONLY`` and read with ``os.pread``
only; nothing is written and the target is never ptraced (reading needs
ptrace-read access all the same: ``mm_access()`` in fs/proc/base.c). Before any
read, pagemap must say that every page read is present: reading a
non-present anonymous page would map the shared zero page into the target,
and reading a swapped page would swap it in. Reads are small (16
bytes per probed page, 48 per ``heap_info``, one ``malloc_state`` per arena,
two pages per stack, libc's writable data) and their total is capped
(``max_bytes``).

Nothing is guessed silently: whatever cannot be found or does not validate
is left out of ``intervals`` and explained in ``warnings``.
"""

from __future__ import annotations

import bisect
import errno
import mmap
import os
import re
import struct
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ... import elf
from ..._cache import LRU, once
from ..._errors import NoSuchProcess
from ..._types import PERM_R, PERM_S, PERM_W, PERM_X, VM_NH, VM_NR, VMFLAG_BIT, SmapsTable
from ...engine import get_engine
from ...kernel import procfs
from ...kernel.pagemap import page_counts
from ...layout.rules import ARENA, GUARD_MAX
from ..memory import TargetMemory, read_maps

__all__ = [
    "CRegions",
    "KINDS",
    "MAX_READ_BYTES",
    "c_regions",
    "mmapped_chunk_len",
]

#: The kinds of ``CRegions.intervals``.
KINDS = ("main arena", "arena", "mmapped chunk", "pthread stack", "jemalloc", "tcmalloc")

#: Default cap on the bytes read from /proc/PID/mem by one call: 16 bytes a
#: probed page make this 2M pages (8 GiB) of anonymous memory to walk.
MAX_READ_BYTES = 32 << 20

PAGE = 4096
KIB = 1024
MIB = 1 << 20
MMAP_THRESHOLD_MAX = 32 * MIB  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
PTHREAD_STACK_MIN = 16 * KIB
IS_MMAPPED = 2

_VM_AC = VMFLAG_BIT["ac"]

_QQ = struct.Struct("<QQ")

# struct malloc_state, glibc 2.27+ x86_64 (5.1; sizeof 0x898 in 2.36).
MS_FLAGS = 0x04
MS_TOP = 0x60
MS_BINS = 0x70
MS_NEXT = 0x870
MS_NEXT_FREE = 0x878
MS_ATTACHED = 0x880
MS_SYSTEM_MEM = 0x888
MS_SIZE = 0x898
NBINS_PAIRS = 127  # bins[254]: 127 (fd, bk) pairs, bin 1 (unsorted) .. 127
NONCONTIGUOUS_BIT = 2

# struct malloc_par (malloc/malloc.c): field -> (offset, format) per layout.
_MP_LAYOUTS: Dict[str, Dict[str, Tuple[int, str]]] = {
    # glibc 2.35+ (thp_pagesize, hp_pagesize, hp_flags added in 2.35).
    "2.35": {
        "trim_threshold": (0x00, "Q"), "top_pad": (0x08, "Q"), "mmap_threshold": (0x10, "Q"),
        "arena_test": (0x18, "Q"), "arena_max": (0x20, "Q"), "hp_pagesize": (0x30, "Q"), "n_mmaps": (0x3C, "i"),
        "n_mmaps_max": (0x40, "i"), "max_n_mmaps": (0x44, "i"), "no_dyn_threshold": (0x48, "i"),
        "mmapped_mem": (0x50, "Q"), "max_mmapped_mem": (0x58, "Q"), "sbrk_base": (0x60, "Q"),
        "tcache_bins": (0x68, "Q"), "tcache_max_bytes": (0x70, "Q"), "tcache_count": (0x78, "Q"),
    },
    # glibc 2.26-2.34: the same fields without the hugepage ones.
    "2.26": {
        "trim_threshold": (0x00, "Q"), "top_pad": (0x08, "Q"), "mmap_threshold": (0x10, "Q"),
        "arena_test": (0x18, "Q"), "arena_max": (0x20, "Q"), "n_mmaps": (0x28, "i"),
        "n_mmaps_max": (0x2C, "i"), "max_n_mmaps": (0x30, "i"), "no_dyn_threshold": (0x34, "i"),
        "mmapped_mem": (0x38, "Q"), "max_mmapped_mem": (0x40, "Q"), "sbrk_base": (0x48, "Q"),
        "tcache_bins": (0x50, "Q"), "tcache_max_bytes": (0x58, "Q"), "tcache_count": (0x60, "Q"),
    },
}
_MP_SIZE = {"2.35": 0x88, "2.26": 0x70}


class CRegions(NamedTuple):
    """What the C allocator's structures say about a process's memory."""

    #: Sorted, non-overlapping ``(start, end, kind)``, kind in :data:`KINDS`;
    #: one interval per object (chunk, heap, stack, mapping), adjacent
    #: intervals of one kind are not merged. Only what validated is here.
    intervals: List[Tuple[int, int, str]]
    #: glibc's own figures, each present only when its structure was found:
    #: ``n_mmaps``, ``mmapped_mem``, ``mmap_threshold`` (``mp_``);
    #: ``main_system_mem`` (``main_arena.system_mem``); ``heaps_size`` (sum
    #: of ``heap_info.size`` over the validated thread-arena heaps); and what
    #: ``mallinfo2()`` would say: ``hblks`` = n_mmaps, ``hblkhd`` =
    #: mmapped_mem, ``arena`` = main_system_mem + heaps_size (only when every
    #: arena of the ring validated).
    counters: Dict[str, int]
    #: Why something is missing, or does not add up (e.g. more chunks found
    #: than ``mp_.n_mmaps`` counts: "unexplained").
    warnings: List[str]
    #: Who owns malloc: "glibc", "jemalloc", "tcmalloc", "mimalloc", "musl"
    #: or None (no C library loaded, e.g. a static Go binary).
    allocator: Optional[str]
    #: What was found: addresses ``main_arena``, ``mp_`` (0 if not found);
    #: counts ``arenas``, ``heaps``, ``chunks``, ``chunk_bytes``,
    #: ``pthread_stacks``, ``stacks_by_shape`` (accepted without a TCB),
    #: ``pages_probed`` (walker reads), ``jemalloc_regions`` (under jemalloc).
    found: Dict[str, int]
    #: Bytes read from /proc/PID/mem (pagemap not included).
    bytes_read: int
    #: (major, minor) of the glibc loaded, from its banner; None if unknown.
    glibc_version: Optional[Tuple[int, int]]


class _LimitReached(Exception):
    pass


# --------------------------------------------------------------------------
# Pure helpers (unit-tested without a process)


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


def find_tcb(data: bytes, base: int) -> List[int]:
    """Addresses ``pd`` (16-aligned) in ``data`` (read at ``base``) whose
    ``tcbhead_t`` points to itself twice: ``tcb == pd`` at +0 and
    ``self == pd`` at +16 (x86_64 ABI, 6). Highest first."""
    out = []
    n = len(data) // 8
    words = struct.unpack(f"<{n}Q", data[: 8 * n])
    first = (-base % 16) // 8  # first 16-aligned word
    for k in range(first, n - 2, 2):
        a = base + 8 * k
        if words[k] == a and words[k + 2] == a:
            out.append(a)
    out.reverse()
    return out


def self_pointing_bins(words: Sequence[int], base: int) -> Dict[int, int]:
    """Candidate ``malloc_state`` addresses -> number of empty bins.

    ``words`` are the 64-bit words read at ``base`` (8-aligned). An empty
    bin i is a pair (fd, bk) at ``&bins[2(i-1)]`` both equal to that address
    minus 16 (``bin_at``). Every such pair votes for the 16-aligned
    ``malloc_state`` addresses it could belong to.
    """
    votes: Dict[int, int] = {}
    n = len(words)
    for k in range(n - 1):
        a = base + 8 * k
        if words[k] == a - 16 and words[k + 1] == a - 16:
            for j in range(NBINS_PAIRS):
                m = a - MS_BINS - 16 * j
                if m % 16 == 0 and m >= base:
                    votes[m] = votes.get(m, 0) + 1
    return votes


def _mp_struct(layout: Dict[str, Tuple[int, str]]) -> Tuple[struct.Struct, List[str]]:
    fmt, pos, keys = "<", 0, []
    for key, (off, f) in sorted(layout.items(), key=lambda kv: kv[1][0]):
        fmt += "x" * (off - pos) + f
        pos = off + struct.calcsize("<" + f)
        keys.append(key)
    return struct.Struct(fmt), keys


_MP_STRUCTS = {name: _mp_struct(lay) for name, lay in _MP_LAYOUTS.items()}


def mp_candidates(data: bytes, base: int, heap_start: int) -> List[Tuple[int, int, str, Dict[str, int]]]:
    """Plausible ``mp_`` (``struct malloc_par``) in ``data`` read at
    ``base``: (score, address, layout, fields), best first.

    ``heap_start``: start of ``[heap]``, 0 when there is none (then an
    ``sbrk_base`` of 0 scores).
    """
    out = []
    for name in _MP_STRUCTS:
        for off in range((-base) % 8, len(data) - _MP_SIZE[name] + 1, 8):
            c = mp_at(data, off, name, heap_start)
            if c is not None:
                out.append((c[0], base + off, name, c[1]))
    out.sort(key=lambda c: (-c[0], c[1]))
    return out


def mp_at(data: bytes, off: int, layout: str, heap_start: int) -> Optional[Tuple[int, Dict[str, int]]]:
    """(score, fields) of a plausible ``mp_`` of ``layout`` at ``off`` of ``data``, else None."""
    st, keys = _MP_STRUCTS[layout]
    v = dict(zip(keys, st.unpack_from(data, off)))
    if not _mp_plausible(v):
        return None
    score = 0
    if v["sbrk_base"] == heap_start:
        score += 4
    score += v["tcache_bins"] == 64
    score += v["n_mmaps_max"] == 65536
    score += v["arena_test"] == 8
    score += v["tcache_max_bytes"] == 1032
    score += v["top_pad"] == 128 * KIB
    score += v["trim_threshold"] in (128 * KIB, 2 * v["mmap_threshold"])
    return score, v


def _mp_plausible(v: Dict[str, int]) -> bool:
    thr = v["mmap_threshold"]
    if v["no_dyn_threshold"] not in (0, 1):
        return False
    # The dynamic threshold stays in [128K, 32M]; mallopt or a tunable
    # (which sets no_dyn_threshold) may put it anywhere up to 32M.
    if not (128 * KIB <= thr <= MMAP_THRESHOLD_MAX or (v["no_dyn_threshold"] == 1 and thr <= MMAP_THRESHOLD_MAX)):
        return False
    n, mem = v["n_mmaps"], v["mmapped_mem"]
    if not (0 <= n <= v["max_n_mmaps"]) or v["n_mmaps_max"] < 0:
        return False
    if mem % PAGE or mem > v["max_mmapped_mem"] or (n == 0) != (mem == 0) or mem < n * PAGE:
        return False
    if not 1 <= v["tcache_bins"] <= 64:
        return False
    if v["trim_threshold"] >= 1 << 48 or v["top_pad"] >= 1 << 48 or v["tcache_max_bytes"] >= 1 << 32:
        return False
    if not (1 <= v["arena_test"] < 1 << 20) or v["arena_max"] >= 1 << 20:
        return False
    if v["sbrk_base"] % 8 or v["sbrk_base"] >= 1 << 56:
        return False
    hp = v.get("hp_pagesize", 0)
    if hp and (hp < PAGE or hp & (hp - 1) or hp > 1 << 30):
        return False
    return True


# --------------------------------------------------------------------------
# glibc version from the mapped file (its banner string)

_BANNER = re.compile(rb"release version (\d+)\.(\d+)")
# The version of each libc file read (by file identity).
_versions: "LRU[Tuple[int, int, int, int], Optional[Tuple[int, int]]]" = LRU(16)


def _glibc_version(paths: Sequence[str]) -> Optional[Tuple[int, int]]:
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            return _versions.get_or_make(key, lambda: _banner_version(fd, st.st_size))
        except (OSError, ValueError):
            continue
        finally:
            os.close(fd)
    return None


def _banner_version(fd: int, size: int) -> Optional[Tuple[int, int]]:
    if not size:
        return None
    with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as m:
        found = _BANNER.search(m)
        return (int(found.group(1)), int(found.group(2))) if found else None


# --------------------------------------------------------------------------
# The mappings


# main_arena and mp_ are static variables of libc: once a search of libc's
# data has found one, it stays at that address for as long as that file is
# mapped there. Later scans check the remembered address (the same tests the
# search applies) and search again only when the check fails. That saves
# ~8 ms per scan; keyed by (pid, start, device, inode) of the libc mapping.
_STATICS_KEPT = 256
_statics: "LRU[Tuple[int, ...], Tuple[int, int, str]]" = LRU(_STATICS_KEPT)  # -> (main_arena, mp_, layout)


class _Row(NamedTuple):
    start: int
    end: int
    perms: int
    flags: int
    name: str
    anon: bool  # private anonymous (inode 0, no name or [anon:...]); [heap]/[stack] not included


def _rows(table: SmapsTable) -> List[_Row]:
    out = []
    for i in range(len(table)):
        name = table.names[i]
        perms = table.perms[i]
        anon = (
            table.inodes[i] == 0
            and not perms & PERM_S
            and (name == "" or (name.startswith("[anon:") and not name.startswith("[anon_shmem:")))
        )
        out.append(_Row(table.starts[i], table.ends[i], perms, table.vmflags[i], name, anon))
    out.sort()
    return out


def _is_rw(r: _Row) -> bool:
    return r.perms & (PERM_R | PERM_W | PERM_X | PERM_S) == PERM_R | PERM_W


def _is_none(r: _Row) -> bool:
    return r.perms & (PERM_R | PERM_W | PERM_X) == 0 and not r.perms & PERM_S


_LIBC = re.compile(r"^(?:libc\.so\.6|libc-2\.\d+(?:\.\d+)?\.so)$")


def _strip_deleted(name: str) -> str:
    return name[: -len(" (deleted)")] if name.endswith(" (deleted)") else name


class _Scan:
    """One c_regions() call."""

    def __init__(self, pid: int, table: SmapsTable, tgt: TargetMemory, stack_limit: Optional[int]) -> None:
        self.pid = pid
        self.table = table
        self.tgt = tgt
        self.rows = _rows(table)
        self.starts = [r.start for r in self.rows]
        self.warnings: List[str] = []
        self.counters: Dict[str, int] = {}
        self.found: Dict[str, int] = {
            "main_arena": 0, "mp_": 0, "arenas": 0, "heaps": 0, "chunks": 0, "chunk_bytes": 0,
            "pthread_stacks": 0, "stacks_by_shape": 0, "pages_probed": 0,
        }
        self.intervals: List[Tuple[int, int, str]] = []
        self.claimed: List[Tuple[int, int]] = []
        self.has_flags = any(r.flags for r in self.rows)
        self.stack_limit = stack_limit
        self.heap_rows = [r for r in self.rows if r.name == "[heap]"]
        # [heap] is one brk range; its rows (split by mprotect or madvise) are contiguous.
        self.heap_range: Optional[Tuple[int, int]] = None
        if self.heap_rows:
            first, last = self.heap_rows[0], self.heap_rows[-1]
            contiguous = sum(r.end - r.start for r in self.heap_rows) == last.end - first.start
            self.heap_range = (first.start, last.end if contiguous else first.end)
        self.version: Optional[Tuple[int, int]] = None
        self.libc_key: Tuple[int, ...] = ()  # (pid, start, device, inode) of the libc mapped
        self.mp_layout = ""  # of the mp_ found by search
        self.main_arena = 0
        self.main_fields: Dict[str, int] = {}
        self.mp: Optional[Dict[str, int]] = None
        self.libc_data: List[Tuple[int, bytes]] = []  # (address, bytes) of libc's writable data read
        self.libc_rw: List[Tuple[int, int]] = []
        self.heap_cands: Dict[int, Tuple[int, int, int, int, int, int]] = {}
        self.arena_state: Dict[int, Tuple[int, ...]] = {}
        self.ring_complete = False  # every arena of the ring validated: "arena" is mallinfo2's
        # Heap size and alignment: HEAP_MAX_SIZE, or 4 huge pages with
        # glibc.malloc.hugetlb=2 in 2.35-2.41 (malloc/arena.c); set from mp_.
        self.heap_max = ARENA
        self.walk_runs: List[Tuple[int, int]] = []
        self.skip: List[Tuple[int, int]] = []  # sorted, disjoint: not walked

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def claim(self, start: int, end: int, kind: str) -> None:
        if self.is_claimed(start, end):  # cannot happen: callers check first
            raise AssertionError(f"{kind} {start:#x}-{end:#x} overlaps a region already claimed")
        self.intervals.append((start, end, kind))
        bisect.insort(self.claimed, (start, end))

    def claimed_in(self, start: int, end: int) -> List[Tuple[int, int]]:
        """The claimed intervals (sorted, disjoint) overlapping [start, end)."""
        return _overlapping(self.claimed, start, end)

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

    # ---------------------------------------------------------------- libc

    def find_libc(self) -> List[int]:
        idx = [i for i, r in enumerate(self.rows) if _LIBC.match(os.path.basename(_strip_deleted(r.name)))]
        if not idx:
            return []
        r0 = self.rows[idx[0]]
        self.version = _glibc_version(elf.mapped_path(self.pid, r0.start, r0.end, r0.name))
        t = bisect.bisect_left(self.table.starts, r0.start)
        self.libc_key = (self.pid, r0.start, self.table.devs[t], self.table.inodes[t])
        return idx

    def read_libc_data(self, idx: List[int]) -> None:
        """Read libc's writable file-backed data (``.data``: ``main_arena``
        and ``mp_`` have initialisers, so they are there, not in ``.bss``)."""
        for i in idx:
            r = self.rows[i]
            if r.perms & (PERM_R | PERM_W) == PERM_R | PERM_W and not r.perms & PERM_S:
                self.libc_rw.append((r.start, r.end))
        self._read_ranges(self.libc_rw)

    def read_libc_bss(self, idx: List[int]) -> None:
        """The anonymous continuation after libc's writable data (its
        ``.bss``), read only when ``.data`` held no ``main_arena``: a build
        that put it there would still be found. At most 1 MiB."""
        last = self.rows[max(idx)]
        j = self.row_at(last.end)
        if j is None:
            return
        r = self.rows[j]
        if r.anon and _is_rw(r):
            rng = (r.start, min(r.end, r.start + MIB))
            self.libc_rw.append(rng)
            self._read_ranges([rng])

    def _read_ranges(self, ranges: Iterable[Tuple[int, int]]) -> None:
        for start, end in ranges:
            for lo, hi in self.tgt.present(start, end):
                data = self.tgt.pread(lo, hi - lo)
                if data is not None:
                    self.libc_data.append((lo, data))

    def in_libc_rw(self, addr: int) -> bool:
        return any(s <= addr < e for s, e in self.libc_rw)

    def find_main_arena(self, last_try: bool) -> None:
        """A 16-aligned malloc_state with >= 64 of 127 bins
        pointing to themselves, whose other fields make sense.

        Votes alone do not decide: when the unsorted bin is in use, the
        address 16 bytes higher collects as many votes (its bins are the
        real ones shifted by one pair). Each candidate must also have every
        non-empty bin, ``top`` and ``next`` pointing where a main arena's
        can: 16-aligned, into ``[heap]`` or an anonymous rw mapping (a
        thread arena, the mmap fallback); ``top`` may be the initial one
        (the unsorted bin) and ``next`` the arena itself.
        """
        known = _statics.get(self.libc_key)
        if known and known[0] and self._main_arena_at(known[0]):
            self.main_arena = known[0]
            return
        cands: List[Tuple[int, int]] = []
        for base, data in self.libc_data:
            n = len(data) // 8
            words = struct.unpack(f"<{n}Q", data[: 8 * n])
            votes = self_pointing_bins(words, base)
            for m, v in votes.items():
                if v >= 64 and m + MS_SIZE <= base + len(data) and self._main_arena_shape(m, words, base):
                    cands.append((v, m))
        cands.sort(reverse=True)
        if len(cands) > 1 and last_try:
            self.warn(f"main_arena ambiguous: {len(cands)} candidates in libc's data "
                      f"({', '.join(hex(m) for _, m in cands[:4])})")
        if len(cands) == 1:
            self.main_arena = cands[0][1]

    def _main_arena_at(self, m: int) -> bool:
        """What find_main_arena requires of a candidate, checked at ``m`` alone."""
        words = self.libc_words(m, MS_SIZE // 8)
        if words is None:
            return False
        votes = sum(words[MS_BINS // 8 + 2 * j] == words[MS_BINS // 8 + 2 * j + 1] == m + MS_BINS + 16 * j - 16
                    for j in range(NBINS_PAIRS))
        return votes >= 64 and self._main_arena_shape(m, words, m)

    def _main_arena_shape(self, m: int, words: Sequence[int], base: int) -> bool:
        k = (m - base) // 8

        def arena_memory(p: int) -> bool:
            if p % 16:
                return False
            if self.heap_range and self.heap_range[0] <= p < self.heap_range[1]:
                return True
            i = self.row_at(p)
            return i is not None and self.rows[i].anon and _is_rw(self.rows[i])

        top, nxt = words[k + MS_TOP // 8], words[k + MS_NEXT // 8]
        if top != m + MS_TOP and not arena_memory(top):
            return False
        if nxt != m and not arena_memory(nxt):
            return False
        for j in range(NBINS_PAIRS):
            fd, bk = words[k + MS_BINS // 8 + 2 * j], words[k + MS_BINS // 8 + 2 * j + 1]
            me = m + MS_BINS + 16 * j - 16
            if (fd, bk) != (me, me) and not (arena_memory(fd) and arena_memory(bk)):
                return False
        return True

    def libc_words(self, addr: int, n: int) -> Optional[Tuple[int, ...]]:
        """Words from libc data already read (no new read)."""
        for base, data in self.libc_data:
            if base <= addr and addr + 8 * n <= base + len(data):
                return struct.unpack_from(f"<{n}Q", data, addr - base)
        return None

    def find_mp(self) -> None:
        heap_start = self.heap_range[0] if self.heap_range else 0
        known = _statics.get(self.libc_key)
        if known and known[1]:
            addr, layout = known[1], known[2]
            for base, data in self.libc_data:
                if base <= addr and addr + _MP_SIZE[layout] <= base + len(data):
                    c = mp_at(data, addr - base, layout, heap_start)
                    if c is not None and c[0] >= 4:
                        self.use_mp(addr, c[1])
                        return
        cands: List[Tuple[int, int, str, Dict[str, int]]] = []
        for base, data in self.libc_data:
            cands.extend(mp_candidates(data, base, heap_start))
        if self.main_arena:  # not inside main_arena
            cands = [c for c in cands if not (self.main_arena - 0x88 < c[1] < self.main_arena + MS_SIZE)]
        if self.version is not None:
            want = "2.35" if self.version >= (2, 35) else "2.26"
            cands = [c for c in cands if c[2] == want] or cands
        cands.sort(key=lambda c: (-c[0], c[1]))
        if not cands:
            self.warn("mp_ not found in libc's data: hblks/hblkhd unknown, mmapped chunks not cross-checked")
            return
        if len(cands) > 1 and cands[1][0] == cands[0][0]:
            self.warn(
                f"mp_ ambiguous: {sum(1 for c in cands if c[0] == cands[0][0])} candidates score "
                f"{cands[0][0]}: hblks/hblkhd unknown, mmapped chunks not cross-checked"
            )
            return
        score, addr, layout, fields = cands[0]
        if score < 4:
            self.warn(f"mp_ candidate at {addr:#x} scores only {score}: not trusted")
            return
        self.mp_layout = layout
        self.use_mp(addr, fields)

    def use_mp(self, addr: int, fields: Dict[str, int]) -> None:
        self.mp = fields
        self.found["mp_"] = addr
        self.counters["n_mmaps"] = fields["n_mmaps"]
        self.counters["mmapped_mem"] = fields["mmapped_mem"]
        self.counters["mmap_threshold"] = fields["mmap_threshold"]
        self.counters["hblks"] = fields["n_mmaps"]
        self.counters["hblkhd"] = fields["mmapped_mem"]
        hp = fields.get("hp_pagesize", 0)
        if hp and (self.version is None or self.version < (2, 42)):
            self.heap_max = 4 * hp

    def remember_statics(self) -> None:
        """Remember where the search found main_arena and mp_ (see _statics)."""
        known = _statics.get(self.libc_key, (0, 0, ""))
        found = (self.main_arena or known[0], self.found["mp_"] or known[1], self.mp_layout or known[2])
        if self.libc_key and found != known and (self.main_arena or self.mp_layout):
            _statics.put(self.libc_key, found)

    # ------------------------------------------------------- thread arenas

    def find_heaps(self) -> Dict[int, List[int]]:
        """Validated thread arenas: ar_ptr -> its heaps' bases."""
        cands: Dict[int, Tuple[int, int, int, int, int, int]] = {}  # base -> (ar, prev, size, mprot, pagesize, hdr)
        for r in self.rows:
            if not (r.anon and _is_rw(r)):
                continue
            a = (r.start + self.heap_max - 1) & ~(self.heap_max - 1)
            while a < r.end:
                w = self.tgt.words_if_present(a, 6)
                if w is not None:
                    h = self._heap_info(a, w)
                    if h is not None:
                        cands[a] = h
                a += self.heap_max
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
                self.warn(f"heap_info-like header at {a:#x} rejected: its prev chain does not reach its arena")
        self.heap_cands = cands
        valid: Dict[int, List[int]] = {}
        for ar, bases in arenas.items():
            bases.sort()
            if self._arena_ok(ar, bases, cands):
                valid[ar] = bases
        # Check 7, a hint only: glibc <= 2.36 maps heaps MAP_NORESERVE (nr,
        # no ac); 2.37+ does not.
        if self.has_flags and self.version is not None and self.version <= (2, 36):
            odd = []
            for b in (b for bs in valid.values() for b in bs):
                i = self.row_at(b)
                if i is not None and (not self.rows[i].flags & VM_NR or self.rows[i].flags & _VM_AC):
                    odd.append(b)
            if odd:
                self.warn(f"{len(odd)} thread-arena heap(s) lack VmFlags nr (or have ac), unlike glibc "
                          f"{self.version[0]}.{self.version[1]}'s (first {odd[0]:#x})")
        return valid

    def _heap_info(self, a: int, w: Tuple[int, ...]) -> Optional[Tuple[int, int, int, int, int, int]]:
        ar, prev, size, mprot, pagesize = w[:5]
        new = self.version is None or self.version >= (2, 35)
        old = self.version is None or self.version < (2, 35)
        hdr = 0
        if new and (ar == a + 0x30 or (prev and (ar - 0x30) % self.heap_max == 0)):
            hdr = 0x30
            if pagesize < PAGE or pagesize & (pagesize - 1):
                return None
        elif old and (ar == a + 0x20 or (prev and (ar - 0x20) % self.heap_max == 0)):
            hdr, pagesize = 0x20, PAGE
        else:
            return None
        if prev == 0 and ar != a + hdr:
            return None
        if prev and (prev % self.heap_max or prev == a):
            return None
        if not (hdr < size <= mprot <= self.heap_max) or size % pagesize or mprot % pagesize:
            return None
        if not self.covered(a, a + mprot, lambda r: r.anon and _is_rw(r)):
            return None
        if mprot < self.heap_max and not self.covered(a + mprot, a + self.heap_max, lambda r: r.anon and _is_none(r)):
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
                    w = self.tgt.words_if_present(b, 6)
                    h = None if w is None else self._heap_info(b, w)
                    if h is None or h[0] != ar:
                        self.warn(f"arena at {ar:#x} rejected: the heap_info at {b:#x} changed or went away")
                        return False
                    cands[b] = h
            why = self._arena_check(ar, bases, cands)
            if not why:
                return True
        self.warn(f"arena at {ar:#x} ({len(bases)} heap(s)) rejected: {why}")
        return False

    def _arena_check(self, ar: int, bases: List[int], cands) -> str:  # type: ignore[no-untyped-def]
        data = self.tgt.read_if_present(ar, MS_SIZE)
        if data is None:
            return "its malloc_state is not readable (page not present)"
        ms = struct.unpack(f"<{MS_SIZE // 8}Q", data)
        top = ms[MS_TOP // 8]
        system_mem = ms[MS_SYSTEM_MEM // 8]
        total = sum(cands[b][2] for b in bases)
        holder = next((b for b in bases if b <= top < b + cands[b][2]), None)
        if holder is None:
            return f"top {top:#x} is in none of its heaps"
        w = self.tgt.words_if_present(top, 2)
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
        if not valid and not self.main_arena:
            return valid
        start = self.main_arena or next(iter(valid))
        ring = [start]
        cur = start
        for _ in range(4096):
            if cur in states:
                nxt = states[cur][MS_NEXT // 8]
            else:
                w = self.libc_words(cur + MS_NEXT, 1) if self.in_libc_rw(cur) else None
                if w is None:
                    w = self.tgt.words_if_present(cur + MS_NEXT, 1)
                if w is None:
                    self.warn(f"arena ring broken at {cur:#x} (not readable): thread arenas not validated")
                    return {}
                nxt = w[0]
            if nxt == start:
                break
            if nxt in ring:
                self.warn(f"arena ring loops back to {nxt:#x}, not to {start:#x}: thread arenas not validated")
                return {}
            ring.append(nxt)
            cur = nxt
        else:
            self.warn("arena ring does not close within 4096 steps: thread arenas not validated")
            return {}
        outside = [m for m in ring if m not in valid]
        libc_members = [m for m in outside if self.in_libc_rw(m)]
        if len(libc_members) != 1:
            self.warn(f"arena ring has {len(libc_members)} members in libc's data (want main_arena alone): "
                      "thread arenas not validated")
            return {}
        ring_main = libc_members[0]
        if self.main_arena and ring_main != self.main_arena:
            self.warn(f"arena ring names main_arena {ring_main:#x}, the signature scan {self.main_arena:#x}: "
                      "thread arenas not validated")
            return {}
        self.main_arena = ring_main
        others = [m for m in outside if m != ring_main]
        if others:
            self.warn(f"{len(others)} arena(s) in the ring were not validated (first {others[0]:#x}): "
                      "their heaps are not claimed")
        members = set(ring)
        stray = [ar for ar in valid if ar not in members]
        if stray:
            self.warn(f"{len(stray)} arena(s) that validated are not in the arena ring (first {stray[0]:#x}): "
                      "their heaps are not claimed")
        self.ring_complete = not others
        return {ar: bs for ar, bs in valid.items() if ar in members}

    # ---------------------------------------------------------- main arena

    def main_arena_fields(self) -> None:
        m = self.main_arena
        w = self.libc_words(m, MS_SIZE // 8)
        if w is None:
            w = self.tgt.words_if_present(m, MS_SIZE // 8)
        if w is None:
            self.warn(f"main_arena at {m:#x} not readable")
            self.main_arena = 0
            return
        self.found["main_arena"] = m
        self.main_fields = {
            "flags": w[0] >> 32, "top": w[MS_TOP // 8], "next": w[MS_NEXT // 8],
            "system_mem": w[MS_SYSTEM_MEM // 8],
        }

    def claim_main_arena(self) -> None:
        f = self.main_fields
        sysmem = f["system_mem"]
        self.counters["main_system_mem"] = sysmem
        if self.heap_range is None:
            if sysmem:
                self.warn(f"main_arena.system_mem is {sysmem} but there is no [heap]: "
                          "its memory (mmap fallback) is not located")
            return
        lo, hi = self.heap_range
        # The target runs on: brk may have moved since smaps was read. Each
        # try reads main_arena, its top chunk and the current brk (from
        # /proc/PID/stat) close together; the top chunk must end at either
        # [heap]'s end in the table or the current brk.
        why = ""
        for attempt in range(3):
            if attempt:
                w = self.tgt.words_if_present(self.main_arena, MS_SIZE // 8)
                if w is None:
                    break
                f = {"flags": w[0] >> 32, "top": w[MS_TOP // 8], "system_mem": w[MS_SYSTEM_MEM // 8]}
            why = self._main_arena_check(f, lo, hi, _brk(self.pid) if attempt else 0)
            if not why:
                break
        if why:
            self.warn(f"[heap] not attributed to glibc's main arena: {why}")
            return
        self.counters["main_system_mem"] = sysmem = f["system_mem"]
        if f["flags"] & NONCONTIGUOUS_BIT:
            self.warn("main arena is non-contiguous (brk failed): its mmap fallback memory is not located")
        self.claim(lo, hi, "main arena")

    def _main_arena_check(self, f: Dict[str, int], lo: int, hi: int, brk: int) -> str:
        ends = {hi, brk} if brk else {hi}
        top = f["top"]
        if not lo <= top < max(ends):
            return f"main_arena.top {top:#x} is outside [heap] {lo:#x}-{max(ends):#x}"
        w = self.tgt.words_if_present(top, 2)
        if w is None:
            return f"the top chunk at {top:#x} is not readable"
        if top + (w[1] & ~7) not in ends:
            return f"top chunk {top:#x} + {w[1] & ~7:#x} does not end [heap] at {hi:#x} (brk {brk:#x})"
        if f["system_mem"] not in {e - lo for e in ends} and not f["flags"] & NONCONTIGUOUS_BIT:
            return f"main_arena.system_mem {f['system_mem']} is not the size of [heap]"
        if self.mp is not None and self.mp["sbrk_base"] != lo:
            return f"mp_.sbrk_base {self.mp['sbrk_base']:#x} is not the start of [heap] {lo:#x}"
        first = self.tgt.words_if_present(lo, 2)
        if first is not None and not (0x20 <= (first[1] & ~7) <= max(ends) - lo and first[1] & 1):
            return f"the first chunk at {lo:#x} has size word {first[1]:#x}"
        return ""

    # -------------------------------------------------------------- stacks

    def find_stacks(self) -> None:
        kernel_nh = _kernel_has_nh()
        for i in range(len(self.rows) - 1):
            g, s = self.rows[i], self.rows[i + 1]
            if not (g.anon and _is_none(g) and s.anon and _is_rw(s) and g.end == s.start):
                continue
            if g.end - g.start > GUARD_MAX or s.end - s.start < PTHREAD_STACK_MIN:
                continue
            if self.is_claimed(g.start, s.end):
                continue
            tops = [s.end]
            default = self.stack_limit if self.stack_limit else 2 * MIB
            if s.start + default < s.end:
                tops.append(s.start + default)  # merged with a mapping above it
            top = pd = 0
            readable = False
            for t in tops:
                for lo, hi in self.tgt.present(max(t - 2 * PAGE, s.start), t):
                    readable = True
                    data = self.tgt.pread(lo, hi - lo)
                    if data is None:
                        continue
                    hits = find_tcb(data, lo)
                    if hits:
                        top, pd = t, hits[0]
                        break
                if pd:
                    break
            if pd:
                self.claim(g.start, top, "pthread stack")
                self.found["pthread_stacks"] += 1
                continue
            strong = (g.flags & VM_NH and s.flags & VM_NH) if kernel_nh and self.has_flags else True
            if not readable and strong:
                self.claim(g.start, s.end, "pthread stack")
                self.found["pthread_stacks"] += 1
                self.found["stacks_by_shape"] += 1
            elif strong and s.flags & VM_NH:
                self.warn(f"stack-shaped mapping {s.start:#x}-{s.end:#x} (MAP_STACK) has no TCB at its top: "
                          "not claimed")
        if self.found["stacks_by_shape"]:
            self.warn(f"{self.found['stacks_by_shape']} pthread stack(s) accepted by their shape alone "
                      "(top pages not present, TCB not checked)")

    # ---------------------------------------------------- other allocators

    def claim_jemalloc(self) -> None:
        if not self.has_flags:
            self.warn("jemalloc owns malloc but the table has no VmFlags: its regions (nr) cannot be told")
            return
        n = 0
        for r in self.rows:
            if r.anon and _is_rw(r) and r.flags & VM_NR and not r.flags & _VM_AC and not self.is_claimed(r.start, r.end):
                self.claim(r.start, r.end, "jemalloc")
                n += 1
        self.found["jemalloc_regions"] = n
        if not n:
            self.warn("jemalloc owns malloc but no anonymous nr mapping was found "
                      "(vm.overcommit_memory=2 maps without MAP_NORESERVE): its regions are not located")

    def claim_tcmalloc(self) -> None:
        if self.heap_range:
            self.claim(*self.heap_range, "tcmalloc")
        lib = [i for i, r in enumerate(self.rows) if os.path.basename(_strip_deleted(r.name)).startswith("libtcmalloc")]
        if not lib:
            return
        last = self.rows[max(lib)]
        j = self.row_at(last.end)
        if j is None or not (self.rows[j].anon and _is_rw(self.rows[j])):
            return
        r = self.rows[j]
        end = r.end
        bss_end = self._bss_end(lib)
        if bss_end is not None:
            end = min(end, bss_end)
        else:
            self.warn("tcmalloc's .bss end unknown (library not readable): its whole anonymous continuation "
                      "is taken as tcmalloc metadata")
        if r.start < end and not self.is_claimed(r.start, end):
            self.claim(r.start, end, "tcmalloc")

    def _bss_end(self, lib: List[int]) -> Optional[int]:
        first = next((self.rows[i] for i in lib if self._offset_zero(self.rows[i])), None)
        if first is None:
            return None
        for p in elf.mapped_path(self.pid, first.start, first.end, first.name):
            info = elf.module_info(p)
            if info is None:
                continue
            bias = first.start - info.min_vaddr
            ends = [bias + e for _, e in info.bss]
            return max(ends) if ends else None
        return None

    def _offset_zero(self, r: _Row) -> bool:
        for i in range(len(self.table)):
            if self.table.starts[i] == r.start:
                return self.table.offsets[i] == 0
        return False

    # ------------------------------------------------------ mmapped chunks

    def walk_chunks(self) -> List[Tuple[int, int]]:
        """4.3: probe every present page of the unclaimed anonymous rw-p
        mappings for an mmapped chunk header."""
        runs: List[Tuple[int, int]] = []
        for r in self.rows:
            if not (r.anon and _is_rw(r)):
                continue
            # Cut the row by claimed intervals (a claimed heap or stack can
            # sit inside a merged mapping) and by the caller's skip ranges.
            pieces = []
            pos = r.start
            for cs, ce in sorted(self.claimed_in(r.start, r.end) + _overlapping(self.skip, r.start, r.end)):
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
        self.walk_runs = runs
        chunks: List[Tuple[int, int]] = []
        pread = os.pread
        unpack = _QQ.unpack
        fd = self.tgt.mem
        probed = gone = 0
        try:
            for rs, re_ in runs:
                skip = rs
                for lo, hi in self.tgt.present(rs, re_):
                    p = max(lo, skip)
                    while p < hi:
                        self.tgt.charge(16)
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
        except _LimitReached:
            self.warn(f"read limit of {self.tgt.limit} bytes reached: the chunk walk stopped early, "
                      "chunks beyond it are not located")
        if gone:
            self.warn(f"{gone} mapping(s) went away during the chunk walk (the process changed since smaps was read)")
        self.found["pages_probed"] = probed
        return chunks

    def check_chunks(self, chunks: List[Tuple[int, int]]) -> None:
        n, total = len(chunks), sum(c[1] for c in chunks)
        self.found["chunks"] = n
        self.found["chunk_bytes"] = total
        if self.mp is None:
            if chunks:
                self.warn(f"{n} mmapped chunk(s) ({total} bytes) found without mp_ to check them against")
            return
        want_n, want_b = self.mp["n_mmaps"], self.mp["mmapped_mem"]
        if (n, total) != (want_n, want_b):
            why = ""
            if n < want_n and self.walk_runs:
                # A header on a swapped-out page is not read (that would swap it in).
                counts = page_counts(self.tgt.pagemap, self.walk_runs, get_engine(None))
                swapped = sum(counts[1::4])
                if swapped:
                    why = f"; {swapped} swapped-out page(s) of the walked mappings were not read"
            self.warn(
                f"unexplained: found {n} mmapped chunk(s) of {total} bytes, glibc counts "
                f"n_mmaps={want_n}, mmapped_mem={want_b} (difference {n - want_n} chunks, "
                f"{total - want_b} bytes){why}"
            )


def _merge(ranges: Iterable[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for a, b in sorted(r for r in ranges if r[0] < r[1]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _overlapping(ranges: List[Tuple[int, int]], start: int, end: int) -> List[Tuple[int, int]]:
    """The ranges (sorted, disjoint) overlapping [start, end)."""
    i = max(bisect.bisect_right(ranges, (start, start)) - 1, 0)
    out = []
    while i < len(ranges) and ranges[i][0] < end:
        if ranges[i][1] > start:
            out.append(ranges[i])
        i += 1
    return out


def _brk(pid: int) -> int:
    """The current end of ``[heap]`` (the program break, page-rounded) from
    a fresh read of /proc/PID/maps (/proc/PID/stat has only start_brk); 0
    when there is none. A process gone meanwhile raises NoSuchProcess."""
    return next((m.end for m in read_maps(pid) if m.name == "[heap]"), 0)


@once
def _kernel_has_nh() -> bool:
    """Kernel 6.7+ marks MAP_STACK mappings VM_NOHUGEPAGE (``nh``)."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (6, 7)


# --------------------------------------------------------------------------
# The entry point


def c_regions(pid: int, table: SmapsTable, *, max_bytes: int = MAX_READ_BYTES,
              stack_limit: Optional[int] = -1, skip: Sequence[Tuple[int, int]] = ()) -> CRegions:
    """The C allocator's regions of process ``pid``.

    ``table``: the process's parsed smaps (``engine.parse_smaps``; a maps
    table works too, but without VmFlags jemalloc regions cannot be told and
    the stack shape rule is weaker). ``max_bytes``: cap on the bytes read
    from /proc/PID/mem; reaching it stops the chunk walk with a warning.
    ``stack_limit``: the target's RLIMIT_STACK soft limit in bytes (None:
    unlimited), read from /proc/PID/limits when left at -1; used only to
    find the TCB of a stack whose mapping merged with one above it.
    ``skip``: (start, end) ranges another owner's structures already account
    for (e.g. the Go heap's arenas, which Go reserves whole, so no glibc
    mmap can land inside them): not walked for chunk headers, and no chunk
    may extend into them. Only a speed-up; should a range be wrong, a chunk
    missed shows in the ``mp_`` cross-check.

    Raises NoSuchProcess, AccessDenied (reading another process's memory
    needs ptrace-read access) as every /proc read does.
    """
    if stack_limit == -1:
        try:
            stack_limit = procfs.stack_limit(pid)
        except Exception:  # noqa: BLE001 - only a hint
            stack_limit = None
    names = [n for n in table.names if n.startswith("/")]
    hint = elf.allocator(names)
    mem_path = procfs.path(pid, "mem")
    with procfs.translated(pid, mem_path):
        tgt = TargetMemory(pid, max_bytes, over_limit=_LimitReached, subject="C allocator")
        try:
            s = _Scan(pid, table, tgt, stack_limit)
            s.skip = _merge(skip)
            allocator = _run(s, hint)
        except ProcessLookupError as err:
            raise NoSuchProcess(pid) from err
        finally:
            tgt.close()
    # A process that exits mid-scan reads as nothing (pread returns 0 bytes,
    # PAGEMAP_SCAN finds no pages): never report that as "no C memory".
    st = procfs.stat(pid)
    if st.gone or st.exiting:
        raise NoSuchProcess(pid, "process exited during the scan")
    intervals = sorted(s.intervals)
    for (a0, a1, k0), (b0, b1, k1) in zip(intervals, intervals[1:]):
        if b0 < a1:  # cannot happen: every claim checks what is claimed
            raise AssertionError(f"overlapping C regions {a0:#x}-{a1:#x} {k0} and {b0:#x}-{b1:#x} {k1}")
    return CRegions(intervals, s.counters, s.warnings, allocator, s.found, tgt.charged, s.version)


def _run(s: _Scan, hint: Optional[str]) -> Optional[str]:
    libc = s.find_libc()
    if not libc:
        if hint in ("musl", "mimalloc", "jemalloc", "tcmalloc"):
            s.warn(f"{hint} without glibc: C allocator regions are not identified")
        elif s.heap_rows:
            s.warn("[heap] present but no shared libc loaded (static binary?): C allocator not identified")
        return hint
    try:
        s.read_libc_data(libc)
        s.find_main_arena(last_try=False)
        if not s.main_arena:
            s.read_libc_bss(libc)
            s.find_main_arena(last_try=True)
        s.find_mp()
        s.remember_statics()
        if s.main_arena:
            s.main_arena_fields()
        preloaded = hint in ("jemalloc", "tcmalloc", "mimalloc")
        # glibc 2.34+ initialises main_arena in __libc_early_init, before
        # any malloc: under a preloaded allocator its bins point to
        # themselves all the same. Unused means: no memory (system_mem 0),
        # top still the initial one, no mmapped chunk, no brk.
        unused = not s.main_arena or (
            s.main_fields.get("system_mem") == 0
            and s.main_fields.get("top") == s.main_arena + MS_TOP
            and (s.mp is None or (s.mp["n_mmaps"] == 0 and s.mp["sbrk_base"] == 0))
        )
        owner = hint if preloaded and unused else "glibc"
        if preloaded and not unused:
            s.warn(f"{hint} is loaded but glibc's main_arena is in use: glibc malloc is taken as the allocator")
        # Thread arenas first (their heaps can look like anything else's shape).
        if owner == "glibc":
            valid = s.check_ring(s.find_heaps())
            if s.main_arena and not s.main_fields:
                s.main_arena_fields()  # found through the ring
            heaps = 0
            size = 0
            for ar, bases in valid.items():
                for b in bases:
                    s.claim(b, b + s.heap_max, "arena")
                    heaps += 1
                    size += s.heap_cands[b][2]
            s.found["arenas"] = len(valid)
            s.found["heaps"] = heaps
            s.counters["heaps_size"] = size
            if s.main_arena:
                s.claim_main_arena()
                if "main_system_mem" in s.counters and s.ring_complete:
                    s.counters["arena"] = s.counters["main_system_mem"] + size
            else:
                s.warn("main_arena not found in libc's data: [heap] and thread arenas not attributed")
        s.find_stacks()
        if owner == "jemalloc":
            s.claim_jemalloc()
            if s.heap_range:
                s.warn(f"[heap] ({s.heap_range[1] - s.heap_range[0]} bytes) not attributed: glibc's main arena "
                       "does not use it under jemalloc (jemalloc's dss?)")
        elif owner == "tcmalloc":
            s.claim_tcmalloc()
            if not s.heap_range:
                s.warn("tcmalloc owns malloc but there is no [heap]: the memory it mmaps when sbrk fails "
                       "is not located")
        elif owner == "mimalloc":
            s.warn("mimalloc owns malloc: its regions are not identified")
        if owner == "glibc":
            chunks = s.walk_chunks()
            for start, total in chunks:
                s.claim(start, start + total, "mmapped chunk")
            s.check_chunks(chunks)
        return owner
    except _LimitReached:
        s.warn(f"read limit of {s.tgt.limit} bytes reached before the scan finished: results are partial")
        return hint
