"""Reading the Go runtime's off-heap regions of the demo program, and the
checks of them shared by the runtime and layout-table tests."""

from __future__ import annotations

import mmap
import os
import struct
import time
from typing import List, Optional, Sequence, Tuple

import memscan
from memscan import elf as elfinfo
from memscan.engine import engine
from memscan.kernel.pagemap import Pagemap
from memscan.owners.go import runtime as goruntime

from .goheap import ARGS, exe_module, maps_no_page, read, retried

MiB = 1 << 20
KiB = 1 << 10
CMALLOC = 32
CGO_ARGS = ARGS + ["-cmalloc", CMALLOC, "-csmall", 500, "-cthreads", 2]
PAGE = mmap.PAGESIZE


def read_runtime(pid: int, path: str, bias: int, tables: Optional[bool] = None) -> goruntime.RuntimeRegions:
    """read_runtime, tried again (bounded) if the target changed under it."""
    return retried(goruntime.read_runtime, pid, path, bias, tables=tables)


def maps(pid: int) -> List[Tuple[int, int, str, int, str]]:
    """(start, end, perms, inode, name) of every mapping."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(None, 5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            out.append((lo, hi, fields[1], int(fields[4]), fields[5].strip() if len(fields) > 5 else ""))
    return out


def subtract(ranges: Sequence[Tuple[int, int]], holes: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """``ranges`` minus ``holes`` (both lists of [lo, hi))."""
    holes = sorted(holes)
    out = []
    for lo, hi in sorted(ranges):
        pos = lo
        for hlo, hhi in holes:
            if hhi <= pos or hlo >= hi:
                continue
            if hlo > pos:
                out.append((pos, hlo))
            pos = max(pos, hhi)
        if pos < hi:
            out.append((pos, hi))
    return out


def intersect(ranges: Sequence[Tuple[int, int]], other: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out = []
    for lo, hi in ranges:
        for olo, ohi in other:
            a, b = max(lo, olo), min(hi, ohi)
            if a < b:
                out.append((a, b))
    return sorted(out)


def present(pid: int, ranges: Sequence[Tuple[int, int]]) -> int:
    """Bytes of resident pages in ``ranges`` (pagemap bit 63)."""
    if not ranges:
        return 0
    with Pagemap(pid, engine) as pm:
        counts = pm.counts(sorted(ranges))
    return sum(counts[0::4]) * PAGE


def pattern_pages(pid: int, ranges: Sequence[Tuple[int, int]], byte: int) -> int:
    """Resident pages in ``ranges`` filled with ``byte`` (read only where
    pagemap shows the page present: reading others would map them)."""
    want = bytes([byte]) * PAGE
    n = 0
    with open(f"/proc/{pid}/pagemap", "rb") as pm, open(f"/proc/{pid}/mem", "rb") as mem:
        for lo, hi in ranges:
            entries = struct.unpack(f"<{(hi - lo) // PAGE}Q", os.pread(pm.fileno(), (hi - lo) // PAGE * 8,
                                                                        lo // PAGE * 8))
            for i, e in enumerate(entries):
                if e >> 63:
                    try:
                        n += os.pread(mem.fileno(), PAGE, lo + i * PAGE) == want
                    except OSError:  # unmapped meanwhile
                        pass
    return n


def check_regions(rr: goruntime.RuntimeRegions) -> None:
    prev = None
    for start, end, kind in rr.regions:
        assert start < end and start % PAGE == 0 and end % PAGE == 0
        assert kind in goruntime.KINDS
        if prev is not None:
            assert start >= prev[1], "overlap"
            assert not (start == prev[1] and kind == prev[2]), "adjacent regions of one kind not merged"
        for a in rr.arenas:
            assert end <= a or start >= a + rr.arena_bytes, "a region overlaps a heap arena"
        prev = (start, end, kind)


def _minor(version: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in version.split(".")[:2])


def found_in_code(version: str) -> bool:
    """Does a binary of Go ``version`` without symbols let the code say where
    persistentChunks, gcBitsArenas and buckhash are (memscan.owners.go.pclntab)?"""
    return _minor(version) <= (1, 25)


def expected_missing(version: str, symbols: bool = True) -> List[str]:
    """The kinds a binary of Go ``version`` does not let us look for."""
    minor = _minor(version)
    if not symbols:  # what hangs off mheap_ and the variables the code pins down
        kept = [] if found_in_code(version) else [goruntime.PERSISTENT, goruntime.GC_BITS, goruntime.BUCKHASH]
        return kept + [goruntime.SPAN_QUEUE, goruntime.G0_STACK, goruntime.SIGNAL_STACK]
    return [goruntime.SPAN_QUEUE] if minor < (1, 26) else []


def check_runtime(prog, version: str, cgo: bool, tables: Optional[bool] = None,  # type: ignore[no-untyped-def]
                  symbols: bool = True) -> goruntime.RuntimeRegions:
    """The checks of this module on one running demo: regions well formed,
    accounting against MemStats, coverage of the anonymous memory. With
    ``symbols`` False (a binary without symbols: what hangs off mheap_ and,
    up to Go 1.25, off the variables its code pins down) the accounting and
    coverage checks are left out where the code says nothing (Go 1.26+)."""
    pid = prog.pid
    path, bias = exe_module(pid)
    report = prog.command("stats")
    ms = report["memstats"]

    memscan.clear_caches()
    with maps_no_page(pid):
        t0 = time.perf_counter()
        rr = read_runtime(pid, path, bias, tables=tables)
        t1 = time.perf_counter()
        again = read_runtime(pid, path, bias, tables=tables)
        t2 = time.perf_counter()
        heap = read(pid, path, bias, tables=tables)

    check_regions(rr)
    assert rr.go_version == f"go{version}"
    assert rr.arenas == heap.arenas
    assert {k for k, _ in rr.sizes().items()} == set(goruntime.KINDS)
    assert list(rr.missing) == expected_missing(version, symbols)
    assert again.sizes() == rr.sizes()

    mapping = maps(pid)
    rw = [(lo, hi) for lo, hi, perms, _, _ in mapping if perms.startswith("rw")]
    regions = [(s, e) for s, e, _ in rr.regions]
    sizes = rr.sizes()
    mapped = {k: 0 for k in goruntime.KINDS}
    resident = {k: 0 for k in goruntime.KINDS}
    for kind in goruntime.KINDS:
        mine = [(s, e) for s, e, k in rr.regions if k == kind]
        on = intersect(mine, rw)
        mapped[kind] = sum(e - s for s, e in on)
        resident[kind] = present(pid, on)

    # -- coverage: what private anonymous memory is left unattributed
    info = elfinfo.module_info(path)
    assert info is not None
    bss = [(lo + bias, hi + bias) for lo, hi in info.bss]
    arenas = [(a, a + heap.arena_bytes) for a in heap.arenas]
    anon = [(lo, hi) for lo, hi, perms, inode, name in mapping
            if inode == 0 and perms[3] == "p" and (not name or name.startswith("[anon"))]
    rest = subtract(anon, arenas + bss + regions)
    rest_resident = present(pid, rest)
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * KiB for line in f if line.startswith("VmRSS:"))

    workbufs = heap.totals()["stacks"] - ms["StackInuse"]
    counted = sum(mapped[k] for k in goruntime.KINDS if k != goruntime.HEAP_INDEX)
    want = ms["GCSys"] - workbufs + ms["MSpanSys"] + ms["MCacheSys"] + ms["BuckHashSys"] + ms["OtherSys"]
    gc_kinds = (goruntime.HEAP_ARENA, goruntime.PAGE_ALLOC_INDEX, goruntime.PAGE_SUMMARY, goruntime.SCAVENGE_INDEX,
                goruntime.GC_BITS, goruntime.SPAN_QUEUE)

    print(f"\ngo{version} cgo={int(cgo)}: read_runtime {1000 * (t1 - t0):.1f} ms first (layout parse included), "
          f"{1000 * (t2 - t1):.1f} ms again; {rr.bytes_read} B of memory + {rr.pagemap_bytes} B of pagemap; "
          f"{len(rr.regions)} regions")
    for kind in goruntime.KINDS:
        if sizes[kind]:
            print(f"  {kind:17s} {sizes[kind] / KiB:10.0f} KiB address space, {mapped[kind] / KiB:7.0f} KiB mapped, "
                  f"{resident[kind] / KiB:6.0f} KiB resident")
    print(f"  mapped w/o heap index {counted / KiB:.0f} KiB; MemStats GCSys-workbufs+MSpanSys+MCacheSys+"
          f"BuckHashSys+OtherSys = {ms['GCSys'] / KiB:.0f}-{workbufs / KiB:.0f}+{ms['MSpanSys'] / KiB:.0f}+"
          f"{ms['MCacheSys'] / KiB:.0f}+{ms['BuckHashSys'] / KiB:.0f}+{ms['OtherSys'] / KiB:.0f} = "
          f"{want / KiB:.0f} KiB")
    anon_resident = present(pid, anon)
    print(f"  unattributed anonymous resident {rest_resident / KiB:.0f} KiB of VmRSS {rss / KiB:.0f} KiB "
          f"({100 * rest_resident / rss:.2f}%); private anonymous resident {anon_resident / KiB:.0f} KiB, "
          f"in arenas {present(pid, arenas) / KiB:.0f} KiB, .bss {present(pid, bss) / KiB:.0f} KiB")

    # -- what hangs off mheap_ (found with and without symbols)
    assert sizes[goruntime.HEAP_INDEX] == 32 * MiB
    assert sizes[goruntime.HEAP_ARENA] >= len(heap.arenas) * (68 * KiB)
    assert sizes[goruntime.ALLSPANS] >= 64 * KiB
    # 1 MiB per 32 GiB of address space the heap touches
    assert sizes[goruntime.PAGE_ALLOC_INDEX] >= MiB and sizes[goruntime.PAGE_ALLOC_INDEX] % MiB == 0
    assert sizes[goruntime.PAGE_SUMMARY] > 512 * MiB and sizes[goruntime.SCAVENGE_INDEX] == 512 * MiB
    assert sizes[goruntime.G0_STACK] == sizes[goruntime.SIGNAL_STACK] == 0
    # The C heap is never the runtime's: the demo's mallocs (memset to 0xa5)
    # stay outside the regions.
    assert pattern_pages(pid, intersect(regions, rw), 0xA5) == 0
    if not symbols and not found_in_code(version):
        return rr

    # -- accounting
    assert sizes[goruntime.PERSISTENT] and sizes[goruntime.PERSISTENT] % (256 * KiB) == 0
    assert sizes[goruntime.GC_BITS] and sizes[goruntime.GC_BITS] % (64 * KiB) == 0
    # buckhash is allocated at the first memory profile sample, unless the
    # linker disabled memory profiling (runtime.disableMemoryProfiling:
    # nothing references runtime.MemProfile; so in the 1.21 demo).
    assert sizes[goruntime.BUCKHASH] == (-(-1439992 // PAGE) * PAGE if ms["BuckHashSys"] >= 1439992 else 0)
    assert sum(mapped[k] for k in gc_kinds) <= ms["GCSys"] - workbufs + 64 * KiB
    assert mapped[goruntime.ALLSPANS] <= ms["OtherSys"]
    # The whole: equal but for page rounding of the heapArena structs (1.21:
    # 1,133,584 B each, mapped as 277 pages).
    assert abs(counted - want) <= max(0.02 * want, len(heap.arenas) * PAGE + 16 * KiB), \
        f"found {counted / KiB:.0f} KiB mapped, MemStats say {want / KiB:.0f} KiB"

    # -- coverage
    if not cgo:
        assert rest_resident <= 0.01 * rss
    else:
        assert rest_resident >= CMALLOC * MiB
        c_pages = report["c_touched"] // PAGE
        # The C memory is in the rest, or in [heap] when the main arena served it.
        brk = [(lo, hi) for lo, hi, _, _, name in mapping if name == "[heap]"]
        assert pattern_pages(pid, sorted(rest + brk), 0xA5) >= 0.9 * c_pages
    return rr
