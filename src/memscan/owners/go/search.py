"""Binaries without symbols (``-ldflags=-s``, ``strip``): runtime.mheap_ and
runtime.allp found in the target, by a symbol-less scan of the Go module's
data segments for the heap index pointer (``mheap_.arenas[0]``), validated
against the heap it leads to (see :func:`resolve`); several or no
candidates is a NoRuntimeInfo, never a guess.

On 64-bit Linux the heap index has one level (``arenaL1Bits`` = 0 in
runtime/malloc.go, every Go version the tables cover): ``mheap_.arenas[0]``
points to one 32 MiB array of ``*heapArena``, which ``mheap.sysAlloc`` maps
with the first heap arena.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..._cache import LRU
from ..._errors import HeapChanged, NoRuntimeInfo
from ...elf import PAGE_SIZE
from ...kernel import procfs
from ..memory import TargetMemory
from . import bits
from .binary import display_path
from .dwarf import Slice, no_info
from .layout import MAX_PS, Layout

# Where the search found mheap_ and allp (run-time addresses), per process
# (pid and start time: a reused pid is another process), binary layout and
# load bias: a sampler reads the same process again and again, and the
# search reads every resident page of the data segments. An entry is used
# only while what it names passes the checks the search made.
_FOUND_KEPT = 64
_found: "LRU[Tuple[Any, ...], Tuple[int, int]]" = LRU(_FOUND_KEPT)
# For a binary read with another version's table: which one was plausible
# in this process (tried first next time), by the same key.
_chosen: "LRU[Tuple[Any, ...], str]" = LRU(_FOUND_KEPT)


def resolve(target: TargetMemory, lay: Layout, load_bias: int, path: str) -> Layout:
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
    was not found: nothing is guessed. The result is kept per process (see
    _found) and checked again at every use.

    A layout from the table of another Go version (``lay.table``) and its
    ``alternatives`` are tried in turn: the first whose mheap_ (found, or
    from the symbol table) holds a plausible heap, and whose allp holds
    plausible Ps, is the one returned; none is a NoRuntimeInfo."""
    if not lay.table:
        return _resolve1(target, lay, load_bias, path)
    key = (target.pid, procfs.stat(target.pid).starttime, lay, load_bias)
    first = _chosen.get(key)
    mask = (1 << (8 * lay.ptr)) - 1
    tried = []
    for cand in sorted((lay, *lay.alternatives), key=lambda c: c.table != first):
        try:
            found = _resolve1(target, cand, load_bias, path)
        except NoRuntimeInfo:
            tried.append(cand.table)
            continue
        if found.source == "scan" or _still_valid(target, found, (found.mheap + load_bias) & mask,
                                                  (found.allp + load_bias) & mask if found.allp else 0):
            _chosen.put(key, cand.table)
            return found
        tried.append(cand.table)
    raise no_info(display_path(path), f"it has no DWARF debug info and memscan has no layout table for "
                                      f"{lay.go_version}; what the tables of the nearest versions (Go "
                                      f"{', '.join(tried)}) read of its heap is not plausible")


def _resolve1(target: TargetMemory, lay: Layout, load_bias: int, path: str) -> Layout:
    if lay.source != "scan":
        return lay
    mask = (1 << (8 * lay.ptr)) - 1
    key = (target.pid, procfs.stat(target.pid).starttime, lay, load_bias)
    hit = _found.get(key)
    if hit is None or not _still_valid(target, lay, *hit):
        hit = _search(target, lay, load_bias, display_path(path))
        _found.put(key, hit)
    mheap, allp = hit
    return lay._replace(mheap=(mheap - load_bias) & mask, allp=(allp - load_bias) & mask if allp else 0)


def _still_valid(target: TargetMemory, lay: Layout, mheap: int, allp: int) -> bool:
    """Does what the search found still pass its checks?"""
    try:
        cover = _plausible_mheap(target, lay, mheap, target.word(mheap + lay.arenas, lay.word, "mheap_.arenas"))
        if cover is None:
            return False
        if not allp or lay.allp_slice is None or lay.pcache < 0 or lay.p_id < 0:
            return True
        header = target.words(allp, _allp_header_words(lay), lay.word, "runtime.allp")
        return _allp_at(target, lay, header, cover) is not None
    except HeapChanged:
        return False


def _search(target: TargetMemory, lay: Layout, load_bias: int, path: str) -> Tuple[int, int]:
    """(mheap_, allp) at run time, found in the data segments (see resolve)."""
    mask = (1 << (8 * lay.ptr)) - 1
    segs = [((lo + load_bias) & mask, (hi + load_bias) & mask) for lo, hi in lay.data_segments]
    if not segs:
        raise no_info(path, "it has neither DWARF nor symbols nor a writable segment to scan for mheap_")
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
            if not v or v % PAGE_SIZE:
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
        raise no_info(path, "it has neither DWARF nor symbols, and the symbol-less scan of its data segments found "
                            f"{len(found) or 'no'} candidates for mheap_ (a pointer to the 32 MiB heap index at "
                            f"mheap_+{lay.arenas:#x} with a consistent heap around it)"
                            + (f": {', '.join(hex(m) for m in sorted(found))}" if found else
                               "; has the runtime set up its heap yet?"))
    (mheap, cover), = found.items()
    return mheap, _scan_allp(target, lay, data, mheap, cover, path)


def _anon_run(target: TargetMemory, start: int, size: int) -> bool:
    """Is [start, start + size) contiguous readable anonymous memory?"""
    pos, end = start, start + size
    while pos < end:
        m = target.mapping(pos)
        if m is None or not m.anonymous or not m.readable or m.name in ("[heap]", "[stack]"):
            return False
        pos = m.end
    return True


def _plausible_mheap(target: TargetMemory, lay: Layout, mheap: int, l2: int) -> Optional[List[Tuple[int, int]]]:
    """The arenas (merged [base, end) ranges) if the runtime's mheap_ at
    ``mheap`` (whose arenas[0] is ``l2``) holds a consistent heap, else None."""
    word = struct.Struct(lay.word)
    mask = (1 << (8 * lay.ptr)) - 1

    def header(addr: int, s: Slice) -> Tuple[int, int, int]:
        raw = target.read(addr, max(s.array, s.len, s.cap) + lay.ptr, "mheap_ candidate")
        return tuple(word.unpack_from(raw, off)[0] for off in (s.array, s.len, s.cap))  # type: ignore[return-value]

    try:
        array, length, cap = header(mheap + lay.heap_arenas.offset, lay.heap_arenas)
        if not 0 < length <= cap <= lay.arenas_l2 or not array or array % lay.ptr:
            return None
        raw = target.read(array, length * lay.heap_arenas.elem, "mheap_.heapArenas candidate")
        idx_word = lay.word[0] + ("Q" if lay.heap_arenas.elem == 8 else "I")
        bases = []
        refreshed = False
        for (idx,) in struct.iter_unpack(idx_word, raw):
            if idx >= lay.arenas_l2:
                return None
            ha = target.word(l2 + idx * lay.ptr, lay.word, "heap index candidate")
            base = (idx * lay.arena_bytes + lay.arena_base_offset) & mask
            m, a = target.mapping(ha), target.mapping(base)
            if ha and (m is None or a is None) and not refreshed:
                # A heap growing under the search maps arenas after
                # /proc/PID/maps was read: read it again, once.
                refreshed = True
                target.refresh_maps()
                m, a = target.mapping(ha), target.mapping(base)
            if not ha or m is None or not m.anonymous or a is None or not a.anonymous:
                return None
            bases.append(base)
        summary = lay.summary
        for level in range(lay.summary_levels if summary is not None else 0):
            assert summary is not None
            array, _, cap = header(mheap + summary.offset + level * lay.summary_stride, summary)
            if not array or array % PAGE_SIZE or not cap or target.mapping(array) is None:
                return None
        if lay.scav_chunks is not None:
            array, length, cap = header(mheap + lay.scav_chunks.offset, lay.scav_chunks)
            if not array or array % PAGE_SIZE or not length or length != cap or target.mapping(array) is None:
                return None
    except HeapChanged:  # a pointer to nowhere: not mheap_
        return None
    return bits.merge([(b, b + lay.arena_bytes) for b in bases])


def _allp_header_words(lay: Layout) -> int:
    """Words from an allp slice header's first field to its last."""
    s = lay.allp_slice
    assert s is not None
    return max(s.array, s.len, s.cap) // lay.ptr + 1


def _allp_at(target: TargetMemory, lay: Layout, header: Sequence[int],
             cover: List[Tuple[int, int]]) -> Optional[Tuple[int, ...]]:
    """The Ps of the allp slice whose header words are ``header``, if it is
    one: 1..MAX_PS distinct pointers into the heap arenas, each to a P whose
    id is its index (see is_p); else None."""
    s = lay.allp_slice
    assert s is not None
    ptr = lay.ptr
    array, length, cap = header[s.array // ptr], header[s.len // ptr], header[s.cap // ptr]
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

    if not 0 < length <= cap <= MAX_PS or array % ptr or not in_heap(array):
        return None
    try:
        ps = target.words(array, length, lay.word, "allp candidate")
        if len(set(ps)) != length or not all(p and p % ptr == 0 and in_heap(p) for p in ps):
            return None
        return tuple(ps) if all(is_p(p, k) for k, p in enumerate(ps)) else None
    except HeapChanged:
        return None


def _scan_allp(target: TargetMemory, lay: Layout, data: List[Tuple[int, Tuple[int, ...]]], mheap: int,
               cover: List[Tuple[int, int]], path: str) -> int:
    """Address of runtime.allp, found in the data segments (see resolve);
    0 when the layout has no page caches to read."""
    if lay.allp_slice is None or lay.pcache < 0 or lay.p_id < 0:
        return 0
    s = lay.allp_slice
    span = _allp_header_words(lay)
    il, ic = s.len // lay.ptr, s.cap // lay.ptr
    found = []
    for base, words in data:
        for i in range(len(words) - span + 1):
            if not 0 < words[i + il] <= words[i + ic] <= MAX_PS:  # most words: not a slice header
                continue
            addr = base + i * lay.ptr
            if mheap <= addr < mheap + lay.mheap_size:
                continue
            ps = _allp_at(target, lay, words[i : i + span], cover)
            if ps is not None:
                found.append((addr, ps))
    # m0.allpSnapshot (a copy of allp kept while m0 looks for
    # work without a P) is in .bss too and, while set, names the very same
    # Ps: any of the copies gives the same page caches in this read.
    if found and len({ps for _, ps in found}) == 1:
        return found[0][0]
    raise no_info(path, "it has neither DWARF nor symbols, and the symbol-less scan of its data segments found "
                        + (f"{len(found)} disagreeing candidates ({', '.join(hex(a) for a, _ in found)})"
                           if found else "no candidate")
                        + " for runtime.allp (the Ps' page caches are needed to tell cached pages from changed ones)")
