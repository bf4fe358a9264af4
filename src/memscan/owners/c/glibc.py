"""glibc's malloc statics, found in libc's writable data of a live process:
``main_arena`` (``struct malloc_state``) and ``mp_`` (``struct malloc_par``),
and the main arena's claim on ``[heap]`` (malloc/malloc.c, malloc/arena.c).

- ``main_arena`` by a signature scan over libc's writable
  data (a 16-aligned ``malloc_state`` with at least 64 of its 127 bins
  pointing to themselves, and, since the address 16 bytes higher collects
  as many votes when the unsorted bin is in use, every other bin, ``top``
  and ``next`` pointing where a main arena's can), or else through the
  arenas' ``next`` ring (:mod:`.arenas`); ``mp_`` by a ranked scan
  (:func:`mp_candidates`).
- ``[heap]`` is the main arena's when ``main_arena.top`` lies in it and ends
  it, ``system_mem`` equals its size and ``mp_.sbrk_base`` its start; as brk
  moves in a busy process, a failed check is retried against
  a fresh ``[heap]`` end from /proc/PID/maps.
"""

from __future__ import annotations

import bisect
import mmap
import os
import re
import struct
from types import ModuleType
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ... import elf
from ..._cache import LRU
from ..._types import PERM_R, PERM_S, PERM_W
from ...kernel.linux import PAGE_SIZE as PAGE
from ...layout.rules import ARENA, MIB
from ..memory import read_maps
from .mappings import Mappings, is_rw

KIB = 1024
MMAP_THRESHOLD_MAX = 32 * MIB  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit

# struct malloc_state, glibc 2.27+ x86_64 (5.1; sizeof 0x898 in 2.36).
MS_TOP = 0x60
MS_BINS = 0x70
MS_NEXT = 0x870
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


# main_arena and mp_ are static variables of libc: once a search of libc's
# data has found one, it stays at that address for as long as that file is
# mapped there. Later scans check the remembered address (the same tests the
# search applies) and search again only when the check fails. That saves
# ~8 ms per scan; keyed by (pid, start, device, inode) of the libc mapping.
_STATICS_KEPT = 256
_statics: "LRU[Tuple[int, ...], Tuple[int, int, str]]" = LRU(_STATICS_KEPT)  # -> (main_arena, mp_, layout)

_LIBC = re.compile(r"^(?:libc\.so\.6|libc-2\.\d+(?:\.\d+)?\.so)$")


def _brk(pid: int, engine: ModuleType) -> int:
    """The current end of ``[heap]`` (the program break, page-rounded) from
    a fresh read of /proc/PID/maps (/proc/PID/stat has only start_brk); 0
    when there is none. A process gone meanwhile raises NoSuchProcess."""
    return next((m.end for m in read_maps(pid, engine) if m.name == "[heap]"), 0)


class Glibc:
    """glibc's statics in libc's writable data, and what they say."""

    def __init__(self, maps: Mappings) -> None:
        self.maps = maps
        self.version: Optional[Tuple[int, int]] = None
        self.libc_key: Tuple[int, ...] = ()  # (pid, start, device, inode) of the libc mapped
        self.mp_layout = ""  # of the mp_ found by search
        self.main_arena = 0
        self.main_fields: Dict[str, int] = {}
        self.mp: Optional[Dict[str, int]] = None
        self.libc_data: List[Tuple[int, bytes]] = []  # (address, bytes) of libc's writable data read
        self.libc_rw: List[Tuple[int, int]] = []
        # Heap size and alignment: HEAP_MAX_SIZE, or 4 huge pages with
        # glibc.malloc.hugetlb=2 in 2.35-2.41 (malloc/arena.c); set from mp_.
        self.heap_max = ARENA

    # ---------------------------------------------------------------- libc

    def find_libc(self) -> List[int]:
        idx = [i for i, r in enumerate(self.maps.rows) if _LIBC.match(os.path.basename(elf.strip_deleted(r.name)))]
        if not idx:
            return []
        r0 = self.maps.rows[idx[0]]
        self.version = _glibc_version(elf.mapped_path(self.maps.pid, r0.start, r0.end, r0.name))
        t = bisect.bisect_left(self.maps.table.starts, r0.start)
        self.libc_key = (self.maps.pid, r0.start, self.maps.table.devs[t], self.maps.table.inodes[t])
        return idx

    def read_libc_data(self, idx: List[int]) -> None:
        """Read libc's writable file-backed data (``.data``: ``main_arena``
        and ``mp_`` have initialisers, so they are there, not in ``.bss``)."""
        for i in idx:
            r = self.maps.rows[i]
            if r.perms & (PERM_R | PERM_W) == PERM_R | PERM_W and not r.perms & PERM_S:
                self.libc_rw.append((r.start, r.end))
        self._read_ranges(self.libc_rw)

    def read_libc_bss(self, idx: List[int]) -> None:
        """The anonymous continuation after libc's writable data (its
        ``.bss``), read only when ``.data`` held no ``main_arena``: a build
        that put it there would still be found. At most 1 MiB."""
        last = self.maps.rows[max(idx)]
        j = self.maps.row_at(last.end)
        if j is None:
            return
        r = self.maps.rows[j]
        if r.anon and is_rw(r):
            rng = (r.start, min(r.end, r.start + MIB))
            self.libc_rw.append(rng)
            self._read_ranges([rng])

    def _read_ranges(self, ranges: Iterable[Tuple[int, int]]) -> None:
        for start, end in ranges:
            self.libc_data.extend(self.maps.tgt.read_present(start, end))

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
            self.maps.warn(f"main_arena ambiguous: {len(cands)} candidates in libc's data "
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
            if self.maps.heap_range and self.maps.heap_range[0] <= p < self.maps.heap_range[1]:
                return True
            i = self.maps.row_at(p)
            return i is not None and self.maps.rows[i].anon and is_rw(self.maps.rows[i])

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
        heap_start = self.maps.heap_range[0] if self.maps.heap_range else 0
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
            self.maps.warn("mp_ not found in libc's data: hblks/hblkhd unknown, mmapped chunks not cross-checked")
            return
        if len(cands) > 1 and cands[1][0] == cands[0][0]:
            self.maps.warn(
                f"mp_ ambiguous: {sum(1 for c in cands if c[0] == cands[0][0])} candidates score "
                f"{cands[0][0]}: hblks/hblkhd unknown, mmapped chunks not cross-checked"
            )
            return
        score, addr, layout, fields = cands[0]
        if score < 4:
            self.maps.warn(f"mp_ candidate at {addr:#x} scores only {score}: not trusted")
            return
        self.mp_layout = layout
        self.use_mp(addr, fields)

    def use_mp(self, addr: int, fields: Dict[str, int]) -> None:
        self.mp = fields
        self.maps.found["mp_"] = addr
        self.maps.counters["n_mmaps"] = fields["n_mmaps"]
        self.maps.counters["mmapped_mem"] = fields["mmapped_mem"]
        self.maps.counters["mmap_threshold"] = fields["mmap_threshold"]
        self.maps.counters["hblks"] = fields["n_mmaps"]
        self.maps.counters["hblkhd"] = fields["mmapped_mem"]
        hp = fields.get("hp_pagesize", 0)
        if hp and (self.version is None or self.version < (2, 42)):
            self.heap_max = 4 * hp

    def remember_statics(self) -> None:
        """Remember where the search found main_arena and mp_ (see _statics)."""
        known = _statics.get(self.libc_key, (0, 0, ""))
        found = (self.main_arena or known[0], self.maps.found["mp_"] or known[1], self.mp_layout or known[2])
        if self.libc_key and found != known and (self.main_arena or self.mp_layout):
            _statics.put(self.libc_key, found)

    # ---------------------------------------------------------- main arena

    def main_arena_fields(self) -> None:
        m = self.main_arena
        w = self.libc_words(m, MS_SIZE // 8)
        if w is None:
            w = self.maps.tgt.words_if_present(m, MS_SIZE // 8)
        if w is None:
            self.maps.warn(f"main_arena at {m:#x} not readable")
            self.main_arena = 0
            return
        self.maps.found["main_arena"] = m
        self.main_fields = {
            "flags": w[0] >> 32, "top": w[MS_TOP // 8], "next": w[MS_NEXT // 8],
            "system_mem": w[MS_SYSTEM_MEM // 8],
        }

    def claim_main_arena(self) -> None:
        f = self.main_fields
        sysmem = f["system_mem"]
        self.maps.counters["main_system_mem"] = sysmem
        if self.maps.heap_range is None:
            if sysmem:
                self.maps.warn(f"main_arena.system_mem is {sysmem} but there is no [heap]: "
                               "its memory (mmap fallback) is not located")
            return
        lo, hi = self.maps.heap_range
        # The target runs on: brk may have moved since smaps was read. Each
        # try reads main_arena, its top chunk and the current brk (from
        # /proc/PID/stat) close together; the top chunk must end at either
        # [heap]'s end in the table or the current brk.
        why = ""
        for attempt in range(3):
            if attempt:
                w = self.maps.tgt.words_if_present(self.main_arena, MS_SIZE // 8)
                if w is None:
                    break
                f = {"flags": w[0] >> 32, "top": w[MS_TOP // 8], "system_mem": w[MS_SYSTEM_MEM // 8]}
            why = self._main_arena_check(f, lo, hi, _brk(self.maps.pid, self.maps.tgt.engine) if attempt else 0)
            if not why:
                break
        if why:
            self.maps.warn(f"[heap] not attributed to glibc's main arena: {why}")
            return
        self.maps.counters["main_system_mem"] = sysmem = f["system_mem"]
        if f["flags"] & NONCONTIGUOUS_BIT:
            self.maps.warn("main arena is non-contiguous (brk failed): its mmap fallback memory is not located")
        self.maps.claim(lo, hi, "main arena")

    def _main_arena_check(self, f: Dict[str, int], lo: int, hi: int, brk: int) -> str:
        ends = {hi, brk} if brk else {hi}
        top = f["top"]
        if not lo <= top < max(ends):
            return f"main_arena.top {top:#x} is outside [heap] {lo:#x}-{max(ends):#x}"
        w = self.maps.tgt.words_if_present(top, 2)
        if w is None:
            return f"the top chunk at {top:#x} is not readable"
        if top + (w[1] & ~7) not in ends:
            return f"top chunk {top:#x} + {w[1] & ~7:#x} does not end [heap] at {hi:#x} (brk {brk:#x})"
        if f["system_mem"] not in {e - lo for e in ends} and not f["flags"] & NONCONTIGUOUS_BIT:
            return f"main_arena.system_mem {f['system_mem']} is not the size of [heap]"
        if self.mp is not None and self.mp["sbrk_base"] != lo:
            return f"mp_.sbrk_base {self.mp['sbrk_base']:#x} is not the start of [heap] {lo:#x}"
        first = self.maps.tgt.words_if_present(lo, 2)
        if first is not None and not (0x20 <= (first[1] & ~7) <= max(ends) - lo and first[1] & 1):
            return f"the first chunk at {lo:#x} has size word {first[1]:#x}"
        return ""
