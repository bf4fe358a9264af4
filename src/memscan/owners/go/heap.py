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
mapping, page bits outside the grown ranges raise :class:`HeapChanged`; the
caller may try again. Pages that disagree one by one (a live span whose
pages do not point back to it or are not allocated, allocated pages in no
span and no page cache) are "unsettled": they get the state the bitmaps
give, are counted in ``HeapPages.unsettled``, and more than
``max_unsettled`` of the grown heap raises :class:`HeapChanged` too. An
idle program reads with none; a program allocating at full speed has a few
percent. Nothing here loops on the target's data: every read is bounded by
counts checked beforehand.

Layouts come from the binary's DWARF (types ``runtime.mheap``,
``runtime.pageAlloc``, ``runtime.heapArena``, ``runtime.mspan``,
``runtime.pallocData``, ``runtime.addrRanges``, ``runtime.pageCache``, and
the ``DW_TAG_constant`` entries of package runtime), addresses from the ELF
symbol table. The same parse also gives what :mod:`memscan.owners.go.runtime`
reads (the runtime's off-heap structures). Parsed layouts are cached per
file identity.

Without DWARF (``-ldflags=-w`` or ``-s``, ``strip``) this raises
:class:`NoRuntimeInfo` unless the shipped layout tables are enabled
(``tables=True``, or :data:`LAYOUT_TABLES`): :mod:`memscan.owners.go.tables`,
generated from the DWARF of real toolchains by ``tools/gen_golayouts.py``,
per GOARCH and Go minor version, for default GOEXPERIMENTs only (another
experiment set is refused). With the symbol table (``-w``) the addresses
come from it, and the sizes of a few runtime variables (mheap_, m0, g0,
emptymspan...) must match the table's. Without symbols (``-s``) mheap_ and
allp are found in the target by a symbol-less scan of the module's data
segments for the heap index pointer (mheap_.arenas), validated against
the heap it leads to (see :func:`_resolve`); several or no candidates is a
NoRuntimeInfo, never a guess.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Any, Dict, Iterator, List, Literal, NamedTuple, Optional, Sequence, Tuple

from elftools.common.exceptions import DWARFError, ELFError
from elftools.construct.core import ConstructError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from ..._cache import LRU
from ..._errors import Error, HeapChanged, NoRuntimeInfo, ReadLimitExceeded
from ...elf import PAGE_SIZE, ModuleInfo, module_info
from ...kernel import procfs
from ..memory import Mapping, TargetMemory

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

OBJECTS, STACKS, FREE, RELEASED, RESERVED = range(5)
#: Index = state; the same names as ``exact.DETAIL``.
STATE_NAMES = ("objects", "stacks", "free", "released", "reserved")

#: Default share of the grown heap that may have changed during one read
#: (see :func:`read_heap`): idle programs read with none, a program that
#: allocates hard all the time may move a few percent in the milliseconds
#: a read takes.
MAX_UNSETTLED = 0.01

#: Default cap on the bytes one :func:`read_heap` asks from the target
#: (memory plus pagemap entries). A 64 MiB heap needs ~160 KB; a heap of
#: small spans up to ~1 MB per 64 MiB arena (spans array, mspans), so the
#: cap is reached somewhere between 20 and 250 GiB of heap.
MAX_READ_BYTES = 256 << 20

_OS_PAGE = PAGE_SIZE

# Sanity bounds on counts read from the target, checked before reading.
_MAX_RANGES = 1 << 16  # pages.inUse entries (one per discontiguous growth)
_MAX_PS = 1 << 16  # len(allp) (GOMAXPROCS)
# mspans whose addresses lie at most _SPAN_GAP apart are read with one pread
# of at most _SPAN_BATCH bytes. The mspans of one arena interleave with
# those of the others; measured on a 1 GiB heap of small spans: gap 256 B:
# 6.7 MB read, 290 ms; 1 KiB: 11.5 MB, 235 ms; 8 KiB: 60 MB, 171 ms.
_SPAN_GAP = 1024
_SPAN_BATCH = 64 << 10


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

    def totals(self) -> Dict[str, int]:
        """Bytes per state name."""
        out = dict.fromkeys(STATE_NAMES, 0)
        for start, end, state in self.intervals:
            out[STATE_NAMES[state]] += end - start
        return out


# --------------------------------------------------------------------------
# Layout: what the binary's DWARF says


class _Slice(NamedTuple):
    """A Go slice header field: its offset, the offsets of its members, and
    the size of one element."""

    offset: int
    array: int
    len: int
    cap: int
    elem: int


class _Layout(NamedTuple):
    go_version: str
    ptr: int  # pointer size
    word: str  # struct format of a pointer, e.g. "<Q"
    mheap: int  # link-time address of runtime.mheap_
    allp: int  # link-time address of runtime.allp, 0 if unknown
    # package runtime constants
    arena_bytes: int
    arena_base_offset: int  # arenaBaseOffset, modulo 2**(8*ptr)
    page_size: int
    chunk_pages: int
    span_in_use: int
    span_manual: int
    # runtime.mheap: arenas [L1]*[L2]*heapArena
    arenas: int
    arenas_l1: int
    arenas_l2: int
    heap_arenas: _Slice  # heapArenas (Go 1.25+) / allArenas []arenaIdx
    # mheap.pages (runtime.pageAlloc), offsets from mheap_
    chunks: int  # chunks [L1]*[L2]pallocData
    chunks_l1: int
    chunks_l2: int
    palloc_size: int
    palloc_bits: int  # pallocData.pallocBits (embedded), offset in pallocData
    scavenged: int  # pallocData.scavenged
    in_use: _Slice  # pages.inUse.ranges []addrRange
    range_base: int  # addrRange.base.a
    range_limit: int  # addrRange.limit.a
    # runtime.heapArena
    spans: int
    spans_len: int
    # runtime.mspan
    span_size: int
    span_start: int
    span_npages: int
    span_state: int  # byte offset of the state value inside mspan.state
    span_state_size: int
    # allp []*p and p.pcache (runtime.pageCache); pcache < 0 when unknown
    allp_slice: Optional[_Slice]
    pcache: int
    pcache_base: int
    pcache_cache: int
    pcache_scav: int
    # -- what goruntime reads besides (off-heap runtime memory); -1 or None
    # where the binary does not have it (see _offheap_layout)
    mheap_size: int = 0  # sizeof(runtime.mheap)
    heap_arena_size: int = 0  # sizeof(runtime.heapArena)
    summary: Optional[_Slice] = None  # mheap_.pages.summary[0] ([]pallocSum)
    summary_levels: int = 0  # len(pages.summary)
    summary_stride: int = 0  # sizeof([]pallocSum): pages.summary[i] = summary.offset + i*stride
    scav_chunks: Optional[_Slice] = None  # mheap_.pages.scav.index.chunks
    allspans: Optional[_Slice] = None  # mheap_.allspans []*mspan
    persistent_chunk_bytes: int = 0  # runtime.persistentChunkSize
    gc_bits_chunk_bytes: int = 0  # runtime.gcBitsChunkBytes
    gc_bits_lists: Tuple[int, ...] = ()  # runtime.gcBitsArenas.{free,next,current,previous}
    gc_bits_next: int = -1  # gcBitsArena.next
    buckhash_ptr: int = -1  # the pointer inside runtime.buckhash (atomic.UnsafePointer)
    buckhash_bytes: int = 0  # sizeof(runtime.buckhashArray)
    m_alllink: int = -1  # runtime.m.alllink
    m_g0: int = -1
    m_gsignal: int = -1
    g_stack_lo: int = -1  # runtime.g.stack.lo
    g_stack_hi: int = -1
    spmc_list: int = -1  # runtime.work.spanSPMCs.list.obj (Go 1.26+)
    spmc_node_next: int = -1  # spanSPMC.allnode.next
    spmc_ring: int = -1  # spanSPMC.ring
    spmc_cap: int = -1  # spanSPMC.cap (uint32)
    # Link-time addresses of the other runtime variables goruntime reads
    # (runtime.persistentChunks, ...), sorted by name; absent ones omitted.
    globals: Tuple[Tuple[str, int], ...] = ()
    p_id: int = -1  # runtime.p.id (int32): checks allp found without symbols
    # (start, end) link-time vaddrs of the writable PT_LOADs (.data, .bss):
    # where the symbol-less scan looks for mheap_ and allp
    data_segments: Tuple[Tuple[int, int], ...] = ()
    #: Where the offsets come from: "dwarf", or "table" (tables.py, for a
    #: binary without DWARF), or "scan" (no symbols either: mheap_ found by
    #: the symbol-less heap-index scan at read time, see _resolve).
    source: str = "dwarf"

    def global_addr(self, name: str) -> int:
        """Link-time address of runtime variable ``name``, 0 if unknown."""
        for n, addr in self.globals:
            if n == name:
                return addr
        return 0


_RUNTIME_VARS = ("runtime.mheap_", "runtime.allp")
# Variables goruntime reads (all optional: a binary without one just lacks
# that kind of region) and struct types not reachable from a variable's type.
_OFFHEAP_VARS = ("runtime.persistentChunks", "runtime.gcBitsArenas", "runtime.buckhash", "runtime.allm",
                 "runtime.work", "runtime.iscgo")
_OFFHEAP_TYPES = ("runtime.spanSPMC",)
_CONSTANTS = {
    "arena_bytes": ("runtime.heapArenaBytes",),
    # Go names it arenaBaseOffset; the uintptr copy is what DWARF has.
    "arena_base_offset": ("runtime.arenaBaseOffsetUintptr", "runtime.arenaBaseOffset"),
    "page_size": ("runtime.pageSize", "runtime._PageSize"),
    "chunk_pages": ("runtime.pallocChunkPages",),
    "span_in_use": ("runtime.mSpanInUse",),
    "span_manual": ("runtime.mSpanManual",),
}
_OFFHEAP_CONSTANTS = {
    "persistent_chunk_bytes": "runtime.persistentChunkSize",
    "gc_bits_chunk_bytes": "runtime.gcBitsChunkBytes",
    "buckhash_len": "runtime.buckHashSize",
}
_QUALIFIERS = ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type")


def _no_info(path: str, what: str) -> NoRuntimeInfo:
    return NoRuntimeInfo(f"the exact tier cannot read the Go heap of {path}: {what}")


class _Dwarf:
    """Finds named DIEs in a Go binary's DWARF and reads types from them."""

    def __init__(self, elf: ELFFile, path: str) -> None:
        self.path = path
        self.ptr = elf.elfclass // 8
        self.dies: Dict[str, Any] = {}
        self.consts: Dict[str, int] = {}
        self._find(elf.get_dwarf_info())

    def _find(self, dwarf: Any) -> None:
        wanted = set(_RUNTIME_VARS) | {n for names in _CONSTANTS.values() for n in names}
        wanted |= set(_OFFHEAP_VARS) | set(_OFFHEAP_TYPES) | set(_OFFHEAP_CONSTANTS.values())
        self._find_by_name(dwarf, wanted)
        if not self._complete():
            self._walk(dwarf, wanted)

    def _find_by_name(self, dwarf: Any, wanted: "set[str]") -> None:
        """Fast path: Go writes DIE names inline (DW_FORM_string), first after
        the DIE's abbreviation code (a 1-2 byte ULEB128), so a name found in
        .debug_info gives the offset of a candidate DIE. Only DIEs that parse
        and carry that very name are kept; anything else is left to _walk,
        which parses every top-level DIE of the runtime units (~0.7 s)."""
        info = dwarf.debug_info_sec
        try:
            data = info.stream.getvalue()
        except AttributeError:
            return
        for name in sorted(wanted):
            needle = name.encode() + b"\0"
            pos = data.find(needle)
            while pos >= 0 and name not in self.dies and name not in self.consts:
                for offset in (pos - 1, pos - 2):
                    die = self._die_at(dwarf, offset)
                    if die is not None and die.attributes["DW_AT_name"].value == needle[:-1]:
                        self._keep(name, die)
                pos = data.find(needle, pos + 1)

    @staticmethod
    def _die_at(dwarf: Any, offset: int) -> Any:
        if offset < 0:
            return None
        try:
            die = dwarf.get_DIE_from_refaddr(offset)
        except Exception:  # noqa: BLE001 - bytes that are not a DIE fail in many ways
            return None
        name = die.attributes.get("DW_AT_name")
        return die if name is not None and name.form == "DW_FORM_string" else None

    def _walk(self, dwarf: Any, wanted: "set[str]") -> None:
        # Go's linker emits several compile units named "runtime" (types in
        # one, package runtime's constants and variables in another; 10 in
        # 1.21.13, 9 in 1.27.3): look at those first, the others (main, C
        # units of cgo, ...) only if something is still missing.
        later = []
        for cu in dwarf.iter_CUs():
            top = cu.get_top_DIE()
            name = top.attributes.get("DW_AT_name")
            if name is not None and name.value == b"runtime":
                self._collect(top, wanted)
            else:
                later.append(top)
        for top in later:
            if self._complete():
                break
            self._collect(top, wanted)

    def _complete(self) -> bool:
        """Everything required found (runtime.allp is optional; a constant
        needs one of its names)."""
        return "runtime.mheap_" in self.dies and all(
            any(n in self.consts for n in names) for names in _CONSTANTS.values())

    def _collect(self, top: Any, wanted: set) -> None:
        for die in top.iter_children():
            attr = die.attributes.get("DW_AT_name")
            if attr is None:
                continue
            name = attr.value.decode("utf-8", "replace")
            if name in wanted:
                self._keep(name, die)

    def _keep(self, name: str, die: Any) -> None:
        if die.tag == "DW_TAG_constant" and "DW_AT_const_value" in die.attributes:
            self.consts.setdefault(name, die.attributes["DW_AT_const_value"].value)
        elif die.tag in ("DW_TAG_structure_type", "DW_TAG_variable"):
            self.dies.setdefault(name, die)

    # -- lookups; every miss is a NoRuntimeInfo naming what is missing

    def const(self, key: str) -> int:
        for name in _CONSTANTS[key]:
            if name in self.consts:
                return int(self.consts[name])
        raise _no_info(self.path, f"its DWARF has no constant {_CONSTANTS[key][0]}")

    def var_type(self, name: str) -> Any:
        die = self.dies.get(name)
        if die is None or "DW_AT_type" not in die.attributes:
            raise _no_info(self.path, f"its DWARF has no variable {name}")
        return strip(die.get_DIE_from_attribute("DW_AT_type"))

    def member(self, struct_die: Any, *names: str) -> Tuple[int, Any]:
        """(offset, type) of the first of ``names`` found in the struct."""
        for m in struct_die.iter_children():
            if m.tag != "DW_TAG_member":
                continue
            attr = m.attributes.get("DW_AT_name")
            if attr is None or attr.value.decode() not in names:
                continue
            loc = m.attributes.get("DW_AT_data_member_location")
            if loc is None or not isinstance(loc.value, int):
                break
            return loc.value, strip(m.get_DIE_from_attribute("DW_AT_type"))
        raise _no_info(self.path, f"its DWARF type {type_name(struct_die)} has no field {' or '.join(names)}")

    def path_of(self, struct_die: Any, *fields: str) -> Tuple[int, Any]:
        """Offset and type of a nested field, e.g. ("pages", "chunks")."""
        offset = 0
        for field in fields:
            off, struct_die = self.member(struct_die, field)
            offset += off
        return offset, struct_die

    def slice(self, offset: int, die: Any) -> _Slice:
        array, ptr = self.member(die, "array")
        elem = pointee(ptr)
        elem_size = size(elem) or (self.ptr if elem.tag == "DW_TAG_pointer_type" else 0)
        return _Slice(offset, array, self.member(die, "len")[0], self.member(die, "cap")[0], elem_size)

    def value_in(self, offset: int, die: Any) -> Tuple[int, int]:
        """(offset, size) of the integer inside a wrapper type.

        ``mspan.state`` is ``mSpanStateBox{s atomic.Uint8}`` (1.21-1.27) and
        ``atomic.Uint8`` is ``{_ noCopy; value uint8}``: descend through
        structs with exactly one member of non-zero size.
        """
        for _ in range(8):
            if die.tag == "DW_TAG_base_type":
                return offset, size(die)
            if die.tag == "DW_TAG_pointer_type":  # e.g. atomic.UnsafePointer's value
                return offset, size(die) or self.ptr
            if die.tag != "DW_TAG_structure_type":
                break
            sized = []
            for m in die.iter_children():
                if m.tag == "DW_TAG_member" and "DW_AT_data_member_location" in m.attributes:
                    t = strip(m.get_DIE_from_attribute("DW_AT_type"))
                    if size(t) or t.tag == "DW_TAG_pointer_type":  # Go's pointer DIEs have no size
                        sized.append((m.attributes["DW_AT_data_member_location"].value, t))
            if len(sized) != 1:
                break
            offset, die = offset + sized[0][0], sized[0][1]
        raise _no_info(self.path, f"cannot find the integer inside {type_name(die)}")


def strip(die: Any) -> Any:
    """The type under typedefs and qualifiers."""
    for _ in range(16):
        if die.tag not in _QUALIFIERS or "DW_AT_type" not in die.attributes:
            break
        die = die.get_DIE_from_attribute("DW_AT_type")
    return die


def type_name(die: Any) -> str:
    attr = die.attributes.get("DW_AT_name")
    return attr.value.decode("utf-8", "replace") if attr is not None else f"<{die.tag}>"


def size(die: Any) -> int:
    attr = die.attributes.get("DW_AT_byte_size")
    return attr.value if attr is not None else 0


def pointee(die: Any) -> Any:
    """What a pointer type points to."""
    return strip(die.get_DIE_from_attribute("DW_AT_type"))


def _array_elem(die: Any) -> Any:
    """The element type of an array type."""
    return strip(die.get_DIE_from_attribute("DW_AT_type"))


def array_len(die: Any) -> int:
    for sub in die.iter_children():
        if sub.tag == "DW_TAG_subrange_type":
            if "DW_AT_count" in sub.attributes:
                return sub.attributes["DW_AT_count"].value
            if "DW_AT_upper_bound" in sub.attributes:
                return sub.attributes["DW_AT_upper_bound"].value + 1
    return 0


def _symbols(elf: ELFFile, path: str) -> Dict[str, Tuple[int, int]]:
    """(st_value, st_size) of runtime.mheap_ and, if present, runtime.allp."""
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        raise _no_info(path, "it has DWARF but no symbol table; the exact tier needs both, or neither "
                             "(then with the layout tables)")
    out = {}
    for name in _RUNTIME_VARS + _OFFHEAP_VARS:
        sym = _find_symbol(symtab, name)
        if sym is not None:
            out[name] = (sym["st_value"], sym["st_size"])
    if "runtime.mheap_" not in out:
        raise _no_info(path, "its symbol table has no runtime.mheap_")
    return out


def _find_symbol(symtab: SymbolTableSection, name: str) -> Any:
    """The symbol ``name``, or None.

    SymbolTableSection.get_symbol_by_name parses every symbol to build its
    name map (0.2 s for a Go binary); here the name is looked up in the
    string table first and only the entries are compared with it, raw
    (st_name is the first 4 bytes of an Elf32_Sym and of an Elf64_Sym)."""
    strtab = symtab.stringtable.data()
    pos = strtab.find(b"\0" + name.encode() + b"\0")
    if pos < 0:
        found = symtab.get_symbol_by_name(name)  # e.g. a tail-merged string table
        return found[0] if found else None
    fmt = ("<" if symtab.elffile.little_endian else ">") + "I"
    entsize = symtab["sh_entsize"]
    data = symtab.data()
    for i in range(symtab.num_symbols()):
        if struct.unpack_from(fmt, data, i * entsize)[0] == pos + 1:
            return symtab.get_symbol(i)
    return None


def _no_dwarf(path: str) -> NoRuntimeInfo:
    return _no_info(path, "it has no DWARF debug info for its Go code (built with -ldflags=-w or -s, or "
                          "stripped); the exact tier needs DWARF for this binary (or its shipped layout tables, "
                          "which are not enabled)")


def _data_segments(elf: ELFFile) -> Tuple[Tuple[int, int], ...]:
    """(p_vaddr, p_vaddr + p_memsz) of every writable PT_LOAD."""
    out = []
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_LOAD" and seg["p_flags"] & 2 and seg["p_memsz"]:
            out.append((seg["p_vaddr"], seg["p_vaddr"] + seg["p_memsz"]))
    return tuple(sorted(out))


def _parse_layout(elf: ELFFile, path: str, info: "ModuleInfo") -> _Layout:
    assert info.go is not None
    go_version = info.go.version
    # Not elf.has_dwarf_info(): that is true for any .eh_frame (every
    # externally linked cgo binary, stripped or not). And a cgo binary
    # linked with -w may keep the DWARF of its C objects only.
    if not any(elf.get_section_by_name(name) is not None for name in (".debug_info", ".zdebug_info")):
        return _table_layout(elf, path, info)
    d = _Dwarf(elf, path)
    if "runtime.mheap_" not in d.dies:
        return _table_layout(elf, path, info)
    syms = _symbols(elf, path)
    ptr = elf.elfclass // 8
    mheap = d.var_type("runtime.mheap_")
    if syms["runtime.mheap_"][1] not in (0, size(mheap)):
        raise _no_info(path, f"runtime.mheap_ is {syms['runtime.mheap_'][1]} bytes in the symbol table "
                             f"but {size(mheap)} in DWARF")
    fields: Dict[str, Any] = {key: d.const(key) for key in _CONSTANTS}
    fields["arena_base_offset"] %= 1 << (8 * ptr)
    heap_arena = _mheap_layout(d, mheap, fields)
    _span_layout(d, heap_arena, fields)
    _page_cache_layout(d, fields)
    _offheap_layout(d, mheap, heap_arena, fields)
    allp = syms.get("runtime.allp", (0, 0))[0] if fields["allp_slice"] is not None else 0
    layout = _Layout(
        go_version=go_version,
        ptr=ptr,
        word=("<" if elf.little_endian else ">") + ("Q" if ptr == 8 else "I"),
        mheap=syms["runtime.mheap_"][0],
        allp=allp,
        globals=tuple(sorted((name, syms[name][0]) for name in _OFFHEAP_VARS if name in syms)),
        data_segments=_data_segments(elf),
        **fields,
    )
    _check_layout(layout, path)
    return layout


def _mheap_layout(d: _Dwarf, mheap: Any, out: Dict[str, Any]) -> Any:
    """Fields of runtime.mheap and its page allocator; returns the heapArena type."""
    # arenas [1 << arenaL1Bits]*[1 << arenaL2Bits]*heapArena
    out["arenas"], arenas_t = d.member(mheap, "arenas")
    l2_t = pointee(_array_elem(arenas_t))
    out["arenas_l1"], out["arenas_l2"] = array_len(arenas_t), array_len(l2_t)
    # heapArenas since Go 1.25, allArenas in 1.21-1.24 ([]arenaIdx both).
    out["heap_arenas"] = d.slice(*d.member(mheap, "heapArenas", "allArenas"))
    # pages.chunks [1 << pallocChunksL1Bits]*[1 << pallocChunksL2Bits]pallocData
    out["chunks"], chunks_t = d.path_of(mheap, "pages", "chunks")
    palloc = pointee(_array_elem(chunks_t))
    out["chunks_l1"], out["chunks_l2"] = array_len(chunks_t), array_len(palloc)
    palloc_data = _array_elem(palloc)
    out["palloc_size"] = size(palloc_data)
    out["palloc_bits"] = d.member(palloc_data, "pallocBits")[0]  # embedded pallocBits
    out["scavenged"] = d.member(palloc_data, "scavenged")[0]
    # pages.inUse.ranges []addrRange; addrRange{base, limit offAddr}, offAddr{a uintptr}
    in_use_off, in_use_t = d.path_of(mheap, "pages", "inUse", "ranges")
    out["in_use"] = d.slice(in_use_off, in_use_t)
    range_t = pointee(d.member(in_use_t, "array")[1])
    out["range_base"] = d.value_in(*d.member(range_t, "base"))[0]
    out["range_limit"] = d.value_in(*d.member(range_t, "limit"))[0]
    return pointee(_array_elem(l2_t))


def _span_layout(d: _Dwarf, heap_arena: Any, out: Dict[str, Any]) -> None:
    """heapArena.spans and the mspan fields read."""
    out["spans"], spans_t = d.member(heap_arena, "spans")
    out["spans_len"] = array_len(spans_t)
    mspan = pointee(_array_elem(spans_t))
    out["span_size"] = size(mspan)
    out["span_start"] = d.member(mspan, "startAddr")[0]
    out["span_npages"] = d.member(mspan, "npages")[0]
    out["span_state"], out["span_state_size"] = d.value_in(*d.member(mspan, "state"))


def _page_cache_layout(d: _Dwarf, out: Dict[str, Any]) -> None:
    """allp []*p and p.pcache (runtime.pageCache{base, cache, scav}): optional,
    a refinement of the released pages (see the module doc)."""
    out.update(allp_slice=None, pcache=-1, pcache_base=0, pcache_cache=0, pcache_scav=0)
    if "runtime.allp" not in d.dies:
        return
    try:
        allp_t = d.var_type("runtime.allp")
        allp_slice = d.slice(0, allp_t)
        p_t = pointee(pointee(d.member(allp_t, "array")[1]))
        pcache, pcache_t = d.member(p_t, "pcache")
        fields = {f"pcache_{name}": d.member(pcache_t, name)[0] for name in ("base", "cache", "scav")}
        p_id, id_t = d.member(p_t, "id")
        fields["p_id"] = p_id if size(id_t) == 4 else -1
    except NoRuntimeInfo:
        return
    out.update(allp_slice=allp_slice, pcache=pcache, **fields)


def _offheap_layout(d: _Dwarf, mheap: Any, heap_arena: Any, out: Dict[str, Any]) -> None:
    """What goruntime reads to find the runtime's off-heap memory. Every
    part is optional: what this binary's DWARF lacks stays -1/None/0 and
    goruntime leaves that kind of region out (and says so)."""
    ptr = d.ptr
    out["mheap_size"], out["heap_arena_size"] = size(mheap), size(heap_arena)

    def attempt(fn: Any) -> None:
        try:
            fn()
        except NoRuntimeInfo:
            pass

    def summary() -> None:
        # pages.summary [summaryLevels][]pallocSum, each reserved whole by
        # pageAlloc.sysInit (cap = entries of the level)
        off, t = d.path_of(mheap, "pages", "summary")
        level = _array_elem(t)
        s = d.slice(off, level)
        out.update(summary=s, summary_levels=array_len(t), summary_stride=size(level))

    def scav() -> None:
        # pages.scav.index.chunks []atomicScavChunkData, reserved whole by
        # scavengeIndex.sysInit
        out["scav_chunks"] = d.slice(*d.path_of(mheap, "pages", "scav", "index", "chunks"))

    def allspans() -> None:
        out["allspans"] = d.slice(*d.member(mheap, "allspans"))

    def gc_bits() -> None:
        var = d.var_type("runtime.gcBitsArenas")
        lists = tuple(d.member(var, name)[0] for name in ("free", "next", "current", "previous"))
        arena = pointee(d.member(var, "free")[1])
        out.update(gc_bits_lists=lists, gc_bits_next=d.member(arena, "next")[0])
        if not out["gc_bits_chunk_bytes"]:
            out["gc_bits_chunk_bytes"] = size(arena)

    def buckhash() -> None:
        # atomic.UnsafePointer (1.21+): the *buckhashArray inside it
        off, n = d.value_in(0, d.var_type("runtime.buckhash"))
        if n == ptr and out["buckhash_len"] > 0:
            out.update(buckhash_ptr=off, buckhash_bytes=out["buckhash_len"] * ptr)

    def allm() -> None:
        m = pointee(d.var_type("runtime.allm"))
        g0, g_t = d.member(m, "g0")
        stack_off, stack_t = d.member(pointee(g_t), "stack")
        out.update(m_alllink=d.member(m, "alllink")[0], m_g0=g0, m_gsignal=d.member(m, "gsignal")[0],
                   g_stack_lo=stack_off + d.member(stack_t, "lo")[0],
                   g_stack_hi=stack_off + d.member(stack_t, "hi")[0])

    def span_queue() -> None:
        # Go 1.26+ (Green Tea GC): work.spanSPMCs.list, a listHeadManual of
        # spanSPMCs (linked through spanSPMC.allnode), each with a ring
        # buffer of cap objptrs mapped by sysAlloc ("GC span queue").
        obj = d.path_of(d.var_type("runtime.work"), "spanSPMCs", "list", "obj")[0]
        spmc = d.dies.get("runtime.spanSPMC")
        if spmc is None:
            return
        node, node_t = d.member(spmc, "allnode")
        cap, cap_t = d.member(spmc, "cap")
        if size(cap_t) != 4:
            return
        out.update(spmc_list=obj, spmc_node_next=node + d.member(node_t, "next")[0],
                   spmc_ring=d.member(spmc, "ring")[0], spmc_cap=cap)

    for key, name in _OFFHEAP_CONSTANTS.items():
        out[key] = int(d.consts.get(name, 0))
    for fn in (summary, scav, allspans, gc_bits, buckhash, allm, span_queue):
        attempt(fn)
    del out["buckhash_len"]


def _check_layout(lay: _Layout, path: str) -> None:
    """The relations the reader relies on; a binary breaking them is not
    one this reader understands."""
    problems = []
    chunk_bytes = lay.chunk_pages * lay.page_size
    if lay.spans_len * lay.page_size != lay.arena_bytes:
        problems.append("heapArena.spans does not cover heapArenaBytes")
    if lay.arena_bytes % chunk_bytes:
        problems.append("arenas are not made of whole page-allocator chunks")
    bitmap = lay.chunk_pages // 8
    if lay.chunk_pages % 64 or max(lay.palloc_bits, lay.scavenged) + bitmap > lay.palloc_size:
        problems.append("pallocData does not hold two bitmaps of pallocChunkPages bits")
    for name, n in (("arenas L2", lay.arenas_l2), ("chunks L2", lay.chunks_l2)):
        if n <= 0 or n & (n - 1):
            problems.append(f"{name} length {n} is not a power of two")
    if lay.arenas_l1 <= 0 or lay.chunks_l1 <= 0:
        problems.append("empty arenas or chunks index")
    if lay.span_state_size not in (1, 2, 4, 8) or lay.heap_arenas.elem not in (4, 8):
        problems.append("unexpected mspan.state or arenaIdx size")
    if problems:
        raise _no_info(path, "its runtime layout is not the one this reader knows (" + "; ".join(problems) + ")")


# --------------------------------------------------------------------------
# Layout tables: binaries without DWARF (-ldflags=-w)

#: _Layout fields that belong to one binary (addresses, version, where the
#: layout came from), not to its Go version's runtime: not in the tables.
_BINARY_FIELDS = ("go_version", "mheap", "allp", "globals", "source", "data_segments")
#: Fields holding a _Slice (a plain tuple in the tables).
_SLICE_FIELDS = ("heap_arenas", "in_use", "allp_slice", "summary", "scav_chunks", "allspans")
#: Variables whose symbol size must match the table's (each one's type is
#: a struct the readers use): a binary whose sizes differ has another
#: layout (a GOEXPERIMENT, a build tag, a patched runtime) and is refused.
_CHECKED_SYMBOLS = ("runtime.mheap_", "runtime.m0", "runtime.g0", "runtime.emptymspan", "runtime.gcBitsArenas",
                    "runtime.work", "runtime.allp")
_ARCHES = {"EM_X86_64": "amd64", "EM_AARCH64": "arm64"}


def table_entry(lay: _Layout) -> Dict[str, Any]:
    """The version-specific part of a layout, as the tables hold it (plain
    ints, strings and tuples)."""
    out: Dict[str, Any] = {}
    for key, value in lay._asdict().items():
        if key not in _BINARY_FIELDS:
            out[key] = tuple(value) if isinstance(value, _Slice) else value
    return out


def symbol_sizes(elf: ELFFile) -> Dict[str, int]:
    """st_size of the _CHECKED_SYMBOLS the binary has."""
    symtab = elf.get_section_by_name(".symtab")
    out = {}
    if isinstance(symtab, SymbolTableSection):
        for name in _CHECKED_SYMBOLS:
            sym = _find_symbol(symtab, name)
            if sym is not None:
                out[name] = sym["st_size"]
    return out


def go_minor(version: str) -> str:
    """"1.27" of "go1.27.3" (also of "go1.22rc1", "go1.22-20231128-RC02 ..."); "" if none."""
    m = re.match(r"go(\d+)\.(\d+)(?!\d)", version)
    return f"{m.group(1)}.{m.group(2)}" if m else ""


def elf_arch(elf: ELFFile) -> str:
    return _ARCHES.get(elf["e_machine"], str(elf["e_machine"]))


def _table_layout(elf: ELFFile, path: str, info: "ModuleInfo") -> _Layout:
    """The layout of a Go binary without DWARF, from the shipped tables.

    With a symbol table (``-ldflags=-w``) the addresses come from it and the
    sizes of a few runtime variables must match the table's; without one
    (``-s``, ``strip``) mheap_ and allp are found at read time by the
    symbol-less scan (_resolve) and only what hangs off mheap_ is known."""
    try:
        return _table_layout1(elf, path, info)
    except NoRuntimeInfo as err:
        raise NoRuntimeInfo(str(err), no_dwarf=True) from err


def _table_layout1(elf: ELFFile, path: str, info: "ModuleInfo") -> _Layout:
    from . import tables  # its data is generated by tools/gen_golayouts.py

    assert info.go is not None
    arch, minor = elf_arch(elf), go_minor(info.go.version)
    entry = tables.LAYOUTS.get(arch, {}).get(minor)
    if entry is None:
        known = ", ".join(sorted(tables.LAYOUTS.get(arch, {}))) or "none"
        raise _no_info(path, f"it has no DWARF debug info, and memscan has no layout table for "
                             f"{info.go.version or 'its Go version'} on {arch} (tables: {known})")
    if tuple(info.go.experiments) != tuple(entry["experiments"]):
        raise _no_info(path, f"it has no DWARF debug info and was built with GOEXPERIMENT="
                             f"{','.join(info.go.experiments) or '(none)'}; the layout table for Go {minor} "
                             f"describes builds with {','.join(entry['experiments']) or 'the default experiments'} "
                             "only (experiments can change the runtime's layout)")
    fields: Dict[str, Any] = dict(entry["layout"])
    for key in _SLICE_FIELDS:
        if fields.get(key) is not None:
            fields[key] = _Slice(*fields[key])
    fields["gc_bits_lists"] = tuple(fields["gc_bits_lists"])
    ptr = elf.elfclass // 8
    word = ("<" if elf.little_endian else ">") + ("Q" if ptr == 8 else "I")
    if (fields["ptr"], fields["word"]) != (ptr, word):
        raise _no_info(path, f"its word size or byte order differs from the layout table's for Go {minor}")
    symtab = elf.get_section_by_name(".symtab")
    if isinstance(symtab, SymbolTableSection):
        syms = _symbols(elf, path)
        sizes = symbol_sizes(elf)
        for name, want in entry["symbol_sizes"].items():
            if name in sizes and sizes[name] != want:
                raise _no_info(path, f"it has no DWARF debug info and its {name} is {sizes[name]} bytes, not "
                                     f"{want} as in the layout table for Go {minor} (generated from "
                                     f"{entry['generated_from']}): another layout (build tags, patched runtime?)")
        if "runtime.mheap_" not in sizes:
            raise _no_info(path, "its symbol table has no runtime.mheap_")
        source = "table"
        mheap = syms["runtime.mheap_"][0]
        allp = syms.get("runtime.allp", (0, 0))[0] if fields["allp_slice"] is not None else 0
        globs = tuple(sorted((name, syms[name][0]) for name in _OFFHEAP_VARS if name in syms))
    else:
        source, mheap, allp, globs = "scan", 0, 0, ()
        if fields["arenas_l1"] != 1:
            raise _no_info(path, "it has neither DWARF nor symbols, and the symbol-less scan for mheap_ needs a "
                                 "one-level heap index (arenaL1Bits = 0, as on 64-bit Linux)")
    lay = _Layout(go_version=info.go.version, mheap=mheap, allp=allp, globals=globs, source=source,
                  data_segments=_data_segments(elf), **fields)
    _check_layout(lay, path)
    return lay


# Parsed layouts (or the NoRuntimeInfo message) per file identity.
_LAYOUTS_KEPT = 16
_layouts: "LRU[Tuple[int, ...], Any]" = LRU(_LAYOUTS_KEPT)

_DWARF_ERRORS = (ELFError, DWARFError, ConstructError, KeyError, IndexError, ValueError, struct.error, EOFError)


#: Whether readers use the shipped layout tables (memscan.owners.go.tables) for a
#: Go binary without DWARF when not told otherwise (``tables=None``). The
#: tables come from the DWARF of the real toolchains (tools/gen_golayouts.py)
#: and a binary is refused when its experiments or symbol sizes differ.
LAYOUT_TABLES = True


def _layout(path: str, tables: Optional[bool] = None) -> _Layout:
    """The layout of the Go binary at ``path``, parsed once per file identity.

    ``tables``: for a binary without DWARF, take the layout from the
    shipped tables (None: :data:`LAYOUT_TABLES`); else such a binary is a
    NoRuntimeInfo that says it needs DWARF."""
    if tables is None:
        tables = LAYOUT_TABLES
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise Error(f"cannot open the Go binary {path}: {err.strerror}") from err
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

        def parse() -> Any:
            try:
                return _parse_file(fd, path)
            except NoRuntimeInfo as err:
                return (str(err), err.no_dwarf)

        hit = _layouts.get_or_make(key, parse)
    finally:
        os.close(fd)
    if not isinstance(hit, _Layout):  # (message, whether the binary lacks DWARF)
        if hit[1] and not tables:
            raise _no_dwarf(path)
        raise NoRuntimeInfo(hit[0])
    if hit.source != "dwarf" and not tables:
        raise _no_dwarf(path)
    return hit


def _parse_file(fd: int, path: str) -> _Layout:
    # module_info opens the very file we have open (by fd), not the path again.
    info = module_info(f"/proc/self/fd/{fd}")
    if info is None:
        raise _no_info(path, "it is not an ELF file")
    if info.go is None:
        raise _no_info(path, "it holds no Go runtime (no .go.buildinfo)")
    with os.fdopen(os.dup(fd), "rb") as f:
        try:
            return _parse_layout(ELFFile(f), path, info)
        except _DWARF_ERRORS as err:
            raise _no_info(path, f"its DWARF could not be parsed ({type(err).__name__}: {err})") from err



# --------------------------------------------------------------------------
# The target: bounded, validated, read-only reads


def _Target(pid: int, limit: int) -> TargetMemory:
    """The reader of a Go runtime's structures: ranges checked against
    /proc/PID/maps, :class:`HeapChanged` when they do not add up,
    :class:`ReadLimitExceeded` past ``limit`` bytes (pagemap included)."""
    return TargetMemory(pid, limit, changed=HeapChanged, over_limit=ReadLimitExceeded, subject="Go heap", maps=True)


# --------------------------------------------------------------------------
# Reading the heap


def read_heap(pid: int, binary_path: str, load_bias: int, *, max_bytes: int = MAX_READ_BYTES,
              max_unsettled: float = MAX_UNSETTLED, tables: Optional[bool] = None) -> HeapPages:
    """The page states of the heap of the Go runtime in ``binary_path``.

    ``binary_path`` opens the ELF file holding the runtime as the process
    maps it (e.g. a ``/proc/PID/map_files`` entry, see
    :func:`memscan.elf.mapped_path`); ``load_bias`` is 0 for ET_EXEC,
    else the mapping's start minus ``ModuleInfo.min_vaddr``. One pass, no
    retry.

    ``max_unsettled``: the fraction of the grown heap whose pages may have
    changed while they were read (``HeapPages.unsettled``) before the read
    is refused; 0 accepts only a read in which every span, spans entry and
    bitmap agree.

    ``tables``: read a binary without DWARF with the layout tables shipped
    in :mod:`memscan.owners.go.tables` (by its Go minor version; only default
    GOEXPERIMENTs): with its symbol table (``-ldflags=-w``) the addresses
    come from the symbols, without (``-s``, ``strip``) mheap_ and allp are
    found by a symbol-less scan of its data segments (see :func:`_resolve`).
    None: :data:`LAYOUT_TABLES` (False: such binaries are NoRuntimeInfo).

    Raises:
        NoRuntimeInfo: the binary has no DWARF or symbol table (or not the
            types this reader knows); retrying cannot help.
        HeapChanged: the structures changed under us (a pointer or span
            outside the heap, allocated pages outside the grown ranges, or
            more unsettled pages than allowed); try again.
        ReadLimitExceeded: more than ``max_bytes`` would have to be read.
        NoSuchProcess, AccessDenied: as for every /proc read (reading
            another process's memory needs ptrace-attach rights).
    """
    lay = _layout(binary_path, tables)
    with _Target(pid, max_bytes) as target, procfs.translated(pid, procfs.path(pid, "mem")):
        lay = _resolve(target, lay, load_bias, binary_path)
        return _Reader(target, lay, load_bias, max_unsettled).heap()


# --------------------------------------------------------------------------
# Binaries without symbols: find mheap_ and allp in the target (6.4)


def _resolve(target: TargetMemory, lay: _Layout, load_bias: int, path: str) -> _Layout:
    """``lay`` with the link-time addresses of mheap_ and allp filled in.

    Only a layout from the tables of a binary without symbols (source
    "scan") lacks them. Then the module's writable segments (.data, .bss,
    read where resident) are searched for

    1. ``mheap_.arenas[0]``: a word pointing to a page-aligned run of
       anonymous ``rw`` memory as long as the heap index (32 MiB); mheap_ is
       then that word's address minus the table's offset of ``arenas``, and
       must lie in the segment and hold a consistent heap: a heapArenas
       slice whose every index has a heapArena in the heap index and an
       arena mapping, page summary levels and a scavenge index that are
       mapped; exactly one candidate must pass.
    2. ``allp``: a slice header of 1..65536 pointers into the heap arenas
       to distinct objects whose ``p.id`` is their index; exactly one.

    Anything else (no candidate, several) is a NoRuntimeInfo naming what
    was not found: nothing is guessed."""
    if lay.source != "scan":
        return lay
    mask = (1 << (8 * lay.ptr)) - 1
    segs = [((lo + load_bias) & mask, (hi + load_bias) & mask) for lo, hi in lay.data_segments]
    if not segs:
        raise _no_info(path, "it has neither DWARF nor symbols nor a writable segment to scan for mheap_")
    # Only the pages that hold data: what the runtime wrote is resident (or
    # swapped); the rest of .bss is zeros, where no pointer can be found.
    data = []
    for lo, hi in segs:
        lo -= lo % lay.ptr
        for rlo, raw in target.read_runs(lo, hi - lo, "the Go module's data segment"):
            n = len(raw) // lay.ptr
            data.append((rlo, struct.unpack(f"{lay.word[0]}{n}{lay.word[1]}", raw[: n * lay.ptr])))
    l2_bytes = lay.arenas_l2 * lay.ptr
    found: Dict[int, List[Tuple[int, int]]] = {}
    for base, words in data:
        for i, v in enumerate(words):
            if not v or v % _OS_PAGE:
                continue
            mheap = base + i * lay.ptr - lay.arenas
            if not any(lo <= mheap and mheap + lay.mheap_size <= hi for lo, hi in segs):
                continue
            if not _anon_run(target, v, l2_bytes):
                continue
            cover = _plausible_mheap(target, lay, mheap, v)
            if cover is not None:
                found[mheap] = cover
    if len(found) != 1:
        raise _no_info(path, "it has neither DWARF nor symbols, and the symbol-less scan of its data segments found "
                             f"{len(found) or 'no'} candidates for mheap_ (a pointer to the 32 MiB heap index at "
                             f"mheap_+{lay.arenas:#x} with a consistent heap around it)"
                             + (f": {', '.join(hex(m) for m in sorted(found))}" if found else
                                "; has the runtime set up its heap yet?"))
    (mheap, cover), = found.items()
    allp = _scan_allp(target, lay, data, mheap, cover, path)
    return lay._replace(mheap=(mheap - load_bias) & mask, allp=(allp - load_bias) & mask if allp else 0)


def _anon_run(target: TargetMemory, start: int, size: int) -> bool:
    """Is [start, start + size) contiguous readable anonymous memory?"""
    pos, end = start, start + size
    while pos < end:
        m = target.mapping(pos)
        if m is None or not m.anonymous or not m.readable or m.name in ("[heap]", "[stack]"):
            return False
        pos = m.end
    return True


def _plausible_mheap(target: TargetMemory, lay: _Layout, mheap: int, l2: int) -> Optional[List[Tuple[int, int]]]:
    """The arenas (merged [base, end) ranges) if the runtime's mheap_ at
    ``mheap`` (whose arenas[0] is ``l2``) holds a consistent heap, else None."""
    word = struct.Struct(lay.word)
    mask = (1 << (8 * lay.ptr)) - 1

    def header(addr: int, s: _Slice) -> Tuple[int, int, int]:
        raw = target.read(addr, max(s.array, s.len, s.cap) + lay.ptr, "mheap_ candidate")
        return tuple(word.unpack_from(raw, off)[0] for off in (s.array, s.len, s.cap))  # type: ignore[return-value]

    try:
        array, length, cap = header(mheap + lay.heap_arenas.offset, lay.heap_arenas)
        if not 0 < length <= cap <= lay.arenas_l2 or not array or array % lay.ptr:
            return None
        raw = target.read(array, length * lay.heap_arenas.elem, "mheap_.heapArenas candidate")
        idx_word = lay.word[0] + ("Q" if lay.heap_arenas.elem == 8 else "I")
        bases = []
        for (idx,) in struct.iter_unpack(idx_word, raw):
            if idx >= lay.arenas_l2:
                return None
            ha = target.word(l2 + idx * lay.ptr, lay.word, "heap index candidate")
            base = (idx * lay.arena_bytes + lay.arena_base_offset) & mask
            m, a = target.mapping(ha), target.mapping(base)
            if not ha or m is None or not m.anonymous or a is None or not a.anonymous:
                return None
            bases.append(base)
        summary = lay.summary
        for level in range(lay.summary_levels if summary is not None else 0):
            assert summary is not None
            array, _, cap = header(mheap + summary.offset + level * lay.summary_stride, summary)
            if not array or array % _OS_PAGE or not cap or target.mapping(array) is None:
                return None
        if lay.scav_chunks is not None:
            array, length, cap = header(mheap + lay.scav_chunks.offset, lay.scav_chunks)
            if not array or array % _OS_PAGE or not length or length != cap or target.mapping(array) is None:
                return None
    except HeapChanged:  # a pointer to nowhere: not mheap_
        return None
    return _merge([(b, b + lay.arena_bytes) for b in bases])


def _scan_allp(target: TargetMemory, lay: _Layout, data: List[Tuple[int, Tuple[int, ...]]], mheap: int,
               cover: List[Tuple[int, int]], path: str) -> int:
    """Address of runtime.allp, found in the data segments (see _resolve);
    0 when the layout has no page caches to read."""
    s = lay.allp_slice
    if s is None or lay.pcache < 0 or lay.p_id < 0:
        return 0
    ptr = lay.ptr
    ia, il, ic = s.array // ptr, s.len // ptr, s.cap // ptr
    span = max(ia, il, ic) + 1
    id_fmt = lay.word[0] + "i"

    def in_heap(p: int) -> bool:
        return any(lo <= p < hi for lo, hi in cover)

    def is_p(p: int, k: int) -> bool:
        # runtime.p begins "id int32; status uint32" and has "mcache *mcache"
        # just before pcache (Go 1.14-1.27): id k, a status below 5
        # (_Pidle.._Pdead), and the P's mcache, which comes from a fixalloc
        # outside the heap arenas (a P in allp always has one). A heap object
        # that happens to hold a 0 where a P's id would be has no such mcache.
        id_, status = struct.unpack(id_fmt + "I", target.read(p + lay.p_id, 8, "p.id"))
        if id_ != k or status > 4:
            return False
        mcache = target.word(p + lay.pcache - ptr, lay.word, "p.mcache")
        return bool(mcache) and mcache % ptr == 0 and not in_heap(mcache) and target.mapping(mcache) is not None

    found = []
    for base, words in data:
        for i in range(len(words) - span + 1):
            length, cap, array = words[i + il], words[i + ic], words[i + ia]
            if not 0 < length <= cap <= _MAX_PS or array % ptr or not in_heap(array):
                continue
            addr = base + i * ptr
            if mheap <= addr < mheap + lay.mheap_size:
                continue
            try:
                ps = target.words(array, length, lay.word, "allp candidate")
                if len(set(ps)) != length or not all(p and p % ptr == 0 and in_heap(p) for p in ps):
                    continue
                if all(is_p(p, k) for k, p in enumerate(ps)):
                    found.append((addr, ps))
            except HeapChanged:
                continue
    # m0.allpSnapshot (a copy of allp kept while m0 looks for
    # work without a P) is in .bss too and, while set, names the very same
    # Ps: any of the copies gives the same page caches in this read.
    if found and len({ps for _, ps in found}) == 1:
        return found[0][0]
    raise _no_info(path, "it has neither DWARF nor symbols, and the symbol-less scan of its data segments found "
                         + (f"{len(found)} disagreeing candidates ({', '.join(hex(a) for a, _ in found)})"
                            if found else "no candidate")
                         + " for runtime.allp (the Ps' page caches are needed to tell cached pages from changed ones)")


class _Arena(NamedTuple):
    base: int
    heap_arena: int  # address of its runtime.heapArena


class _Span(NamedTuple):
    start: int
    end: int  # startAddr + npages * pageSize
    state: int


class _ArenaMemo(NamedTuple):
    """One arena's decoding, with the bytes it was decoded from."""

    spans: bytes  # heapArena.spans: the *mspan of every page (nil: never allocated)
    batches: List[Tuple[int, int, List[int]]]  # (address, size, mspan pointers) of the mspan reads
    inputs: Tuple[Any, ...]  # the mspan bytes, page bitmaps, grown ranges, page caches, arena cover
    runs: List[Tuple[int, int, int]]  # (start, end, state), as _state_runs gives them
    unsettled: int


# The last decoding of each arena of recent processes, by (pid, arena base).
# A memo is used only when every byte it was decoded from reads the same
# again, so a reused pid or an exec cannot make it wrong. At most
# _ARENA_MEMOS arenas (64 MiB each on 64-bit Linux): ~80 KB apiece.
_ARENA_MEMOS = 1024
_arena_memos: "LRU[Tuple[int, int], _ArenaMemo]" = LRU(_ARENA_MEMOS)


class _Reader:
    """One read of one runtime's heap structures."""

    def __init__(self, target: TargetMemory, lay: _Layout, load_bias: int, max_unsettled: float) -> None:
        self.t = target
        self.lay = lay
        self.max_unsettled = max_unsettled
        self.mask = (1 << (8 * lay.ptr)) - 1
        self.mheap = (lay.mheap + load_bias) & self.mask
        self.allp = (lay.allp + load_bias) & self.mask if lay.allp else 0
        self.page_size = lay.page_size
        self.npages = lay.spans_len  # pages per arena
        self._chunk_blocks: Dict[int, int] = {}  # mheap_.pages.chunks[l1]

    def word(self, addr: int, what: str) -> int:
        return self.t.word(addr, self.lay.word, what)

    def slice(self, addr: int, s: _Slice, limit: int, what: str) -> bytes:
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

    def heap(self) -> HeapPages:
        lay = self.lay
        arenas = self.checked_arenas()
        grown = self.grown_ranges()
        caches = self.page_caches()
        cover = _merge([(a.base, a.base + lay.arena_bytes) for a in arenas])
        runs = []
        unsettled = 0
        for a in arenas:
            arena, changed = self.arena_pages(a, cover, grown, caches)
            runs.append(arena)
            unsettled += changed * self.page_size
        intervals = _intervals(runs)
        grown_bytes = sum(e - s for s, e, state in intervals if state != RESERVED)
        if unsettled > self.max_unsettled * grown_bytes:
            raise HeapChanged(f"{unsettled // 1024} KiB of the heap changed while it was read "
                              f"(more than {self.max_unsettled:.1%} of {grown_bytes // 1024} KiB)")
        return HeapPages(
            intervals=intervals,
            arenas=tuple(a.base for a in arenas),
            arena_bytes=lay.arena_bytes,
            page_size=self.page_size,
            go_version=lay.go_version,
            bytes_read=self.t.bytes_read,
            pagemap_bytes=self.t.pagemap_bytes,
            unsettled=unsettled,
        )

    def arena_pages(self, a: _Arena, cover: List[Tuple[int, int]], grown: List[Tuple[int, int]],
                    caches: List[Tuple[int, int, int]]) -> Tuple[List[Tuple[int, int, int]], int]:
        """The runs of page states of one arena, (start, end, state), and
        its unsettled page count.

        Reads first and decoding after, so that what the program changes
        meanwhile (HeapPages.unsettled) is what it changes in the few
        milliseconds this arena takes. The states are a function of the
        bytes read alone: when they equal the previous scan's (an arena
        the program did not touch in between, most of a large heap between
        two samples) the previous decoding is reused."""
        # heapArena.spans: the *mspan of every page (nil: never allocated),
        # at 0x104000 in Go 1.21 (after the 1 MiB pointer bitmap), at 0 from 1.22.
        what = f"heapArena.spans of arena {a.base:#x}"
        raw = self.t.read(a.heap_arena + self.lay.spans, self.npages * self.lay.ptr, what)
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
        states, unsettled = self.arena_states(a.base, self._spans(raw), self.decode_spans(batches), cover, alloc, scav,
                                              grown, caches)
        runs = _state_runs(a.base, states, self.page_size)
        _arena_memos.put(key, _ArenaMemo(raw, [(lo, len(b), ptrs) for lo, b, ptrs in batches], inputs, runs,
                                        unsettled))
        return runs, unsettled

    def _spans(self, raw: bytes) -> Tuple[int, ...]:
        return struct.unpack(f"{self.lay.word[0]}{self.npages}{self.lay.word[1:]}", raw)

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
        raw = self.slice(self.allp, lay.allp_slice, _MAX_PS, "runtime.allp")
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

    def decode_spans(self, batches: List[Tuple[int, bytes, List[int]]]) -> Dict[int, _Span]:
        """The live (in-use or manual) mspans of what read_span_batches read."""
        lay = self.lay
        ps = self.page_size
        word = struct.Struct(lay.word)
        live = (lay.span_in_use, lay.span_manual)
        order: Literal["little", "big"] = "little" if lay.word[0] == "<" else "big"
        out: Dict[int, _Span] = {}
        for lo, raw, batch in batches:
            for p in batch:
                off = p - lo + lay.span_state
                state = int.from_bytes(raw[off : off + lay.span_state_size], order)
                if state in live:  # else dead: left behind in spans arrays by a free
                    start = word.unpack_from(raw, p - lo + lay.span_start)[0]
                    npages = word.unpack_from(raw, p - lo + lay.span_npages)[0]
                    out[p] = _Span(start, start + npages * ps, state)
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

    # -- states

    def arena_states(self, base: int, spans: Tuple[int, ...], info: Dict[int, _Span],
                     cover: List[Tuple[int, int]], alloc: int, scav: int,
                     grown: List[Tuple[int, int]], caches: List[Tuple[int, int, int]]) -> Tuple[bytearray, int]:
        """The state of every page of the arena at ``base``, and how many of
        its pages are unsettled (changed while they were read)."""
        n, ps = self.npages, self.page_size
        full = (1 << n) - 1
        grown_bits = _range_bits(grown, base, n, ps)
        if (alloc | scav) & ~grown_bits & full:
            raise HeapChanged(f"page bits set outside the grown heap in arena {base:#x}")
        owned, unsettled = self.span_pages(base, spans, info, cover, _page_flags(alloc, n), _page_flags(scav, n))
        objects, stacks = _flag_bits(owned, OBJECTS + 1), _flag_bits(owned, STACKS + 1)
        spanned = objects | stacks
        cached, cached_scav = _cache_bits(caches, base, n, ps)
        # Allocated without a span: expected only for pages in a P's page
        # cache and for Go 1.26+ random padding (allocated and scavenged).
        # Any other page had its span freed or made while we read (or is
        # being scavenged right now, a few pages at a time).
        unsettled += bin(alloc & ~scav & ~cached & ~spanned & grown_bits).count("1")
        # Scavenged and not in a span: free scavenged pages and the padding,
        # both counted released by MemStats; pages in a page cache had their
        # scavenged bit moved into the cache.
        released = (scav | (cached_scav & alloc)) & grown_bits & ~spanned
        states = bytearray([FREE]) * n
        for mask, state in ((full & ~grown_bits, RESERVED), (released, RELEASED), (objects, OBJECTS),
                            (stacks, STACKS)):
            for lo, hi in _runs(mask):
                states[lo:hi] = bytes([state]) * (hi - lo)
        return states, unsettled

    def span_pages(self, base: int, spans: Tuple[int, ...], info: Dict[int, _Span],
                   cover: List[Tuple[int, int]], alloc: bytes, scav: bytes) -> Tuple[bytearray, int]:
        """Per page of the arena at ``base``: OBJECTS + 1 or STACKS + 1 when
        a live span owns it, else 0; and the number of pages in live spans
        that disagree (changed while we read them).

        A live span's pages all point to it (so no two live spans share a
        page), are allocated and not scavenged. A span lies inside the
        arenas, but may cross from one arena into an adjacent one (objects
        larger than the rest of an arena): it must fit in one run of
        contiguous arenas, not in one arena."""
        lay, ps = self.lay, self.page_size
        arena_end = base + lay.arena_bytes
        owned = bytearray(self.npages)
        marks = {lay.span_in_use: OBJECTS + 1, lay.span_manual: STACKS + 1}
        unsettled = 0
        for p in set(spans):
            s = info.get(p)
            if s is None:
                continue  # nil or dead
            if not (base <= s.start and s.end <= arena_end):
                if s.start % ps or s.end <= s.start or not any(lo <= s.start and s.end <= hi for lo, hi in cover):
                    raise HeapChanged(f"live span at {s.start:#x}-{s.end:#x} lies outside the heap arenas")
            lo = (max(s.start, base) - base) // ps
            hi = (min(s.end, arena_end) - base) // ps
            if lo >= hi:
                continue  # a stale pointer to an mspan reused elsewhere
            mark, k = marks[s.state], hi - lo
            if spans[lo:hi].count(p) == k and alloc.count(1, lo, hi) == k and not scav.count(1, lo, hi):
                owned[lo:hi] = bytes([mark]) * k
                continue
            for i in range(lo, hi):  # some pages changed under us: page by page
                if spans[i] == p and alloc[i] and not scav[i]:
                    owned[i] = mark
                else:
                    unsettled += 1
        return owned, unsettled


def _page_flags(bits: int, n: int) -> bytes:
    """Bitmap -> one byte per page (1 = set), bit i = byte i."""
    return format(bits, f"0{n}b")[::-1].encode().translate(_DIGIT_TO_FLAG)


def _flag_bits(flags: bytearray, value: int) -> int:
    """One byte per page -> bitmap of the pages whose byte is ``value``."""
    table = bytes(0x31 if i == value else 0x30 for i in range(256))
    return int(flags.translate(table)[::-1], 2) if flags else 0


_DIGIT_TO_FLAG = bytes.maketrans(b"01", b"\x00\x01")


def _merge(ranges: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _range_bits(ranges: List[Tuple[int, int]], base: int, n: int, ps: int) -> int:
    """Bit i set when page i of the arena at ``base`` lies in one of ``ranges``."""
    bits = 0
    end = base + n * ps
    for lo, hi in ranges:
        lo, hi = max(lo, base), min(hi, end)
        if lo < hi:
            first, last = (lo - base) // ps, (hi - base + ps - 1) // ps
            bits |= ((1 << (last - first)) - 1) << first
    return bits


def _cache_bits(caches: List[Tuple[int, int, int]], base: int, n: int, ps: int) -> Tuple[int, int]:
    """Pages of the arena at ``base`` that the P's page caches hold, and
    those of them that are scavenged."""
    pages = scav_pages = 0
    for cbase, cache, scav in caches:
        first = (cbase - base) // ps
        if 0 <= first < n and (cbase - base) % ps == 0:
            pages |= cache << first
            scav_pages |= scav << first
    full = (1 << n) - 1
    return pages & full, scav_pages & full




_ONES = re.compile("1+")


def _runs(mask: int) -> Iterator[Tuple[int, int]]:
    """[lo, hi) of every run of set bits."""
    if not mask:
        return
    bits = format(mask, "b")[::-1]  # bits[i] is bit i
    for m in _ONES.finditer(bits):
        yield m.start(), m.end()


_SAME = re.compile(rb"(.)\1*", re.DOTALL)


def _state_runs(base: int, states: bytearray, ps: int) -> List[Tuple[int, int, int]]:
    """Per-page states of the arena at ``base`` -> (start, end, state) runs."""
    return [(base + m.start() * ps, base + m.end() * ps, states[m.start()]) for m in _SAME.finditer(states)]


def _intervals(arenas: List[List[Tuple[int, int, int]]]) -> List[Tuple[int, int, int]]:
    """The runs of each arena (arenas sorted by base) -> merged intervals:
    adjacent arenas' runs of the same state join."""
    out: List[Tuple[int, int, int]] = []
    for runs in arenas:
        for start, end, state in runs:
            if out and out[-1][1] == start and out[-1][2] == state:
                out[-1] = (out[-1][0], end, state)
            else:
                out.append((start, end, state))
    return out
