"""A Go runtime's layout: where the heap and runtime readers find what they
read (offsets of struct fields, package runtime constants, link-time
addresses of runtime variables), built from a binary's DWARF and symbol
table, and the relations between its fields that the readers rely on.

Built from the types ``runtime.mheap``, ``runtime.pageAlloc``,
``runtime.heapArena``, ``runtime.mspan``, ``runtime.pallocData``,
``runtime.addrRanges``, ``runtime.pageCache``, the ``DW_TAG_constant``
entries of package runtime (see :mod:`memscan.owners.go.dwarf`), and the
ELF symbol table. The same record comes from the shipped tables for a
binary without DWARF (:mod:`memscan.owners.go.tables`).
"""

from __future__ import annotations

import struct
from typing import Any, Dict, NamedTuple, Optional, Tuple

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from ..._errors import NoRuntimeInfo
from ...elf import ModuleInfo
from .dwarf import (CONSTANTS, OFFHEAP_CONSTANTS, OFFHEAP_VARS, RUNTIME_VARS, Dwarf, Slice, array_elem, array_len,
                    no_info, pointee, size)

#: Plausibility bound on len(allp) (GOMAXPROCS) read from a target.
MAX_PS = 1 << 16


class Layout(NamedTuple):
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
    heap_arenas: Slice  # heapArenas (Go 1.25+) / allArenas []arenaIdx
    # mheap.pages (runtime.pageAlloc), offsets from mheap_
    chunks: int  # chunks [L1]*[L2]pallocData
    chunks_l1: int
    chunks_l2: int
    palloc_size: int
    palloc_bits: int  # pallocData.pallocBits (embedded), offset in pallocData
    scavenged: int  # pallocData.scavenged
    in_use: Slice  # pages.inUse.ranges []addrRange
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
    allp_slice: Optional[Slice]
    pcache: int
    pcache_base: int
    pcache_cache: int
    pcache_scav: int
    # -- what goruntime reads besides (off-heap runtime memory); -1 or None
    # where the binary does not have it (see _offheap_layout)
    mheap_size: int = 0  # sizeof(runtime.mheap)
    heap_arena_size: int = 0  # sizeof(runtime.heapArena)
    summary: Optional[Slice] = None  # mheap_.pages.summary[0] ([]pallocSum)
    summary_levels: int = 0  # len(pages.summary)
    summary_stride: int = 0  # sizeof([]pallocSum): pages.summary[i] = summary.offset + i*stride
    scav_chunks: Optional[Slice] = None  # mheap_.pages.scav.index.chunks
    allspans: Optional[Slice] = None  # mheap_.allspans []*mspan
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
    # runtime.gcController.memoryLimit (Go 1.19+): the int64 inside the
    # atomic.Int64, its offset in gcControllerState and its size
    memory_limit: int = -1
    memory_limit_size: int = 0
    # Link-time addresses of the other runtime variables goruntime reads
    # (runtime.persistentChunks, ...), sorted by name; absent ones omitted.
    globals: Tuple[Tuple[str, int], ...] = ()
    p_id: int = -1  # runtime.p.id (int32): checks allp found without symbols
    # (start, end) link-time vaddrs of the writable PT_LOADs (.data, .bss):
    # where the symbol-less scan looks for mheap_ and allp
    data_segments: Tuple[Tuple[int, int], ...] = ()
    #: Where the offsets come from: "dwarf", or "table" (tables.py, for a
    #: binary without DWARF), or "scan" (no symbols either: mheap_ found by
    #: the symbol-less heap-index scan at read time, see search.resolve).
    source: str = "dwarf"
    #: For a binary of a Go version without a table: the Go minor version
    #: whose table this layout is ("" otherwise), and the other candidate
    #: layouts, nearest version first; the read takes the first whose
    #: reading of the heap is plausible (search.resolve).
    table: str = ""
    alternatives: Tuple[Any, ...] = ()

    def global_addr(self, name: str) -> int:
        """Link-time address of runtime variable ``name``, 0 if unknown."""
        for n, addr in self.globals:
            if n == name:
                return addr
        return 0


def symbols(elf: ELFFile, path: str) -> Dict[str, Tuple[int, int]]:
    """(st_value, st_size) of runtime.mheap_ and, if present, runtime.allp."""
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        raise no_info(path, "it has DWARF but no symbol table; the exact tier needs both, or neither "
                            "(then with the layout tables)")
    out = {}
    for name in RUNTIME_VARS + OFFHEAP_VARS:
        sym = find_symbol(symtab, name)
        if sym is not None:
            out[name] = (sym["st_value"], sym["st_size"])
    if "runtime.mheap_" not in out:
        raise no_info(path, "its symbol table has no runtime.mheap_")
    return out


def find_symbol(symtab: SymbolTableSection, name: str) -> Any:
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


def data_segments(elf: ELFFile) -> Tuple[Tuple[int, int], ...]:
    """(p_vaddr, p_vaddr + p_memsz) of every writable PT_LOAD."""
    out = []
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_LOAD" and seg["p_flags"] & 2 and seg["p_memsz"]:
            out.append((seg["p_vaddr"], seg["p_vaddr"] + seg["p_memsz"]))
    return tuple(sorted(out))


def dwarf_layout(elf: ELFFile, path: str, info: ModuleInfo, d: Dwarf) -> Layout:
    """The layout of a Go binary whose DWARF ``d`` describes runtime.mheap_,
    with the addresses from its symbol table."""
    assert info.go is not None
    go_version = info.go.version
    syms = symbols(elf, path)
    ptr = elf.elfclass // 8
    mheap = d.var_type("runtime.mheap_")
    if syms["runtime.mheap_"][1] not in (0, size(mheap)):
        raise no_info(path, f"runtime.mheap_ is {syms['runtime.mheap_'][1]} bytes in the symbol table "
                            f"but {size(mheap)} in DWARF")
    fields: Dict[str, Any] = {key: d.const(key) for key in CONSTANTS}
    fields["arena_base_offset"] %= 1 << (8 * ptr)
    heap_arena = _mheap_layout(d, mheap, fields)
    _span_layout(d, heap_arena, fields)
    _page_cache_layout(d, fields)
    _offheap_layout(d, mheap, heap_arena, fields)
    allp = syms.get("runtime.allp", (0, 0))[0] if fields["allp_slice"] is not None else 0
    layout = Layout(
        go_version=go_version,
        ptr=ptr,
        word=("<" if elf.little_endian else ">") + ("Q" if ptr == 8 else "I"),
        mheap=syms["runtime.mheap_"][0],
        allp=allp,
        globals=tuple(sorted((name, syms[name][0]) for name in OFFHEAP_VARS if name in syms)),
        data_segments=data_segments(elf),
        **fields,
    )
    check_layout(layout, path)
    return layout


def _mheap_layout(d: Dwarf, mheap: Any, out: Dict[str, Any]) -> Any:
    """Fields of runtime.mheap and its page allocator; returns the heapArena type."""
    # arenas [1 << arenaL1Bits]*[1 << arenaL2Bits]*heapArena
    out["arenas"], arenas_t = d.member(mheap, "arenas")
    l2_t = pointee(array_elem(arenas_t))
    out["arenas_l1"], out["arenas_l2"] = array_len(arenas_t), array_len(l2_t)
    # heapArenas since Go 1.25, allArenas in 1.21-1.24 ([]arenaIdx both).
    out["heap_arenas"] = d.slice(*d.member(mheap, "heapArenas", "allArenas"))
    # pages.chunks [1 << pallocChunksL1Bits]*[1 << pallocChunksL2Bits]pallocData
    out["chunks"], chunks_t = d.path_of(mheap, "pages", "chunks")
    palloc = pointee(array_elem(chunks_t))
    out["chunks_l1"], out["chunks_l2"] = array_len(chunks_t), array_len(palloc)
    palloc_data = array_elem(palloc)
    out["palloc_size"] = size(palloc_data)
    out["palloc_bits"] = d.member(palloc_data, "pallocBits")[0]  # embedded pallocBits
    out["scavenged"] = d.member(palloc_data, "scavenged")[0]
    # pages.inUse.ranges []addrRange; addrRange{base, limit offAddr}, offAddr{a uintptr}
    in_use_off, in_use_t = d.path_of(mheap, "pages", "inUse", "ranges")
    out["in_use"] = d.slice(in_use_off, in_use_t)
    range_t = pointee(d.member(in_use_t, "array")[1])
    out["range_base"] = d.value_in(*d.member(range_t, "base"))[0]
    out["range_limit"] = d.value_in(*d.member(range_t, "limit"))[0]
    return pointee(array_elem(l2_t))


def _span_layout(d: Dwarf, heap_arena: Any, out: Dict[str, Any]) -> None:
    """heapArena.spans and the mspan fields read."""
    out["spans"], spans_t = d.member(heap_arena, "spans")
    out["spans_len"] = array_len(spans_t)
    mspan = pointee(array_elem(spans_t))
    out["span_size"] = size(mspan)
    out["span_start"] = d.member(mspan, "startAddr")[0]
    out["span_npages"] = d.member(mspan, "npages")[0]
    out["span_state"], out["span_state_size"] = d.value_in(*d.member(mspan, "state"))


def _page_cache_layout(d: Dwarf, out: Dict[str, Any]) -> None:
    """allp []*p and p.pcache (runtime.pageCache{base, cache, scav}): optional,
    a refinement of the released pages (see memscan.owners.go.heap)."""
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


def _offheap_layout(d: Dwarf, mheap: Any, heap_arena: Any, out: Dict[str, Any]) -> None:
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
        level = array_elem(t)
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

    for key, name in OFFHEAP_CONSTANTS.items():
        out[key] = int(d.consts.get(name, 0))
    def memory_limit() -> None:
        off, n = d.value_in(*d.member(d.var_type("runtime.gcController"), "memoryLimit"))
        out.update(memory_limit=off, memory_limit_size=n)

    for fn in (summary, scav, allspans, gc_bits, buckhash, allm, span_queue, memory_limit):
        attempt(fn)
    del out["buckhash_len"]


def check_layout(lay: Layout, path: str) -> None:
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
        raise no_info(path, "its runtime layout is not the one this reader knows (" + "; ".join(problems) + ")")


