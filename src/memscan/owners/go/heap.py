"""The Go runtime's own page states of its heap, read from a live process.

For the exact tier: every 8 KiB runtime page of every heap arena of one Go
runtime gets a state, from the runtime's structures read read-only through
``/proc/PID/mem`` (runtime/mheap.go, mpagealloc.go, mgcscavenge.go):

- ``mheap_.heapArenas`` (``allArenas`` before Go 1.25) lists the arenas;
  ``mheap_.arenas[l1][l2]`` points to each one's ``heapArena``, whose
  ``spans`` array maps every page to an ``*mspan``;
- ``mspan.state`` says what a span holds: ``mSpanInUse`` (objects) or
  ``mSpanManual`` (goroutine stacks, GC workbufs);
- the page allocator, ``mheap_.pages``, keeps two bits per page in
  ``chunks[l1][l2]`` (``pallocData``, one per 4 MiB chunk): allocated
  (``pallocBits``) and scavenged (returned to the OS); ``pages.inUse`` lists
  the address ranges it has grown into;
- each P's page cache (``allp[i].pcache``) holds up to 64 pages that are
  allocated in the bitmaps but belong to no span; it remembers which of them
  were scavenged.

States, per page:

========  ===================================================================
OBJECTS   allocated, covered by an mSpanInUse span (= MemStats.HeapInuse)
STACKS    covered by an mSpanManual span: goroutine stacks (= StackInuse)
          plus GC workbufs (counted in GCSys)
FREE      grown, not in a span, not scavenged (= HeapIdle - HeapReleased)
RELEASED  grown, not in a span, scavenged (= HeapReleased)
RESERVED  arena address space the page allocator never grew into: mapped
          PROT_NONE, not in HeapSys at all
========  ===================================================================

Pages allocated in the bitmaps but in no span are counted the way MemStats
counts them, which is never as in-use: pages in a P's page cache are idle
(FREE, or RELEASED when the cache says they were scavenged: the runtime
moves their scavenged bits into the cache and still counts them in
HeapReleased until a span takes them); Go 1.26+ marks a random number of
padding pages at the start of the first heap chunk allocated *and*
scavenged, never touched, counted as released (RELEASED). A page the
background scavenger is releasing at this very moment is allocated without
a span and not yet scavenged: FREE, as MemStats still counts it.

RESERVED is a fifth state next to the four of the page allocator: an arena
is reserved in 64 MiB steps but grown into in 4 MiB chunks, so the last
arena usually has a PROT_NONE tail (Go 1.26+ also skips a random part at the
start of the first arena). Calling it FREE or RELEASED would break both
identities above; ``exact`` already names it "reserved" (index 4).

Safety: ``/proc/PID/mem`` is opened ``O_RDONLY`` and only ``os.pread`` is
used, no ptrace. Reading a never-touched anonymous page through it maps the
zero page into the target (the page turns present in its pagemap, which the
exact tier reads), so every anonymous page is looked up in
``/proc/PID/pagemap`` first and taken as zeros when neither present nor
swapped; a heapArena's spans array, for one, is mostly untouched in a
partly grown arena. Every pointer followed must lie in a
readable mapping of ``/proc/PID/maps``, and the total read is capped.

The target keeps running while we read (spans arrays first, then the
mspans, then the bitmaps, a few milliseconds): what changed half-way shows
as disagreement. A live span outside the arenas, a pointer outside every
mapping, page bits outside the grown ranges raise :class:`HeapChanged`
from the arena being read; the grown ranges and the arena list are read
again and that arena alone is read again (``_ARENA_TRIES``), past which
the whole read gives up and the caller may try again. Pages that disagree
one by one (a live span whose pages do not point back to it or are not
allocated, allocated pages in no span and no page cache) are "unsettled":
only they are read again, their spans entries, mspans, bitmaps and the
page caches within a fraction of a millisecond (``_SETTLE_TRIES`` times),
so that a program allocating on every core, which changes a few percent of
its heap in the milliseconds a whole read takes, still reads consistently
arena by arena. What stays unsettled gets the state the bitmaps give and
is counted in ``HeapPages.unsettled``; an arena with more than
``max_unsettled`` of its grown pages unsettled is named in
``HeapPages.warnings``. Nothing here loops on the target's data: every
read is bounded by counts checked beforehand.

Layouts come from the binary (:mod:`memscan.owners.go.binary`): its DWARF
and symbol table, or for a binary without DWARF the shipped layout tables;
without symbols either, mheap_ and allp are found in the target first
(:mod:`memscan.owners.go.search`).
"""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any, Dict, Iterator, List, Literal, NamedTuple, Optional, Sequence, Tuple

from ..._cache import LRU
from ..._errors import Error, HeapChanged, ReadLimitExceeded
from ...kernel import procfs
from ..memory import Mapping, TargetMemory
from . import binary, bits, search
from .dwarf import Slice
from .layout import MAX_PS, Layout
from .states import FREE, OBJECTS, RELEASED, RESERVED, STACKS, STATE_NAMES, Span, arena_states

__all__ = [
    "OBJECTS",
    "STACKS",
    "FREE",
    "RELEASED",
    "RESERVED",
    "STATE_NAMES",
    "MAX_READ_BYTES",
    "MAX_UNSETTLED",
    "HeapPages",
    "read_heap",
]

#: Default share of an arena's grown pages that may still disagree after
#: their re-reads before a warning names the arena (see :func:`read_heap`):
#: idle programs read with none.
MAX_UNSETTLED = 0.01

#: Default cap on the bytes one :func:`read_heap` asks from the target
#: (memory plus pagemap entries). A 64 MiB heap needs ~160 KB; a heap of
#: small spans up to ~1 MB per 64 MiB arena (spans array, mspans), so the
#: cap is reached somewhere between 20 and 250 GiB of heap.
MAX_READ_BYTES = 256 << 20

# Sanity bounds on counts read from the target, checked before reading.
_MAX_RANGES = 1 << 16  # pages.inUse entries (one per discontiguous growth)
# mspans whose addresses lie at most _SPAN_GAP apart are read with one pread
# of at most _SPAN_BATCH bytes. The mspans of one arena interleave with
# those of the others; measured on a 1 GiB heap of small spans: gap 256 B:
# 6.7 MB read, 290 ms; 1 KiB: 11.5 MB, 235 ms; 8 KiB: 60 MB, 171 ms.
_SPAN_GAP = 1024
_SPAN_BATCH = 64 << 10
# Reads of one arena that hit a structural change (see the module doc), and
# re-reads of its unsettled pages. Measured on a program allocating on every
# core of 2 (tests/goprogs/churn, ~155 MiB grown): one pass over the heap
# left a median 8 MiB unsettled; with the re-reads, none in most reads and
# at most 144 KiB in 60.
_ARENA_TRIES = 3
_SETTLE_TRIES = 3


class HeapPages(NamedTuple):
    """The page states of one Go runtime's heap arenas."""

    #: Sorted, non-overlapping ``(start, end, state)``, adjacent pages with
    #: the same state merged (also across adjacent arenas); together they
    #: cover every arena exactly.
    intervals: List[Tuple[int, int, int]]
    #: Base address of every arena, sorted; each is ``[base, base + arena_bytes)``.
    arenas: Tuple[int, ...]
    #: ``runtime.heapArenaBytes`` (64 MiB on 64-bit Linux).
    arena_bytes: int
    #: ``runtime.pageSize`` (8 KiB).
    page_size: int
    #: The runtime's Go version, e.g. ``"go1.27.3"``.
    go_version: str
    #: Bytes read from /proc/PID/mem (pages found non-resident not included).
    bytes_read: int
    #: Bytes read from /proc/PID/pagemap.
    pagemap_bytes: int
    #: Bytes of pages whose structures disagreed, i.e. changed while they
    #: were read (classified from the page allocator's bitmaps alone); 0 for
    #: an idle program.
    unsettled: int = 0
    #: Parts of the heap read with less certainty: an arena whose pages
    #: kept changing through every re-read (classified from the bitmaps).
    warnings: Tuple[str, ...] = ()

    def totals(self) -> Dict[str, int]:
        """Bytes per state name."""
        out = dict.fromkeys(STATE_NAMES, 0)
        for start, end, state in self.intervals:
            out[STATE_NAMES[state]] += end - start
        return out


# --------------------------------------------------------------------------
# The target: bounded, validated, read-only reads


def target(pid: int, limit: int, engine: Optional[ModuleType]) -> TargetMemory:
    """The reader of a Go runtime's structures: ranges checked against
    /proc/PID/maps (parsed by ``engine``; None: the default one),
    :class:`HeapChanged` when they do not add up, :class:`ReadLimitExceeded`
    past ``limit`` bytes (pagemap included)."""
    return TargetMemory(pid, limit, changed=HeapChanged, over_limit=ReadLimitExceeded, subject="Go heap", maps=True,
                        engine=engine)


# --------------------------------------------------------------------------
# Reading the heap


def read_heap(pid: int, binary_path: str, load_bias: int, *, max_bytes: int = MAX_READ_BYTES,
              max_unsettled: float = MAX_UNSETTLED, tables: binary.Tables = None,
              engine: Optional[ModuleType] = None) -> HeapPages:
    """The page states of the heap of the Go runtime in ``binary_path``.

    ``binary_path`` opens the ELF file holding the runtime as the process
    maps it (e.g. a ``/proc/PID/map_files`` entry, see
    :func:`memscan.elf.mapped_path`); ``load_bias`` is 0 for ET_EXEC,
    else the mapping's start minus ``ModuleInfo.min_vaddr``. One pass, no
    retry.

    ``max_unsettled``: the fraction of an arena's grown pages that may
    still disagree after their re-reads (``HeapPages.unsettled``) before
    the arena is named in ``HeapPages.warnings``; 0 names every arena with
    a page whose span, spans entry and bitmaps did not agree.

    ``tables``: read a binary without DWARF with the layout tables shipped
    in :mod:`memscan.owners.go.tables` (by its Go minor version; only default
    GOEXPERIMENTs): with its symbol table (``-ldflags=-w``) the addresses
    come from the symbols, without (``-s``, ``strip``) mheap_ and allp are
    found by a symbol-less scan of its data segments (see
    :func:`memscan.owners.go.search.resolve`). None:
    :data:`memscan.owners.go.binary.LAYOUT_TABLES` (False: such binaries are
    NoRuntimeInfo; a collection of Go minor versions: only their tables).
    A binary of a Go version without a table is read with the nearest
    version's table whose reading is plausible, named in
    ``HeapPages.warnings``. ``engine``: the engine that parses
    /proc/PID/maps (None: the default one).

    Raises:
        NoRuntimeInfo: the binary has no DWARF or symbol table (or not the
            types this reader knows); retrying cannot help.
        HeapChanged: the structures changed under us (a pointer or span
            outside the heap, allocated pages outside the grown ranges)
            through every re-read of an arena; try again.
        ReadLimitExceeded: more than ``max_bytes`` would have to be read.
        NoSuchProcess, AccessDenied: as for every /proc read (reading
            another process's memory needs ptrace-attach rights).
    """
    lay = binary.layout_of(binary_path, tables)
    with target(pid, max_bytes, engine) as t, procfs.translated(pid, procfs.path(pid, "mem")):
        lay = search.resolve(t, lay, load_bias, binary_path)
        return _Reader(t, lay, load_bias, max_unsettled, binary.display_path(binary_path)).heap()


class _Arena(NamedTuple):
    base: int
    heap_arena: int  # address of its runtime.heapArena


class _ArenaMemo(NamedTuple):
    """One arena's decoding, with the bytes it was decoded from."""

    spans: bytes  # heapArena.spans: the *mspan of every page (nil: never allocated)
    batches: List[Tuple[int, int, List[int]]]  # (address, size, mspan pointers) of the mspan reads
    inputs: Tuple[Any, ...]  # the mspan bytes, page bitmaps, grown ranges, page caches, arena cover
    runs: List[Tuple[int, int, int]]  # (start, end, state), as bits.state_runs gives them
    unsettled: int


# The last decoding of each arena of recent processes, by (pid, arena base).
# A memo is used only when every byte it was decoded from reads the same
# again, so a reused pid or an exec cannot make it wrong. At most
# _ARENA_MEMOS arenas (64 MiB each on 64-bit Linux): ~80 KB apiece.
_ARENA_MEMOS = 1024
_arena_memos: "LRU[Tuple[int, int], _ArenaMemo]" = LRU(_ARENA_MEMOS)


class _Reader:
    """One read of one runtime's heap structures."""

    def __init__(self, target: TargetMemory, lay: Layout, load_bias: int, max_unsettled: float,
                 name: str = "") -> None:
        self.t = target
        self.lay = lay
        self.max_unsettled = max_unsettled
        self.name = name  # the binary, for warnings
        self.mask = (1 << (8 * lay.ptr)) - 1
        self.mheap = (lay.mheap + load_bias) & self.mask
        self.allp = (lay.allp + load_bias) & self.mask if lay.allp else 0
        self.page_size = lay.page_size
        self.npages = lay.spans_len  # pages per arena
        self._chunk_blocks: Dict[int, int] = {}  # mheap_.pages.chunks[l1]

    def word(self, addr: int, what: str) -> int:
        return self.t.word(addr, self.lay.word, what)

    def slice(self, addr: int, s: Slice, limit: int, what: str) -> bytes:
        """The elements of the slice whose header is at ``addr``."""
        first = min(s.array, s.len, s.cap)
        raw = self.t.read(addr + first, max(s.array, s.len, s.cap) + self.lay.ptr - first, what)
        array, length, cap = (struct.unpack_from(self.lay.word, raw, off - first)[0]
                              for off in (s.array, s.len, s.cap))
        if length > cap or length > limit or (length and not array):
            raise HeapChanged(f"{what}: implausible slice (len {length}, cap {cap})")
        return self.t.read(array, length * s.elem, what)

    def checked_arenas(self) -> List[_Arena]:
        """The arenas, once mheap_ is found in a readable mapping: where it is
        not, the binary (or load bias) is not this process's."""
        m = self.t.mapping(self.mheap)
        if m is None or not m.readable:
            raise Error(f"runtime.mheap_ at {self.mheap:#x} is not mapped in pid {self.t.pid}: "
                        "not the binary (or load bias) of this process")
        return self.arenas()

    def cover(self, arenas: List[_Arena]) -> List[Tuple[int, int]]:
        return bits.merge([(a.base, a.base + self.lay.arena_bytes) for a in arenas])

    def heap(self) -> HeapPages:
        lay = self.lay
        arenas = self.checked_arenas()
        grown = self.grown_ranges()
        caches = self.page_caches()
        cover = self.cover(arenas)
        runs = []
        unsettled = 0
        warnings = []
        if lay.table:
            warnings.append(f"Go heap of {self.name}: memscan has no layout table for {lay.go_version}; read with "
                            f"the table of Go {lay.table}, the nearest whose reading of the heap is plausible")
        for a in arenas:
            for attempt in range(_ARENA_TRIES):
                try:
                    arena, changed = self.arena_pages(a, cover, grown, caches)
                    break
                except HeapChanged:
                    if attempt + 1 == _ARENA_TRIES:
                        raise
                    # The heap grew (mappings, pages or arenas) since they
                    # were read: read them again, then this arena alone.
                    self.t.refresh_maps()
                    self.t.forget_residency()
                    grown, caches = self.grown_ranges(), self.page_caches()
                    cover = bits.merge(cover + self.cover(self.arenas()))
            runs.append(arena)
            unsettled += changed * self.page_size
            grown_pages = sum(e - s for s, e, state in arena if state != RESERVED) // self.page_size
            if changed > self.max_unsettled * grown_pages:
                warnings.append(f"Go heap of {self.name}: {changed * self.page_size // 1024} KiB of the arena at "
                                f"{a.base:#x} kept changing through {1 + _SETTLE_TRIES} reads; those pages are "
                                "classified from the page allocator's bitmaps alone")
        return HeapPages(
            intervals=bits.intervals(runs),
            arenas=tuple(a.base for a in arenas),
            arena_bytes=lay.arena_bytes,
            page_size=self.page_size,
            go_version=lay.go_version,
            bytes_read=self.t.bytes_read,
            pagemap_bytes=self.t.pagemap_bytes,
            unsettled=unsettled,
            warnings=tuple(warnings),
        )

    def arena_pages(self, a: _Arena, cover: List[Tuple[int, int]], grown: List[Tuple[int, int]],
                    caches: List[Tuple[int, int, int]]) -> Tuple[List[Tuple[int, int, int]], int]:
        """The runs of page states of one arena, (start, end, state), and
        its unsettled page count.

        Reads first and decoding after, so that what the program changes
        meanwhile (HeapPages.unsettled) is what it changes in the few
        milliseconds this arena takes; then the pages that disagree are
        read again (see settle). The states are a function of the bytes
        read alone: when they equal the previous scan's (an arena the
        program did not touch in between, most of a large heap between two
        samples) the previous decoding is reused."""
        # heapArena.spans: the *mspan of every page (nil: never allocated),
        # at 0x104000 in Go 1.21 (after the 1 MiB pointer bitmap), at 0 from 1.22.
        raw = self.read_spans(a, 0, self.npages)
        key = (self.t.pid, a.base)
        memo = _arena_memos.get(key)
        same = memo is not None and memo.spans == raw
        if memo is not None and same:  # the same mspans: read them where they were
            batches = [(lo, self.t.read(lo, size, "mspan"), ptrs) for lo, size, ptrs in memo.batches]
        else:
            batches = self.read_span_batches({p for p in self._spans(raw) if p})
        alloc, scav = self.chunk_bits(a.base)
        inputs = ([b for _, b, _ in batches], (alloc, scav), grown, caches, cover)
        if memo is not None and same and memo.inputs == inputs:
            return memo.runs, memo.unsettled
        spans = self._spans(raw)
        states, changed = arena_states(self.lay, a.base, spans, self.decode_spans(batches), cover, alloc, scav,
                                       grown, caches)
        for _ in range(_SETTLE_TRIES):
            if not changed:
                break
            changed = self.settle(a, states, changed, spans, cover, grown)
        unsettled = bin(changed).count("1")
        runs = bits.state_runs(a.base, states, self.page_size)
        _arena_memos.put(key, _ArenaMemo(raw, [(lo, len(b), ptrs) for lo, b, ptrs in batches], inputs, runs,
                                        unsettled))
        return runs, unsettled

    def settle(self, a: _Arena, states: bytearray, changed: int, spans: Tuple[int, ...],
               cover: List[Tuple[int, int]], grown: List[Tuple[int, int]]) -> int:
        """Read the pages of ``changed`` (bit i = page i of the arena) again:
        their spans entries, the mspans these name, the arena's bitmaps and
        the page caches, back to back; ``states`` of the pages that now
        agree are updated. Returns the pages that still disagree.

        The other pages keep the states of the arena's first read: each
        page's state is one the runtime had while the arena was read."""
        self.t.forget_residency()  # spans entries and mspans the program touched since
        first = (changed & -changed).bit_length() - 1
        end = changed.bit_length()
        fresh = self._spans(self.read_spans(a, first, end - first))
        spans = spans[:first] + fresh + spans[end:]
        pointers = {spans[i] for lo, hi in bits.runs(changed) for i in range(lo, hi) if spans[i]}
        info = self.decode_spans(self.read_span_batches(pointers))
        alloc, scav = self.chunk_bits(a.base)
        again, still = arena_states(self.lay, a.base, spans, info, cover, alloc, scav, grown, self.page_caches())
        settled = changed & ~still
        for lo, hi in bits.runs(settled):
            states[lo:hi] = again[lo:hi]
        return changed & still

    def read_spans(self, a: _Arena, first: int, count: int) -> bytes:
        """Entries [first, first + count) of the arena's heapArena.spans."""
        ptr = self.lay.ptr
        return self.t.read(a.heap_arena + self.lay.spans + first * ptr, count * ptr,
                           f"heapArena.spans of arena {a.base:#x}")

    def _spans(self, raw: bytes) -> Tuple[int, ...]:
        return struct.unpack(f"{self.lay.word[0]}{len(raw) // self.lay.ptr}{self.lay.word[1:]}", raw)

    # -- arenas

    def arenas(self) -> List[_Arena]:
        """Every arena: mheap_.heapArenas (Go 1.25+; allArenas in 1.21-1.24)
        holds their indices, mheap_.arenas[l1][l2] their heapArena."""
        lay = self.lay
        idx_word = lay.word[0] + ("Q" if lay.heap_arenas.elem == 8 else "I")
        raw = self.slice(self.mheap + lay.heap_arenas.offset, lay.heap_arenas,
                         self.t.limit // lay.heap_arenas.elem, "mheap_.heapArenas")
        indices = [idx for (idx,) in struct.iter_unpack(idx_word, raw)]
        by_l1: Dict[int, List[int]] = {}
        for idx in indices:
            l1, l2 = divmod(idx, lay.arenas_l2)
            if l1 >= lay.arenas_l1:
                raise HeapChanged(f"arena index {idx:#x} out of range")
            by_l1.setdefault(l1, []).append(l2)
        out = []
        for l1, l2s in by_l1.items():
            l2_array = self.word(self.mheap + lay.arenas + l1 * lay.ptr, "mheap_.arenas")
            if not l2_array:
                raise HeapChanged(f"mheap_.arenas[{l1}] is nil for arena index {l1 * lay.arenas_l2 + l2s[0]:#x}")
            # The heap grows in runs of arenas: their index entries lie
            # together, read at once (one 8-byte read per arena otherwise).
            lo, hi = min(l2s), max(l2s) + 1
            entries = self.t.words(l2_array + lo * lay.ptr, hi - lo, lay.word, "heap arena index entries")
            for l2 in l2s:
                ha = entries[l2 - lo]
                idx = l1 * lay.arenas_l2 + l2
                if not ha:
                    raise HeapChanged(f"arena index {idx:#x} has no heapArena")
                out.append(_Arena((idx * lay.arena_bytes + lay.arena_base_offset) & self.mask, ha))
        out.sort()
        if len({a.base for a in out}) != len(out):
            raise HeapChanged("an arena is listed twice")
        return out

    # -- page allocator

    def grown_ranges(self) -> List[Tuple[int, int]]:
        """mheap_.pages.inUse: the address ranges the page allocator grew into."""
        lay = self.lay
        raw = self.slice(self.mheap + lay.in_use.offset, lay.in_use, _MAX_RANGES, "mheap_.pages.inUse")
        out = []
        for i in range(0, len(raw), lay.in_use.elem):
            base = struct.unpack_from(lay.word, raw, i + lay.range_base)[0]
            limit = struct.unpack_from(lay.word, raw, i + lay.range_limit)[0]
            if limit < base:
                raise HeapChanged("mheap_.pages.inUse holds an inverted range")
            out.append((base, limit))
        return out

    def chunk_bits(self, base: int) -> Tuple[int, int]:
        """(allocated, scavenged) bitmaps of the arena at ``base``, bit i =
        page i, from the pallocData of the chunks covering it."""
        lay = self.lay
        chunk_bytes = lay.chunk_pages * self.page_size
        first = ((base - lay.arena_base_offset) & self.mask) // chunk_bytes
        n = lay.arena_bytes // chunk_bytes
        alloc = scav = 0
        ci = first
        while ci < first + n:  # one read per L2 block (one block in practice)
            l1, l2 = divmod(ci, lay.chunks_l2)
            count = min(first + n - ci, lay.chunks_l2 - l2)
            if l1 >= lay.chunks_l1:
                raise HeapChanged(f"chunk index {ci:#x} out of range")
            block = self._chunk_blocks.get(l1)
            if block is None:  # one per 2^13 chunks (32 GiB): read once per heap read
                block = self._chunk_blocks[l1] = self.word(self.mheap + lay.chunks + l1 * lay.ptr,
                                                           "mheap_.pages.chunks")
            if block:  # nil: the allocator never grew here (checked against inUse later)
                raw = self.t.read(block + l2 * lay.palloc_size, count * lay.palloc_size, "pallocData")
                for k in range(count):
                    shift = (ci - first + k) * lay.chunk_pages
                    entry = k * lay.palloc_size
                    alloc |= self.bitmap(raw, entry + lay.palloc_bits) << shift
                    scav |= self.bitmap(raw, entry + lay.scavenged) << shift
            ci += count
        return alloc, scav

    def bitmap(self, raw: bytes, offset: int) -> int:
        """A pallocBits/pageBits ([N]uint64, bit i of word k = page 64k+i) as an int."""
        if self.lay.word[0] == "<":  # little-endian words in order: the bytes are the int
            return int.from_bytes(raw[offset : offset + self.lay.chunk_pages // 8], "little")
        words = struct.unpack_from(self.lay.word[0] + "%dQ" % (self.lay.chunk_pages // 64), raw, offset)
        return sum(w << (64 * k) for k, w in enumerate(words))

    def page_caches(self) -> List[Tuple[int, int, int]]:
        """(base, cache, scav) of every P's page cache: 64 pages from base,
        bit i of cache set = page i free in the cache, of scav = scavenged.
        Empty when the binary's DWARF did not describe them."""
        lay = self.lay
        if lay.allp_slice is None or not self.allp or lay.pcache < 0:
            return []
        raw = self.slice(self.allp, lay.allp_slice, MAX_PS, "runtime.allp")
        u64 = lay.word[0] + "Q"  # pageCache.cache and .scav are uint64 bitmaps
        first = min(lay.pcache_base, lay.pcache_cache, lay.pcache_scav)
        size = max(lay.pcache_base + lay.ptr, lay.pcache_cache + 8, lay.pcache_scav + 8) - first
        out = []
        for (p,) in struct.iter_unpack(lay.word, raw):
            if not p:
                continue
            pc = self.t.read(p + lay.pcache + first, size, "p.pcache")
            base = struct.unpack_from(lay.word, pc, lay.pcache_base - first)[0]
            cache = struct.unpack_from(u64, pc, lay.pcache_cache - first)[0]
            scav = struct.unpack_from(u64, pc, lay.pcache_scav - first)[0]
            if cache:
                out.append((base, cache, scav & cache))
        return out

    # -- spans

    def read_span_batches(self, pointers: "set[int]") -> List[Tuple[int, bytes, List[int]]]:
        """The bytes of the mspans at ``pointers``: (address, bytes, pointers in them).

        mspans come from a fixalloc (16 KiB chunks of persistentalloc
        memory), so the referenced ones lie close together: pointers at most
        _SPAN_GAP apart, in one mapping, are read with one pread of at most
        _SPAN_BATCH bytes."""
        out = []
        for batch in self._batches(sorted(pointers)):
            lo = batch[0]
            out.append((lo, self.t.read(lo, batch[-1] + self.lay.span_size - lo, "mspan"), batch))
        return out

    def decode_spans(self, batches: List[Tuple[int, bytes, List[int]]]) -> Dict[int, Span]:
        """The live (in-use or manual) mspans of what read_span_batches read."""
        lay = self.lay
        ps = self.page_size
        word = struct.Struct(lay.word)
        live = (lay.span_in_use, lay.span_manual)
        order: Literal["little", "big"] = "little" if lay.word[0] == "<" else "big"
        out: Dict[int, Span] = {}
        for lo, raw, batch in batches:
            for p in batch:
                off = p - lo + lay.span_state
                state = int.from_bytes(raw[off : off + lay.span_state_size], order)
                if state in live:  # else dead: left behind in spans arrays by a free
                    start = word.unpack_from(raw, p - lo + lay.span_start)[0]
                    npages = word.unpack_from(raw, p - lo + lay.span_npages)[0]
                    out[p] = Span(start, start + npages * ps, state)
        return out

    def _batches(self, pointers: Sequence[int]) -> Iterator[List[int]]:
        batch: List[int] = []
        m: Optional[Mapping] = None
        size = self.lay.span_size
        for p in pointers:  # sorted
            if m is None or p >= m.end:
                if batch:
                    yield batch
                    batch = []
                m = self.t.mapping(p)
                if m is None:
                    raise HeapChanged(f"heapArena.spans points to {p:#x}, outside every mapping")
            if p % self.lay.ptr or p + size > m.end:
                raise HeapChanged(f"heapArena.spans points to {p:#x}, not an mspan")
            if batch and (p - batch[-1] > _SPAN_GAP or p + size - batch[0] > _SPAN_BATCH):
                yield batch
                batch = []
            batch.append(p)
        if batch:
            yield batch
