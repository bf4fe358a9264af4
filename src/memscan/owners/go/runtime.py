"""The Go runtime's off-heap memory, as address ranges, read from a live process.

For the exact tier's ``go_runtime`` category: besides its heap arenas (see
:mod:`memscan.owners.go.heap`) a Go runtime maps metadata with ``mmap(NULL, ...)``
in the top-down mmap area, where the kernel merges it with glibc's chunks
and thread stacks (runtime/malloc.go, persistentalloc and sysAlloc). Every such block is
found here by following the runtime's own pointers from its globals, read
read-only through ``/proc/PID/mem`` with the heap reader's machinery
(layouts from DWARF, or the shipped tables; bounded, pagemap-checked reads;
pointers validated against ``/proc/PID/maps``):

==================  =========================================================
kind                what, where from
==================  =========================================================
heap index          the L2 arrays of ``mheap_.arenas`` (32 MiB each on 64-bit
                    Linux, one in practice); counted in no MemStats field
heapArena           each arena's ``heapArena`` struct (``mheap_.arenas``
                    entries of ``mheap_.heapArenas``), GCSys
page alloc index    the ``mheap_.pages.chunks`` L2 blocks (1 MiB each), GCSys
page summary        ``mheap_.pages.summary`` levels: the whole reservations
                    (~700 MiB ``PROT_NONE``); their mapped parts are in GCSys
scavenge index      ``mheap_.pages.scav.index.chunks``: the whole 512 MiB
                    reservation; mapped parts in GCSys
persistentalloc     ``runtime.persistentChunks`` (256 KiB chunks, first word
                    = next): the fixallocs of mspans (MSpanSys), mcaches
                    (MCacheSys), profiling buckets (BuckHashSys), spanSet
                    blocks, finalizers... (GCSys), itabs (OtherSys)
gc bits             ``runtime.gcBitsArenas`` free/next/current/previous
                    lists of 64 KiB ``gcBitsArena`` (linked by ``next``), GCSys
allspans            the ``mheap_.allspans`` backing array, OtherSys
buckhash            ``*runtime.buckhash`` (1.4 MB, once a memory profile
                    sample was taken), BuckHashSys
span queue          Go 1.26+: ring buffers of the GC's span queues
                    (``work.spanSPMCs``), GCSys
g0 stack            ``m.g0`` stacks of ``runtime.allm`` outside the heap arenas
signal stack        ``m.gsignal`` stacks outside the heap arenas
==================  =========================================================

The g0 and gsignal stacks of Ms are normally goroutine-sized stacks inside
the heap arenas (the heap reader counts them as stacks) or, in a cgo program, glibc
pthread stacks (the C side's); the main thread's g0 runs on ``[stack]``.
None of those are reported: the two stack kinds appear only when a stack
lies in anonymous memory of its own, which Linux/amd64 builds do not do.

Each block is the whole ``mmap`` the runtime made (its start page aligned,
its end rounded up to the OS page, as the kernel maps it): the caller
intersects the ranges with the mappings and counts pages; reserved
``PROT_NONE`` parts are included. Nothing else is: a block must lie in
anonymous mappings (not ``[heap]``, ``[stack]`` or a file), outside the heap
arenas, and two blocks of different kinds must not overlap; a runtime whose
structures say otherwise changed while being read (:class:`HeapChanged`).
A pointer to memory missing from our copy of ``/proc/PID/maps`` makes us
read the maps again (at most a few times per read) before giving up: a
busy runtime maps new chunks and gc bits arenas while we read, and never
unmaps any of these blocks but old ``allspans`` arrays and span queue rings.
Lists are walked with a bound (what the anonymous memory could hold) and
a loop check; a gc bits arena seen on two lists (moved by a GC while we
read) is taken once.

Not found (small, rare or only while tracing): trace buffers, debug logs,
``persistentalloc`` requests of 64 KiB or more other than heapArena (they
bypass the chunk list: the ``heapArenas`` array beyond 8192 arenas, spanSet
spines beyond 4 M spans, the checkmark bitmaps of ``GODEBUG=gccheckmark``),
and the glibc/pthread side of cgo programs.
"""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Dict, Iterator, List, NamedTuple, Optional, Set, Tuple

from ..._errors import HeapChanged
from ...elf import PAGE_SIZE
from ...kernel import procfs
from ..memory import TargetMemory
from . import binary, bits, heap, pclntab, search
from .dwarf import Slice
from .layout import Layout

__all__ = [
    "KINDS",
    "MAX_READ_BYTES",
    "RuntimeRegions",
    "read_runtime",
    "runtime_regions",
]

HEAP_INDEX = "heap index"
HEAP_ARENA = "heapArena"
PAGE_ALLOC_INDEX = "page alloc index"
PAGE_SUMMARY = "page summary"
SCAVENGE_INDEX = "scavenge index"
PERSISTENT = "persistentalloc"
GC_BITS = "gc bits"
ALLSPANS = "allspans"
BUCKHASH = "buckhash"
SPAN_QUEUE = "span queue"
G0_STACK = "g0 stack"
SIGNAL_STACK = "signal stack"

#: Every kind, in the order they are looked for.
KINDS = (HEAP_INDEX, HEAP_ARENA, PAGE_ALLOC_INDEX, PAGE_SUMMARY, SCAVENGE_INDEX, PERSISTENT, GC_BITS,
         ALLSPANS, BUCKHASH, SPAN_QUEUE, G0_STACK, SIGNAL_STACK)

#: Default cap on the bytes one read asks from the target (memory plus
#: pagemap entries). A read needs ~66 KB (mostly the 64 KiB
#: ``pages.chunks`` L1 array) plus 16 bytes per chunk, arena and M; a
#: binary without symbols adds its data segments (~0.3 MB, the scan).
MAX_READ_BYTES = 16 << 20

_OS_PAGE = PAGE_SIZE
_MAX_NODES = 1 << 20  # hard bound on any list walked
_MAX_SPMC_CAP = 1 << 24  # objptrs in one span queue ring
_MAX_REFRESHES = 4  # re-reads of /proc/PID/maps in one read


class RuntimeRegions(NamedTuple):
    """The off-heap memory of one Go runtime."""

    #: Sorted, non-overlapping ``(start, end, kind)``; adjacent or
    #: overlapping blocks of one kind merged.
    regions: List[Tuple[int, int, str]]
    #: Base address of every heap arena (each ``arena_bytes`` long): the
    #: regions never overlap them.
    arenas: Tuple[int, ...]
    arena_bytes: int
    #: The runtime's Go version, e.g. ``"go1.27.3"``.
    go_version: str
    #: Kinds this binary does not let us look for (a variable or type
    #: missing from its DWARF/symbols, e.g. no Go 1.26+ span queue in 1.21,
    #: or the M stacks and span queues in a binary without symbols). A
    #: kind looked for and not found is not listed.
    missing: Tuple[str, ...]
    #: Bytes read from /proc/PID/mem and /proc/PID/pagemap.
    bytes_read: int
    pagemap_bytes: int

    def sizes(self) -> Dict[str, int]:
        """Bytes per kind (address space, mapped or reserved)."""
        out = dict.fromkeys(KINDS, 0)
        for start, end, kind in self.regions:
            out[kind] += end - start
        return out


def runtime_regions(pid: int, binary_path: str, load_bias: int,
                    engine: Optional[ModuleType] = None) -> List[Tuple[int, int, str]]:
    """Sorted, merged, non-overlapping ``(start, end, kind)`` of the
    runtime-owned memory outside the heap arenas of the Go runtime in
    ``binary_path`` (see :func:`read_runtime`)."""
    return read_runtime(pid, binary_path, load_bias, engine=engine).regions


def read_runtime(pid: int, binary_path: str, load_bias: int, *, max_bytes: int = MAX_READ_BYTES,
                 tables: Optional[bool] = None, engine: Optional[ModuleType] = None) -> RuntimeRegions:
    """The off-heap runtime memory of the Go runtime in ``binary_path``.

    ``binary_path`` and ``load_bias`` as for :func:`memscan.owners.go.heap.read_heap`.
    ``tables``: for a binary without DWARF, use the shipped layout tables
    (see :func:`memscan.owners.go.heap.read_heap`; None: ``binary.LAYOUT_TABLES``).
    With the symbol table (``-ldflags=-w``) every kind is looked for;
    without (``-s``) what hangs off ``mheap_`` (found by the symbol-less
    scan of :mod:`memscan.owners.go.search`) and what hangs off the
    variables the runtime's code pins down (:mod:`memscan.owners.go.pclntab`:
    persistentalloc chunks, gc bits, buckhash, Go 1.19-1.25): the other
    kinds are listed in ``missing``. One pass, no retry. ``engine``: the
    engine that parses /proc/PID/maps (None: the default one).

    Raises:
        NoRuntimeInfo: the binary's layout cannot be known (no DWARF and no
            table for it, or not a Go binary).
        HeapChanged: the structures changed while they were read (a pointer
            outside every mapping, blocks of different kinds overlapping, a
            list longer than the memory could hold); try again.
        ReadLimitExceeded: more than ``max_bytes`` would have to be read.
        NoSuchProcess, AccessDenied: as for every /proc read.
    """
    lay = binary.layout_of(binary_path, tables)
    with heap.target(pid, max_bytes, engine) as target, procfs.translated(pid, procfs.path(pid, "mem")):
        lay = search.resolve(target, lay, load_bias, binary_path)
        return _Reader(target, lay, load_bias, binary_path).read()


class _Reader(heap._Reader):
    """One read of one runtime's off-heap structures."""

    def __init__(self, target: TargetMemory, lay: Layout, load_bias: int, path: str) -> None:
        super().__init__(target, lay, load_bias, heap.MAX_UNSETTLED)
        self.bias = load_bias
        self.path = path
        self.blocks: List[Tuple[int, int, str]] = []
        self.missing: List[str] = []
        self.cover: List[Tuple[int, int]] = []
        anon = sum(m.end - m.start for m in target.maps if m.anonymous)
        self.anon_bytes = anon
        self.refreshes = 0
        # Without a symbol table, the variables the runtime's code pins down.
        self.in_code = pclntab.code_globals(path, lay.data_segments, lay.gc_bits_lists) \
            if lay.source == "scan" else {}

    def mapped(self, start: int, end: int) -> bool:
        """Is [start, end) inside mappings? A miss re-reads /proc/PID/maps
        (a few times per read): the runtime maps new blocks (gc bits,
        persistentalloc chunks...) while we read, and never unmaps these."""
        for _ in range(2):
            pos = start
            while pos < end:
                m = self.t.mapping(pos)
                if m is None:
                    break
                pos = m.end
            else:
                return True
            if self.refreshes >= _MAX_REFRESHES:
                return False
            self.refreshes += 1
            self.t.refresh_maps()
        return False

    # -- helpers

    def glob(self, name: str) -> int:
        """Run-time address of runtime variable ``name``, 0 if unknown."""
        addr = self.lay.global_addr(name) or self.in_code.get(name, 0)
        return (addr + self.bias) & self.mask if addr else 0

    def header(self, addr: int, s: Slice, what: str) -> Tuple[int, int, int]:
        """(array, len, cap) of the slice header at ``addr``."""
        first = min(s.array, s.len, s.cap)
        raw = self.t.read(addr + first, max(s.array, s.len, s.cap) + self.lay.ptr - first, what)
        array, length, cap = (struct.unpack_from(self.lay.word, raw, off - first)[0]
                              for off in (s.array, s.len, s.cap))
        if length > cap or (cap and not array):
            raise HeapChanged(f"{what}: implausible slice (len {length}, cap {cap})")
        return array, length, cap

    def block(self, start: int, nbytes: int, kind: str, what: str) -> None:
        """Record the runtime's mmap of ``nbytes`` at ``start``, after
        checking it is one: page aligned, in anonymous mappings (not
        [heap]/[stack]), outside the heap arenas."""
        if nbytes <= 0:
            return
        end = -(-(start + nbytes) // _OS_PAGE) * _OS_PAGE
        if start % _OS_PAGE or end > self.mask:
            raise HeapChanged(f"{what} at {start:#x} is not a block the runtime mapped (not page aligned)")
        self.mapped(start, end)
        pos = start
        while pos < end:
            m = self.t.mapping(pos)
            if m is None:
                raise HeapChanged(f"{what} at {start:#x}-{end:#x} is not mapped in pid {self.t.pid}")
            if not m.anonymous or m.name in ("[heap]", "[stack]") or \
                    (m.name.startswith("[") and not m.name.startswith("[anon")):
                where = m.name or "a file"
                raise HeapChanged(f"{what} at {start:#x}-{end:#x} lies in {where} mapping, "
                                  "not anonymous memory of the runtime")
            pos = m.end
        for lo, hi in self.cover:
            if start < hi and lo < end:
                raise HeapChanged(f"{what} at {start:#x}-{end:#x} overlaps the heap arena at {lo:#x}")
        self.blocks.append((start, end, kind))

    def pointer(self, p: int, what: str, size: int) -> None:
        """``p`` must point to ``size`` readable, aligned bytes."""
        if p % self.lay.ptr:
            raise HeapChanged(f"{what} {p:#x} is not aligned")
        self.mapped(p, p + size)
        m = self.t.mapping(p)
        if m is None or not m.readable or p + size > m.end:
            raise HeapChanged(f"{what} {p:#x} does not point into a readable mapping of pid {self.t.pid}")

    def walk(self, head: int, next_off: int, node_bytes: int, what: str) -> Iterator[int]:
        """The nodes of a list linked through the word at ``next_off``;
        bounded by what the anonymous memory could hold."""
        limit = min(_MAX_NODES, self.anon_bytes // max(node_bytes, _OS_PAGE) + 1)
        seen: Set[int] = set()
        p = head
        while p:
            if p in seen:
                raise HeapChanged(f"{what}: the list loops")
            if len(seen) >= limit:
                raise HeapChanged(f"{what}: more than {limit} entries")
            seen.add(p)
            self.pointer(p, what, next_off + self.lay.ptr)
            nxt = self.word(p + next_off, what)
            yield p
            p = nxt

    # -- the read

    def read(self) -> RuntimeRegions:
        lay = self.lay
        arenas = self.checked_arenas()
        self.cover = bits.merge([(a.base, a.base + lay.arena_bytes) for a in arenas])
        self.heap_index()
        for a in arenas:
            self.block(a.heap_arena, lay.heap_arena_size, HEAP_ARENA, f"heapArena of arena {a.base:#x}")
        self.page_alloc_index()
        self.summary()
        self.scavenge_index()
        self.allspans()
        self.persistent_chunks()
        self.gc_bits()
        self.buckhash()
        self.span_queue()
        self.m_stacks()
        return RuntimeRegions(
            regions=_merge_kinds(self.blocks),
            arenas=tuple(a.base for a in arenas),
            arena_bytes=lay.arena_bytes,
            go_version=lay.go_version,
            missing=tuple(k for k in KINDS if k in self.missing),
            bytes_read=self.t.bytes_read,
            pagemap_bytes=self.t.pagemap_bytes,
        )

    def heap_index(self) -> None:
        """mheap_.arenas[l1]: the L2 arrays of *heapArena (arenaL1Bits is 0 on
        64-bit Linux: one array of 4 M pointers)."""
        lay = self.lay
        for l1, l2 in enumerate(self.t.words(self.mheap + lay.arenas, lay.arenas_l1, lay.word, "mheap_.arenas")):
            if l2:
                self.block(l2, lay.arenas_l2 * lay.ptr, HEAP_INDEX, f"mheap_.arenas[{l1}]")

    def page_alloc_index(self) -> None:
        """mheap_.pages.chunks[l1]: blocks of pallocData, one per L1 entry used."""
        lay = self.lay
        l1s = self.t.words(self.mheap + lay.chunks, lay.chunks_l1, lay.word, "mheap_.pages.chunks")
        for l1, p in enumerate(l1s):
            if p:
                self.block(p, lay.chunks_l2 * lay.palloc_size, PAGE_ALLOC_INDEX, f"mheap_.pages.chunks[{l1}]")

    def summary(self) -> None:
        lay = self.lay
        if lay.summary is None or not lay.summary_levels:
            self.missing.append(PAGE_SUMMARY)
            return
        for level in range(lay.summary_levels):
            addr = self.mheap + lay.summary.offset + level * lay.summary_stride
            array, _, cap = self.header(addr, lay.summary, f"mheap_.pages.summary[{level}]")
            if array:
                self.block(array, cap * lay.summary.elem, PAGE_SUMMARY, f"mheap_.pages.summary[{level}]")

    def scavenge_index(self) -> None:
        self.slice_block(self.lay.scav_chunks, SCAVENGE_INDEX, "mheap_.pages.scav.index.chunks")

    def allspans(self) -> None:
        self.slice_block(self.lay.allspans, ALLSPANS, "mheap_.allspans")

    def slice_block(self, s, kind: str, what: str) -> None:  # type: ignore[no-untyped-def]
        """The backing array of the mheap_ slice ``s`` (its whole capacity)."""
        if s is None:
            self.missing.append(kind)
            return
        array, _, cap = self.header(self.mheap + s.offset, s, what)
        if array:
            self.block(array, cap * s.elem, kind, what)

    def persistent_chunks(self) -> None:
        """runtime.persistentChunks: every chunk persistentalloc carved its
        small allocations from, newest first, linked by their first word."""
        head = self.glob("runtime.persistentChunks")
        size = self.lay.persistent_chunk_bytes
        if not head or size <= 0:
            self.missing.append(PERSISTENT)
            return
        for chunk in self.walk(self.word(head, "runtime.persistentChunks"), 0, size, "persistentalloc chunk"):
            self.block(chunk, size, PERSISTENT, "persistentalloc chunk")

    def gc_bits(self) -> None:
        """runtime.gcBitsArenas: four lists of gcBitsArena (mark and alloc
        bits of spans), never returned to the OS."""
        lay = self.lay
        var = self.glob("runtime.gcBitsArenas")
        size = lay.gc_bits_chunk_bytes
        if not var or not lay.gc_bits_lists or lay.gc_bits_next < 0 or size <= 0:
            self.missing.append(GC_BITS)
            return
        seen: Set[int] = set()
        for off in lay.gc_bits_lists:
            head = self.word(var + off, "runtime.gcBitsArenas")
            for arena in self.walk(head, lay.gc_bits_next, size, "gcBitsArena"):
                if arena in seen:  # moved to the next list while we read (a GC epoch)
                    continue
                seen.add(arena)
                self.block(arena, size, GC_BITS, "gcBitsArena")

    def buckhash(self) -> None:
        lay = self.lay
        var = self.glob("runtime.buckhash")
        if not var or lay.buckhash_ptr < 0 or lay.buckhash_bytes <= 0:
            self.missing.append(BUCKHASH)
            return
        p = self.word(var + lay.buckhash_ptr, "runtime.buckhash")
        if p:
            self.block(p, lay.buckhash_bytes, BUCKHASH, "runtime.buckhash")

    def span_queue(self) -> None:
        """Go 1.26+: work.spanSPMCs.list, every spanSPMC allocated (live or
        dead but not yet freed), each owning a sysAlloc'ed ring."""
        lay = self.lay
        work = self.glob("runtime.work")
        if not work or lay.spmc_list < 0:
            self.missing.append(SPAN_QUEUE)
            return
        head = self.word(work + lay.spmc_list, "runtime.work.spanSPMCs")
        end = max(lay.spmc_node_next, lay.spmc_ring) + lay.ptr
        for spmc in self.walk(head, lay.spmc_node_next, _OS_PAGE, "spanSPMC"):
            self.pointer(spmc, "spanSPMC", max(end, lay.spmc_cap + 4))
            ring = self.word(spmc + lay.spmc_ring, "spanSPMC.ring")
            cap = struct.unpack(lay.word[0] + "I", self.t.read(spmc + lay.spmc_cap, 4, "spanSPMC.cap"))[0]
            if ring:
                if cap & (cap - 1) or not 0 < cap <= _MAX_SPMC_CAP:
                    raise HeapChanged(f"spanSPMC at {spmc:#x} has capacity {cap}")
                self.block(ring, cap * lay.ptr, SPAN_QUEUE, "spanSPMC.ring")

    def m_stacks(self) -> None:
        """g0 and gsignal stacks of the Ms on runtime.allm that are neither
        in the heap arenas (the heap reader's) nor the main thread's [stack] nor, in
        a cgo program, pthread stacks (the C side's): none on Linux/amd64."""
        lay = self.lay
        allm, iscgo = self.glob("runtime.allm"), self.glob("runtime.iscgo")
        if not allm or not iscgo or min(lay.m_alllink, lay.m_g0, lay.m_gsignal, lay.g_stack_lo) < 0:
            self.missing.extend((G0_STACK, SIGNAL_STACK))
            return
        if self.t.read(iscgo, 1, "runtime.iscgo") != b"\0":
            return  # every M but m0 runs on a pthread stack
        for m in self.walk(self.word(allm, "runtime.allm"), lay.m_alllink, _OS_PAGE, "runtime.m"):
            for off, kind in ((lay.m_g0, G0_STACK), (lay.m_gsignal, SIGNAL_STACK)):
                g = self.word(m + off, "m.g0")
                if not g:
                    continue
                self.pointer(g, "*g", max(lay.g_stack_lo, lay.g_stack_hi) + lay.ptr)
                lo, hi = self.word(g + lay.g_stack_lo, "g.stack.lo"), self.word(g + lay.g_stack_hi, "g.stack.hi")
                if hi <= lo or any(a <= lo < b for a, b in self.cover):
                    continue
                where = self.t.mapping(lo)
                if where is not None and where.name == "[stack]":
                    continue
                self.block(lo, hi - lo, kind, f"{kind} of M {m:#x}")


def _merge_kinds(blocks: List[Tuple[int, int, str]]) -> List[Tuple[int, int, str]]:
    """Sort; merge overlapping or adjacent blocks of one kind; blocks of
    different kinds that overlap mean the structures changed under us."""
    out: List[Tuple[int, int, str]] = []
    for start, end, kind in sorted(blocks):
        if out and start < out[-1][1] and kind != out[-1][2]:
            raise HeapChanged(f"{kind} at {start:#x}-{end:#x} overlaps {out[-1][2]} at "
                              f"{out[-1][0]:#x}-{out[-1][1]:#x}")
        if out and start <= out[-1][1] and kind == out[-1][2]:
            out[-1] = (out[-1][0], max(out[-1][1], end), kind)
        else:
            out.append((start, end, kind))
    return out
