"""memscan.owners.c against C programs that print their own ground truth.

tests/cprogs/mallocs.c (compiled once per session with gcc) mallocs into
the main arena, three thread arenas and ~30 mmapped chunks (memalign'ed,
calloc'ed, realloc'ed ones among them), maps memory of its own, and prints
every chunk's mapping (from its own header), its threads' arenas and stacks
and mallinfo2(). The Go demo's cgo build and preloaded jemalloc/tcmalloc are
checked too.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any, Dict, List, Sequence, Tuple

import pytest

import memscan
from memscan.engine import engine
from memscan.kernel.pagemap import Pagemap
from memscan.owners import c as cmalloc
from memscan.owners.c import glibc
from memscan.owners.c.stacks import find_tcb

HERE = os.path.dirname(os.path.abspath(__file__))
CPROGS = os.path.join(HERE, "cprogs")
MIB = 1 << 20
PAGE = 4096
LIBDIR = "/usr/lib/x86_64-linux-gnu"
JEMALLOC = os.path.join(LIBDIR, "libjemalloc.so.2")
TCMALLOC = os.path.join(LIBDIR, "libtcmalloc_minimal.so.4")
C_SIDE = ("main arena", "arena", "mmapped chunk")


# --------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize(
    "prev,size,page,limit,want",
    [
        (0, 0x101000 | 2, 0x10000, 0x10000 + 0x101000, 0x101000),  # glibc <= 2.42, fits exactly
        (0, 0x101000 | 2, 0x10000, 0x10000 + 0x100000, None),  # runs past the mappings
        (0, 0x101000 | 3, 0x10000, 1 << 40, None),  # PREV_INUSE: an arena chunk
        (0, 0x101000 | 6, 0x10000, 1 << 40, None),  # NON_MAIN_ARENA: never on an mmapped chunk
        (0, 0x101010 | 2, 0x10000, 1 << 40, None),  # not a page multiple
        (0x5FF0, 0x119000 | 2, 0x10000, 1 << 40, None),  # a memalign'ed chunk's real header: not at a page
        (0, 0x1000 - 16 | 2, 0x10000, 1 << 40, 0x1000),  # glibc master after 2.42: len - 16
        (1, 0x101000 - 16 | 2, 0x10000, 1 << 40, 0x101000),  # ... with MMAP_HP
        (2, 0x101000 - 16 | 2, 0x10000, 1 << 40, None),
        (0, 0 | 2, 0x10000, 1 << 40, None),  # empty
        (0, 0, 0x10000, 1 << 40, None),
    ],
)
def test_mmapped_chunk_len(prev, size, page, limit, want):
    assert cmalloc.mmapped_chunk_len(prev, size, page, limit) == want


def test_find_tcb():
    base = 0x7F0000001000
    words = [0x1111] * 1024
    pd = base + 0x1000 - 0x940  # glibc 2.36: end - 0x940
    k = (pd - base) // 8
    words[k] = words[k + 2] = pd  # tcb, self
    words[k + 1] = 0x55550000  # dtv
    words[10] = base + 80  # tcb alone is not enough
    data = struct.pack("<1024Q", *words)
    assert find_tcb(data, base) == [pd]
    # A different offset (another glibc, a larger TLS alignment) is found too.
    words[k] = words[k + 2] = 0x1111
    pd2 = base + 0x400
    words[(pd2 - base) // 8] = words[(pd2 - base) // 8 + 2] = pd2
    assert find_tcb(struct.pack("<1024Q", *words), base) == [pd2]


def _malloc_state(m: int, busy: Sequence[int] = ()) -> List[int]:
    """Words of an idle malloc_state at ``m``: every bin empty except ``busy``."""
    words = [0] * (glibc.MS_SIZE // 8)
    words[glibc.MS_TOP // 8] = m + glibc.MS_TOP
    words[glibc.MS_NEXT // 8] = m
    for j in range(glibc.NBINS_PAIRS):
        me = m + glibc.MS_BINS + 16 * j - 16
        k = glibc.MS_BINS // 8 + 2 * j
        words[k] = words[k + 1] = 0x5555_0000_0010 if j in busy else me
    return words


def test_self_pointing_bins():
    base = 0x7F0000000000
    m = base + 0x40
    words = [0] * 8 + _malloc_state(m) + [0] * 8
    votes = glibc.self_pointing_bins(words, base)
    assert max(votes.values()) == 127 and votes[m] == 127
    # With the unsorted bin in use, m + 16 collects as many votes as m: why
    # main_arena candidates are also checked field by field.
    words = [0] * 8 + _malloc_state(m, busy=(0,)) + [0] * 8
    votes = glibc.self_pointing_bins(words, base)
    assert votes[m] == votes[m + 16] == 126


def test_mp_candidates():
    lay = glibc._MP_LAYOUTS["2.35"]
    heap = 0x5555_5555_0000
    fields = {
        "trim_threshold": 128 << 10, "top_pad": 128 << 10, "mmap_threshold": 128 << 10, "arena_test": 8,
        "arena_max": 0, "hp_pagesize": 0, "n_mmaps": 3, "n_mmaps_max": 65536, "max_n_mmaps": 5, "no_dyn_threshold": 0,
        "mmapped_mem": 3 * 0x21000, "max_mmapped_mem": 5 * 0x21000, "sbrk_base": heap, "tcache_bins": 64,
        "tcache_max_bytes": 1032, "tcache_count": 7,
    }
    buf = bytearray(0x400)
    at = 0x108
    for key, (off, fmt) in lay.items():
        struct.pack_into("<" + fmt, buf, at + off, fields[key])
    base = 0x7F00_0000_0000
    cands = glibc.mp_candidates(bytes(buf), base, heap)
    score, addr, layout, got = cands[0]
    assert (addr, layout) == (base + at, "2.35") and score == 10
    assert got["n_mmaps"] == 3 and got["mmapped_mem"] == 3 * 0x21000
    assert all(c[0] < score for c in cands[1:])
    # n_mmaps without mmapped_mem is no malloc_par.
    struct.pack_into("<Q", buf, at + lay["mmapped_mem"][0], 0)
    assert all(c[1] != base + at for c in glibc.mp_candidates(bytes(buf), base, heap))


# --------------------------------------------------------------------------
# C programs


def smaps(pid: int):  # type: ignore[no-untyped-def]
    with open(f"/proc/{pid}/smaps", "rb") as f:
        return engine.parse_smaps(f.read())


def of_kind(regions: cmalloc.CRegions, *kinds: str) -> List[Tuple[int, int]]:
    return [(s, e) for s, e, k in regions.intervals if k in kinds]


def resident(pid: int, ranges: List[Tuple[int, int]]) -> int:
    """Resident bytes (present pages that are not the zero page) of ranges."""
    ranges = sorted(ranges)
    with Pagemap(pid, engine) as pm:
        c = pm.counts(ranges)
    return sum(c[4 * i] - c[4 * i + 3] for i in range(len(ranges))) * PAGE


def overlaps(ranges: List[Tuple[int, int]], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in ranges)


def check_well_formed(r: cmalloc.CRegions) -> None:
    assert all(k in cmalloc.KINDS for _, _, k in r.intervals)
    assert all(s < e and s % PAGE == 0 and e % PAGE == 0 for s, e, _ in r.intervals)
    assert all(a[1] <= b[0] for a, b in zip(r.intervals, r.intervals[1:]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_c_program_ground_truth(cprog, seed):
    prog = cprog("mallocs", seed)
    rep = prog.report
    mi = rep["mallinfo2"]
    r = cmalloc.c_regions(prog.pid, smaps(prog.pid))
    check_well_formed(r)
    assert r.warnings == []
    assert r.allocator == "glibc" and r.glibc_version is not None

    # Every chunk exactly (memalign'ed ones from their mapping's start), nothing else.
    printed = sorted((a, n) for a, n, _, _ in rep["chunks"])
    assert len(printed) == len(rep["chunks"]) == mi["hblks"]
    assert sorted(of_kind(r, "mmapped chunk")) == [(a, a + n) for a, n in printed]
    assert r.found["chunks"] == mi["hblks"] and r.found["chunk_bytes"] == mi["hblkhd"]
    assert r.counters["hblks"] == mi["hblks"] and r.counters["hblkhd"] == mi["hblkhd"]

    # The program's own mmap is nobody's.
    fa, fn = rep["foreign"]
    assert not overlaps([(s, e) for s, e, _ in r.intervals], fa, fa + fn)

    # One arena per thread, at the heap its first block came from.
    heaps = sorted(t["heap"] for t in rep["threads"])
    assert all(heaps) and len(set(heaps)) == 3
    assert sorted(s for s, _ in of_kind(r, "arena")) == heaps
    assert all(e - s == 64 * MIB for s, e in of_kind(r, "arena"))
    assert r.found["arenas"] == r.found["heaps"] == 3
    # Sum of heap_info.size + main_arena.system_mem is mallinfo2's arena.
    assert r.counters["heaps_size"] + r.counters["main_system_mem"] == r.counters["arena"] == mi["arena"]
    assert len(of_kind(r, "main arena")) == 1

    # The three threads' stacks, guard included.
    stacks = sorted((t["stack"][0] - t["guard"], t["stack"][1]) for t in rep["threads"])
    assert sorted(of_kind(r, "pthread stack")) == stacks
    assert r.found["pthread_stacks"] == 3 and r.found["stacks_by_shape"] == 0

    # Resident C memory: at least what was written, at most what glibc holds.
    res = resident(prog.pid, of_kind(r, *C_SIDE))
    assert rep["touched"] <= res <= mi["arena"] + mi["hblkhd"] + 2 * MIB, (rep["touched"], res)

    # Bounded reads: 16 bytes per probed page, plus libc's data, the
    # heap_infos, arenas and two pages per stack.
    assert r.bytes_read <= 16 * r.found["pages_probed"] + 256 * 1024


def test_exited_threads_and_a_second_heap(cprog):
    """Exited threads leave a cached stack and an arena on the free list
    (still in the ring); 70 MiB in one thread's arena makes a second heap
    whose heap_info points back to the first."""
    prog = cprog("mallocs", 11, "exited=2", "arenamib=70", "chunks=12")
    rep = prog.report
    mi = rep["mallinfo2"]
    r = cmalloc.c_regions(prog.pid, smaps(prog.pid))
    check_well_formed(r)
    assert r.warnings == []
    everyone = rep["threads"] + rep["exited"]
    first_heaps = {t["heap"] for t in everyone}
    assert len(first_heaps) == 5
    arenas = {s for s, _ in of_kind(r, "arena")}
    assert first_heaps < arenas and len(arenas) == 6
    assert r.found["arenas"] == 5 and r.found["heaps"] == 6
    assert r.counters["arena"] == mi["arena"] and r.counters["heaps_size"] > 64 * MIB
    stacks = sorted((t["stack"][0] - t["guard"], t["stack"][1]) for t in everyone)
    assert sorted(of_kind(r, "pthread stack")) == stacks
    assert sorted(of_kind(r, "mmapped chunk")) == sorted((a, a + n) for a, n, _, _ in rep["chunks"])
    assert r.counters["hblkhd"] == mi["hblkhd"]


def test_forged_header_is_unexplained(cprog):
    """A foreign page starting with (0, 0x40002) looks like a chunk: only
    mp_.n_mmaps/mmapped_mem give it away, as a warning."""
    prog = cprog("mallocs", 4, "forge")
    rep = prog.report
    mi = rep["mallinfo2"]
    assert rep["forged"]
    r = cmalloc.c_regions(prog.pid, smaps(prog.pid))
    chunks = sorted(of_kind(r, "mmapped chunk"))
    printed = sorted((a, a + n) for a, n, _, _ in rep["chunks"])
    assert sorted(set(chunks) - set(printed)) == [(rep["forged"], rep["forged"] + 0x40000)]
    assert set(printed) <= set(chunks)
    assert r.counters["hblks"] == mi["hblks"] == len(chunks) - 1
    unexplained = [w for w in r.warnings if w.startswith("unexplained")]
    assert len(unexplained) == 1 and "difference 1 chunks, 262144 bytes" in unexplained[0], r.warnings


def anon_ranges(table) -> List[Tuple[int, int]]:  # type: ignore[no-untyped-def]
    return [(table.starts[i], table.ends[i]) for i in range(len(table)) if table.inodes[i] == 0
            and table.ends[i] < 1 << 63]


def test_reads_only_present_pages(cprog):
    """Reading a non-present anonymous page through /proc/PID/mem would map
    the zero page into the target: pagemap must look the same afterwards."""
    prog = cprog("mallocs", 5, "threads=2", "chunks=12")
    table = smaps(prog.pid)
    ranges = anon_ranges(table)
    with Pagemap(prog.pid, engine) as pm:
        before = pm.counts(ranges)
        r = cmalloc.c_regions(prog.pid, table)
        after = pm.counts(ranges)
    assert before == after
    assert r.warnings == [] and r.found["chunks"] == prog.report["mallinfo2"]["hblks"]


def test_read_limit_degrades_with_a_warning(cprog):
    prog = cprog("mallocs", 6)
    table = smaps(prog.pid)
    full = cmalloc.c_regions(prog.pid, table)
    # Enough for libc's data, the arenas and stacks, not for the foreign mmap's pages.
    cap = full.bytes_read - 16 * 100
    r = cmalloc.c_regions(prog.pid, table, max_bytes=cap)
    assert r.bytes_read <= cap
    assert any("read limit" in w for w in r.warnings), r.warnings
    assert set(r.intervals) <= set(full.intervals)
    # Nothing at all may be read: still no exception, just warnings.
    r = cmalloc.c_regions(prog.pid, table, max_bytes=0)
    assert r.bytes_read == 0 and r.intervals == [] and r.warnings


def test_skip_ranges_are_not_walked(cprog):
    prog = cprog("mallocs", 10, "threads=1", "chunks=8")
    table = smaps(prog.pid)
    full = cmalloc.c_regions(prog.pid, table)
    fa, fn = prog.report["foreign"]
    r = cmalloc.c_regions(prog.pid, table, skip=[(fa, fa + fn), (fa + PAGE, fa + 2 * PAGE)])
    assert r.intervals == full.intervals and r.warnings == []
    assert r.found["pages_probed"] <= full.found["pages_probed"] - fn // PAGE
    # Skipping a chunk's pages loses it, and the mp_ cross-check says so.
    a, n, _, _ = prog.report["chunks"][0]
    r = cmalloc.c_regions(prog.pid, table, skip=[(a, a + PAGE)])
    assert (a, a + n, "mmapped chunk") not in r.intervals
    assert any(w.startswith("unexplained") for w in r.warnings)


def test_maps_table_without_vmflags(cprog):
    """A maps table (no VmFlags) still gives arenas, chunks and stacks."""
    prog = cprog("mallocs", 7, "threads=2", "chunks=10")
    with open(f"/proc/{prog.pid}/maps", "rb") as f:
        table = engine.parse_smaps(f.read())
    r = cmalloc.c_regions(prog.pid, table)
    full = cmalloc.c_regions(prog.pid, smaps(prog.pid))
    assert r.intervals == full.intervals and r.counters == full.counters
    assert r.found["pthread_stacks"] == 2


# --------------------------------------------------------------------------
# Preloaded allocators


def check_preloaded(r: cmalloc.CRegions, rep: Dict[str, Any], kind: str) -> None:
    check_well_formed(r)
    assert r.allocator == kind
    mine = of_kind(r, kind)
    assert mine
    for p, n, _, _ in rep["chunks"]:  # "plain": (user pointer, request)
        assert any(s <= p and p + n <= e for s, e in mine), hex(p)
    assert not of_kind(r, "main arena", "arena", "mmapped chunk")
    fa, fn = rep["foreign"]
    assert not overlaps([(s, e) for s, e, _ in r.intervals], fa, fa + fn)
    # Thread stacks stay glibc's.
    stacks = sorted((t["stack"][0] - t["guard"], t["stack"][1]) for t in rep["threads"])
    assert sorted(of_kind(r, "pthread stack")) == stacks
    assert r.counters["hblks"] == 0 and r.found["chunks"] == 0


@pytest.mark.skipif(not os.path.exists(JEMALLOC), reason=f"{JEMALLOC} not installed (apt-get install libjemalloc2)")
def test_jemalloc_regions(cprog):
    prog = cprog("mallocs", 8, "plain", env={"LD_PRELOAD": JEMALLOC})
    r = cmalloc.c_regions(prog.pid, smaps(prog.pid))
    check_preloaded(r, prog.report, "jemalloc")
    assert r.warnings == []
    # Most of what the program touched is resident in jemalloc's regions.
    assert resident(prog.pid, of_kind(r, "jemalloc")) >= prog.report["touched"] * 0.9


@pytest.mark.skipif(not os.path.exists(TCMALLOC), reason=f"{TCMALLOC} not installed (apt-get install libtcmalloc-minimal4)")
def test_tcmalloc_regions(cprog):
    prog = cprog("mallocs", 9, "plain", env={"LD_PRELOAD": TCMALLOC})
    table = smaps(prog.pid)
    r = cmalloc.c_regions(prog.pid, table)
    check_preloaded(r, prog.report, "tcmalloc")
    heap = [(table.starts[i], table.ends[i]) for i in range(len(table)) if table.names[i] == "[heap]"]
    assert heap and set(heap) <= set(of_kind(r, "tcmalloc"))
    assert len(of_kind(r, "tcmalloc")) == 2  # [heap] and the library's .bss metadata


# --------------------------------------------------------------------------
# Go


GO_ARGS = ("-heap", 64, "-garbage", 32, "-goroutines", 50, "-cmalloc", 32, "-csmall", 500, "-cthreads", 2)


def chunk_len(request: int) -> int:
    """The mapping glibc makes for malloc(request) above the threshold (4.1)."""
    nb = (request + 8 + 15) & ~15
    return (nb + 8 + PAGE - 1) & ~(PAGE - 1)


@pytest.mark.slow
def test_go_cgo_program(go_program):
    prog = go_program(version="1.27.3", cgo=True, args=GO_ARGS)
    rep = prog.command("stats")
    mi = rep["mallinfo2"]
    t0 = time.perf_counter()
    r = cmalloc.c_regions(prog.pid, smaps(prog.pid))
    elapsed = time.perf_counter() - t0
    check_well_formed(r)
    assert r.warnings == []
    assert r.allocator == "glibc"
    # The 32 MiB malloc is an mmapped chunk of the expected size; no false
    # chunk anywhere (the Go heap included): glibc's counts agree.
    chunks = of_kind(r, "mmapped chunk")
    assert [e - s for s, e in chunks].count(chunk_len(rep["c_big"])) == 1
    assert len(chunks) == mi["hblks"] and sum(e - s for s, e in chunks) == mi["hblkhd"]
    assert r.counters["hblkhd"] == mi["hblkhd"] and r.counters["arena"] == mi["arena"]
    # Every M is a pthread (cgo): one glibc stack per thread but the main one.
    tasks = os.listdir(f"/proc/{prog.pid}/task")
    assert r.found["pthread_stacks"] == len(tasks) - 1 and r.found["stacks_by_shape"] == 0
    # Every C thread's arena (and the Ms' that malloc'ed) was found.
    assert r.found["arenas"] >= 2
    assert elapsed < 5


@pytest.mark.slow
def test_go_without_cgo(go_program):
    """A static Go binary has no C allocator: nothing found, nothing to warn."""
    prog = go_program(version="1.27.3", cgo=False, args=("-heap", 16))
    r = cmalloc.c_regions(prog.pid, smaps(prog.pid))
    assert r.allocator is None and r.intervals == [] and r.warnings == [] and r.bytes_read == 0


def test_exited_process(cprog):
    prog = cprog("mallocs", 12, "threads=1", "chunks=2")
    table = smaps(prog.pid)
    prog.stop()  # killed and reaped
    with pytest.raises(memscan.NoSuchProcess):
        cmalloc.c_regions(prog.pid, table)
