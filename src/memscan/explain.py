"""``memscan explain``: where a process's memory goes, said in plain words.

The rules are pure functions from snapshots (and optionally the Go
runtime's own MemStats, read from an expvar endpoint) to findings, each with
the numbers it rests on. A finding is made only when its memory is
significant (the thresholds below); the situations are those Go users meet:
freed heap the runtime keeps, released pages still in RSS under MADV_FREE,
C memory that pprof cannot see (and a likely cgo leak when it grows while
the Go heap does not), thread stacks, runtime metadata, and address-space
reservations that inflate VIRT. The Go facts hold for Go 1.21–1.27 on
Linux.

The JSON form (``memscan explain PID --json``) is the dict :func:`report`
returns; see the README for its keys.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import psutil

from ._errors import Error
from ._types import CATEGORIES
from .core.scanner import scan
from .core.snapshot import Snapshot
from .format import mib, warn

MiB = 1 << 20
GiB = 1 << 30

#: A finding's memory must be at least this much: below it, nothing a
#: change of code or settings returns is worth the reader's time...
MIN_BYTES = 8 * MiB
#: ...and at least this share of RSS: 8 MiB of a 10 GiB process explains
#: nothing about it.
MIN_SHARE = 0.05
#: C memory is called large from this share of RSS on: a Go program with a
#: C library has some C memory; a quarter of RSS is where it stops being a
#: detail beside the Go heap.
C_LARGE_SHARE = 0.25
#: VIRT is called inflated when untouched address space is at least this
#: much (a Go program reserves ~1.1 GiB for the page allocator at start-up
#: alone) and VIRT is at least this many times RSS.
VIRT_MIN_UNTOUCHED = 1 * GiB
VIRT_RATIO = 4.0
#: Growth over a watch is significant from this much on (a few scans' noise,
#: a GC cycle of a small heap, stays below it).
GROWTH_MIN_BYTES = 8 * MiB
#: The Go heap counts as flat while it moved by less than this, or less than
#: this share of the C growth: the runtime's own reports and GC cycles move
#: a small heap by a few MiB (its minimum goal is 4 MiB).
GO_FLAT_BYTES = 4 * MiB
GO_FLAT_SHARE = 0.10
#: Changes smaller than this are left out of the text (they print as 0.0 MiB).
SHOWN_BYTES = MiB // 10
#: Seconds between scans of a watch (``--for``), and the expvar read timeout.
WATCH_INTERVAL = 1.0
HTTP_TIMEOUT = 5.0

#: The runtime.MemStats fields read from an expvar endpoint.
MEMSTATS = ("Alloc", "HeapAlloc", "Sys", "HeapIdle", "HeapReleased", "HeapInuse", "StackInuse")
#: Most urgent first: "warning" is likely a defect (a leak), "notice" is
#: memory that can be had back by a setting or a call, "info" explains a
#: figure and needs no action.
SEVERITIES = ("warning", "notice", "info")


@dataclass(frozen=True)
class Finding:
    """One diagnosis: ``id`` (stable, for scripts), ``severity`` (one of
    SEVERITIES), a one-line ``title``, the explanation ``text``, and the
    ``numbers`` it rests on (bytes in ``*_bytes``, seconds in
    ``*_seconds``, shares as fractions of 1)."""

    id: str
    severity: str
    title: str
    text: str
    numbers: Dict[str, float] = field(default_factory=dict)


def significant(part: int, rss: int, share: float = MIN_SHARE) -> bool:
    return rss > 0 and part >= MIN_BYTES and part >= share * rss


def _c_memory(snap: Snapshot) -> int:
    """C memory of a snapshot: c_malloc, and anon_other, which holds what no
    Go structure claims (in the layout tier the large malloc chunks of a
    cgo program are among it)."""
    cats = snap.categories or {}
    return cats["c_malloc"].rss + cats["anon_other"].rss


# --------------------------------------------------------------------------
# rules on one snapshot


def freed_heap_kept(snap: Snapshot, memstats: Optional[Mapping[str, int]] = None) -> Optional[Finding]:
    """Heap pages the GC freed and the runtime keeps resident for reuse."""
    rss = snap.total.rss
    go_view = memstats["HeapIdle"] - memstats["HeapReleased"] if memstats else None
    if snap.go_heap_detail is not None:
        free = snap.go_heap_detail["free"].rss
    elif go_view is not None and snap.go is not None:
        free = go_view  # the layout tier cannot split the heap: the runtime's word
    else:
        return None
    return freed_heap_finding(free, rss, go_view)


def freed_heap_finding(free: int, rss: int, go_view: Optional[int] = None) -> Optional[Finding]:
    """freed_heap_kept from its figures: the freed heap pages resident, RSS,
    and the runtime's HeapIdle − HeapReleased if known."""
    if not significant(free, rss):
        return None
    numbers: Dict[str, float] = {"free_bytes": free, "rss_bytes": rss, "share": free / rss}
    says = ""
    if go_view is not None:
        numbers["heap_idle_minus_released_bytes"] = go_view
        says = f" Its own figure, HeapIdle − HeapReleased, is {mib(go_view)}."
    return Finding(
        "freed_heap_kept", "notice", f"Freed Go heap kept resident: {mib(free)}",
        f"The Go runtime keeps {mib(free)} ({free / rss:.0%} of RSS) of heap pages that the garbage collector "
        f"freed, for reuse, rather than return them to the OS at once.{says} The background scavenger "
        "returns them gradually; in an idle program only after the forced GC every 2 minutes (Go 1.19–1.27). "
        "debug.FreeOSMemory() returns them now; a memory limit (GOMEMLIMIT, debug.SetMemoryLimit) makes "
        "the runtime return freed pages whenever the process nears it.",
        numbers)


def released_lazyfree(snap: Snapshot) -> Optional[Finding]:
    """Released heap pages still in RSS: MADV_FREE leaves them until the
    kernel needs memory, counted as LazyFree in smaps."""
    if snap.categories is None or snap.go is None:
        return None
    rss = snap.total.rss
    lazy = snap.categories["go_heap"].lazyfree
    if not significant(lazy, rss):
        return None
    numbers: Dict[str, float] = {"lazyfree_bytes": lazy, "rss_bytes": rss, "share": lazy / rss}
    also = ""
    if snap.go_heap_detail is not None:
        numbers["released_rss_bytes"] = snap.go_heap_detail["released"].rss
        also = f"; the runtime's released pages still resident: {mib(snap.go_heap_detail['released'].rss)}"
    return Finding(
        "released_lazyfree", "notice", f"Released Go heap still counted in RSS (MADV_FREE): {mib(lazy)}",
        f"The Go runtime returned {mib(lazy)} of heap to the kernel with MADV_FREE, but the pages are still "
        f"counted in RSS ({lazy / rss:.0%} of it; LazyFree in smaps{also}). The runtime uses MADV_FREE under "
        "GODEBUG=madvdontneed=0 (the default of Go 1.12–1.15). The kernel takes these pages back only when it "
        "runs short of memory, so until then RSS, container limits and OOM scores count memory the program no "
        "longer holds. GODEBUG=madvdontneed=1 (the default since Go 1.16) makes released pages leave RSS at once.",
        numbers)


def c_memory(snap: Snapshot) -> Optional[Finding]:
    """A Go program's C memory, which MemStats and pprof do not see."""
    if snap.categories is None or snap.go is None:
        return None
    return c_memory_finding({c: k.rss for c, k in snap.categories.items()}, snap.total.rss, snap.allocator)


def c_memory_finding(cats: Mapping[str, int], rss: int, allocator: Optional[str]) -> Optional[Finding]:
    """c_memory from its figures: a Go program's rss by category, RSS, and
    its C allocator's name if known."""
    c = cats["c_malloc"] + cats["anon_other"]
    if not significant(c, rss, C_LARGE_SHARE):
        return None
    parts = [f"c_malloc {mib(cats['c_malloc'])} ({allocator or 'the C allocator'})"]
    if cats["anon_other"] >= MiB:
        # In the layout tier the large malloc chunks of a cgo program are here.
        parts.append(f"anon_other {mib(cats['anon_other'])} (anonymous memory no Go structure claims)")
    return Finding(
        "c_memory", "info", f"C memory outside the Go heap: {mib(c)}",
        f"{mib(c)} ({c / rss:.0%} of RSS) is C memory: {' and '.join(parts)}, beside "
        f"{mib(cats['go_heap'])} of Go heap. runtime.MemStats and "
        "pprof's heap profile see none of it: it was allocated through cgo or by C libraries. If it grows while "
        "the Go heap does not, it is a likely cgo leak; `memscan explain PID --for 60s` watches for that.",
        {"c_bytes": c, "c_malloc_bytes": cats["c_malloc"], "anon_other_bytes": cats["anon_other"],
         "go_heap_bytes": cats["go_heap"], "rss_bytes": rss, "share": c / rss})


#: What gives freed C memory back, per allocator (glibc 2.26+, jemalloc 5,
#: gperftools' tcmalloc 2).
C_REMEDIES = {
    "glibc": "glibc keeps freed chunks in its arenas and returns only the top of each heap (above "
             "M_TRIM_THRESHOLD, 128 KiB by default) to the OS. malloc_trim(0) returns the free pages inside the "
             "arenas now; a lower M_TRIM_THRESHOLD (mallopt, or MALLOC_TRIM_THRESHOLD_) trims sooner; many "
             "threads each fragment an arena of their own, which MALLOC_ARENA_MAX=2 limits.",
    "jemalloc": "jemalloc returns dirty pages after dirty_decay_ms (10 s by default) and muzzy ones after "
                "muzzy_decay_ms: MALLOC_CONF=dirty_decay_ms:1000,muzzy_decay_ms:0 returns them sooner, and "
                "mallctl(\"arena.<i>.purge\") at once (Redis: MEMORY PURGE). Freed objects in pages still in use "
                "stay until the pages empty: Redis's activedefrag moves live values out of sparse pages, with the "
                "jemalloc Redis ships only (Redis 7 refuses it when linked with a system jemalloc, as Debian 12's "
                "redis-server is).",
    "tcmalloc": "tcmalloc returns free spans at TCMALLOC_RELEASE_RATE; MallocExtension::ReleaseFreeMemory() "
                "returns them at once.",
}

#: Allocators whose structures are not read (owners.c.preloaded), and
#: their own figures that split their memory into in use and free.
UNREAD = {
    "jemalloc": "mallctl's stats.resident − stats.allocated (Redis: INFO memory, allocator_resident − "
                "allocator_allocated)",
    "tcmalloc": "MallocExtension's generic.total_physical_bytes − generic.current_allocated_bytes",
}


def c_fragmentation(snap: Snapshot) -> Optional[Finding]:
    """Freed C memory the allocator keeps resident: fragmentation, not a leak."""
    if snap.c_malloc_detail is None:
        return None
    d = snap.c_malloc_detail
    return c_fragmentation_finding(d["free"].rss, d["in_use"].rss, snap.total.rss, snap.allocator,
                                   d["unassigned"].rss)


def c_fragmentation_finding(free: int, used: int, rss: int, allocator: Optional[str],
                            unknown: int = 0) -> Optional[Finding]:
    """c_fragmentation from its figures: the allocator's free and in-use
    chunks resident, RSS, its name (glibc if not known; "+pymalloc" after
    it: CPython's arenas too) and its ``unknown`` (unassigned) bytes, where
    an UNREAD allocator's freed memory may hide: said as a possibility."""
    name = (allocator or "glibc").partition("+")[0]
    remedies = C_REMEDIES.get(name, "The allocator's own settings decide when freed memory goes back to the OS.")
    if not significant(free, rss):
        if name not in UNREAD or not significant(unknown, rss):
            return None
        return Finding(
            "c_fragmentation", "info", f"{name} memory not split into in use and freed: {mib(unknown)}",
            f"{name} holds {mib(unknown)} ({unknown / rss:.0%} of RSS) resident that memscan cannot split into "
            f"memory in use and freed memory it keeps (its structures are not exported). Freed objects in pages "
            f"still in use (fragmentation) and freed pages not yet returned are part of it: {UNREAD[name]} says "
            "how much. " + remedies,
            {"free_rss_bytes": free, "in_use_rss_bytes": used, "unknown_rss_bytes": unknown, "rss_bytes": rss,
             "share": unknown / rss})
    return Finding(
        "c_fragmentation", "notice", f"Freed C memory kept resident: {mib(free)}",
        f"The C allocator ({name}) holds {mib(free)} ({free / rss:.0%} of RSS) of freed memory that is still "
        f"resident, beside {mib(used)} in use: fragmentation, not a leak. " + remedies,
        {"free_rss_bytes": free, "in_use_rss_bytes": used, "rss_bytes": rss, "share": free / rss})


#: A category holds most of the memory from this share of RSS on.
MOST_SHARE = 0.5
#: What each category is, for the finding that names the largest one.
WHAT = {
    "go_heap": "the Go heap", "c_malloc": "memory of the C allocator (malloc)",
    "anon_other": "anonymous memory no allocator's structures claim (an mmap of the program's own, or of "
                  "an allocator memscan does not read)",
    "thread_stacks": "thread stacks", "go_runtime": "the Go runtime's own structures",
    "binary": "the program's file mappings", "shared_libs": "shared libraries", "shmem": "shared memory",
}


def most_memory(snap: Snapshot) -> Optional[Finding]:
    """The category that holds most of RSS, said when nothing else is."""
    if snap.categories is None:
        return None
    detail = None if snap.c_malloc_detail is None else {s: c.rss for s, c in snap.c_malloc_detail.items()}
    return most_memory_finding({c: k.rss for c, k in snap.categories.items()}, snap.total.rss, detail)


def most_memory_finding(cats: Mapping[str, int], rss: int,
                        c_detail: Optional[Mapping[str, int]] = None) -> Optional[Finding]:
    """most_memory from its figures: rss by category, RSS, and the C
    allocator's resident bytes by state if known."""
    if not rss:
        return None
    cat = max(cats, key=cats.__getitem__)
    part = cats[cat]
    if part < MOST_SHARE * rss:
        return None
    more = ""
    if cat == "c_malloc" and c_detail is not None:
        more = " By its chunks: " + ", ".join(f"{s} {mib(b)}" for s, b in c_detail.items() if b) + "."
    return Finding(
        "most_memory", "info", f"{cat} holds {part / rss:.0%} of RSS: {mib(part)}",
        f"{mib(part)} of {mib(rss)} is {WHAT.get(cat, cat)}.{more}",
        {f"{cat}_bytes": part, "rss_bytes": rss, "share": part / rss})


def thread_stacks(snap: Snapshot) -> Optional[Finding]:
    if snap.categories is None:
        return None
    rss = snap.total.rss
    st = snap.categories["thread_stacks"]
    if not significant(st.rss, rss):
        return None
    return Finding(
        "thread_stacks", "info", f"Thread stacks: {mib(st.rss)}",
        f"OS thread stacks hold {mib(st.rss)} resident ({st.rss / rss:.0%} of RSS) of {mib(st.size)} reserved. "
        "Goroutine stacks are in the Go heap; these are the main thread's stack and, in a cgo program, a glibc "
        "pthread stack for every thread the runtime starts (RLIMIT_STACK, 8 MiB by default, each). Threads pile "
        "up behind goroutines blocked in cgo calls or system calls and behind runtime.LockOSThread; a stack's "
        "resident part is as deep as the deepest C call its thread ran.",
        {"thread_stacks_bytes": st.rss, "thread_stacks_size_bytes": st.size, "rss_bytes": rss,
         "share": st.rss / rss})


def runtime_metadata(snap: Snapshot) -> Optional[Finding]:
    if snap.categories is None or snap.go is None:
        return None
    return runtime_metadata_finding(snap.categories["go_runtime"].rss, snap.total.rss)


def runtime_metadata_finding(meta: int, rss: int) -> Optional[Finding]:
    """runtime_metadata from its figures: go_runtime's rss and RSS."""
    if not significant(meta, rss):
        return None
    return Finding(
        "runtime_metadata", "info", f"Go runtime metadata: {mib(meta)}",
        f"{mib(meta)} ({meta / rss:.0%} of RSS) is the Go runtime's metadata outside the heap: span structures, "
        "the heap index and per-arena metadata, GC bitmaps, the page allocator's summaries, profiling buckets. "
        "It grows with the heap's size and its number of spans, is not in HeapInuse (MemStats counts it in "
        "GCSys, MSpanSys and OtherSys), and shrinks little when the heap does.",
        {"go_runtime_bytes": meta, "rss_bytes": rss, "share": meta / rss})


def virt_reservations(snap: Snapshot) -> Optional[Finding]:
    size, rss = snap.total.size, snap.total.rss
    untouched = size - rss - snap.total.swap
    if untouched < VIRT_MIN_UNTOUCHED or size < VIRT_RATIO * rss:
        return None
    numbers: Dict[str, float] = {"size_bytes": size, "rss_bytes": rss, "untouched_bytes": untouched}
    parts = []
    if snap.categories is not None:
        by_cat = {c: k.size - k.rss - k.swap for c, k in snap.categories.items()}
        for cat in sorted(by_cat, key=by_cat.__getitem__, reverse=True)[:4]:
            if by_cat[cat] >= MIN_BYTES:
                numbers[f"{cat}_untouched_bytes"] = by_cat[cat]
                parts.append(f"{cat} {by_cat[cat] / GiB:,.2f} GiB")
    where = f" ({', '.join(parts)})" if parts else ""
    return Finding(
        "virt_reservations", "info", f"VIRT {size / GiB:,.2f} GiB is mostly reserved address space",
        f"VIRT is {size / GiB:,.2f} GiB while RSS is {mib(rss)}: {untouched / GiB:,.2f} GiB is address space "
        f"reserved and never touched{where}. Go reserves heap arenas in 64 MiB units and about 1.1 GiB for the "
        "page allocator's summaries and scavenge index at start-up; glibc reserves 64 MiB per malloc thread arena "
        "and a stack per thread. Reservations cost no memory, only RSS and swap do: harmless, unless a limit on "
        "address space (ulimit -v, RLIMIT_AS) applies.",
        numbers)


def go_vs_os(snap: Snapshot, memstats: Mapping[str, int]) -> Finding:
    """The runtime's own figures beside what the OS sees."""
    rss = snap.total.rss
    numbers: Dict[str, float] = {f"{_snake(k)}_bytes": memstats[k] for k in MEMSTATS}
    numbers["rss_bytes"] = rss
    seen = f"the OS sees {mib(rss)} resident"
    if snap.categories is not None:
        cats = snap.categories
        heap = f"go_heap {mib(cats['go_heap'].rss)}"
        if snap.go_heap_detail is not None:
            heap += " (" + ", ".join(f"{s} {mib(c.rss)}" for s, c in snap.go_heap_detail.items() if c.rss) + ")"
        files = cats["binary"].rss + cats["shared_libs"].rss + cats["mapped_files"].rss
        rest = rss - cats["go_heap"].rss - cats["go_runtime"].rss - _c_memory(snap) - files
        seen += (f", of which {heap}, go_runtime {mib(cats['go_runtime'].rss)}, C memory {mib(_c_memory(snap))}, "
                 f"the binary, libraries and mapped files {mib(files)}, and {mib(rest)} else")
        numbers.update(go_heap_bytes=cats["go_heap"].rss, go_runtime_bytes=cats["go_runtime"].rss,
                       c_bytes=_c_memory(snap), files_bytes=files)
    gap = rss - memstats["Alloc"]
    numbers["rss_minus_alloc_bytes"] = gap
    return Finding(
        "go_vs_os", "info", f"Go says Alloc {mib(memstats['Alloc'])}; the OS sees {mib(rss)} resident",
        f"Go says Alloc {mib(memstats['Alloc'])} (HeapInuse {mib(memstats['HeapInuse'])}, HeapIdle "
        f"{mib(memstats['HeapIdle'])} of which HeapReleased {mib(memstats['HeapReleased'])}, StackInuse "
        f"{mib(memstats['StackInuse'])}, Sys {mib(memstats['Sys'])}); {seen}. RSS − Alloc = {mib(gap)}: live "
        "objects are only part of a Go program's memory.",
        numbers)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


def explain(snap: Snapshot, memstats: Optional[Mapping[str, int]] = None) -> List[Finding]:
    """The findings of one snapshot (and the runtime's MemStats of the same
    moment, if given), most urgent first."""
    found = [freed_heap_kept(snap, memstats), released_lazyfree(snap), c_memory(snap), c_fragmentation(snap),
             thread_stacks(snap), runtime_metadata(snap), virt_reservations(snap)]
    if memstats is not None:
        found.append(go_vs_os(snap, memstats))
    out = [f for f in found if f is not None]
    if not out:
        out = [f for f in (most_memory(snap),) if f is not None]
    return ordered(out)


def ordered(findings: List[Finding]) -> List[Finding]:
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


# --------------------------------------------------------------------------
# rules on a series of snapshots


def _signed(g: Mapping[str, int], cat: str) -> str:
    return f"{cat} {mib(g[cat], sign=True)}"


def growth(snaps: Sequence[Snapshot]) -> Dict[str, int]:
    """Each category's rss change from the first snapshot to the last, and
    the total's ("total")."""
    first, last = snaps[0], snaps[-1]
    out = {}
    if first.categories is not None and last.categories is not None:
        out = {c: last.categories[c].rss - first.categories[c].rss for c in CATEGORIES}
    out["total"] = last.total.rss - first.total.rss
    return out


def c_memory_growing(snaps: Sequence[Snapshot]) -> Optional[Finding]:
    """C memory that grew while the Go heap stayed flat: a likely cgo leak."""
    if len(snaps) < 2 or snaps[-1].go is None:
        return None
    g = growth(snaps)
    if "go_heap" not in g:
        return None
    return c_growth_finding(g, snaps[-1].time - snaps[0].time)


def c_growth_finding(g: Mapping[str, int], seconds: float) -> Optional[Finding]:
    """c_memory_growing from its figures: a Go program's growth by category
    (:func:`growth`) over ``seconds``."""
    c = g["c_malloc"] + g["anon_other"]
    go = g["go_heap"]
    if c < GROWTH_MIN_BYTES or abs(go) >= max(GO_FLAT_BYTES, GO_FLAT_SHARE * c):
        return None
    per_min = c / seconds * 60 if seconds > 0 else 0.0
    parts = ", ".join(_signed(g, cat) for cat in ("c_malloc", "anon_other") if abs(g[cat]) >= SHOWN_BYTES)
    return Finding(
        "c_memory_growing", "warning", f"C memory grew {mib(c)} in {seconds:.0f} s while the Go heap stayed flat",
        f"C memory grew by {mib(c)} in {seconds:.0f} s ({parts}; {mib(per_min)} a minute) while the Go heap moved "
        f"{mib(go, sign=True)}. pprof and runtime.MemStats cannot see this memory: it was allocated through cgo "
        "or by a C library and not freed, a likely cgo leak. Look for C.malloc and C.CString without a matching "
        "C.free, and for C objects whose Go owners never release them; a C heap profiler (heaptrack, jemalloc's "
        "prof) shows the call sites.",
        {"seconds": seconds, "c_growth_bytes": c, "c_malloc_growth_bytes": g["c_malloc"],
         "anon_other_growth_bytes": g["anon_other"], "go_heap_growth_bytes": go, "bytes_per_minute": per_min})


def c_in_use_growing(snaps: Sequence[Snapshot]) -> Optional[Finding]:
    """C memory in use (the allocator's chunks, not what it keeps free) that
    grew over the watch: a likely leak. (A Go program's is c_memory_growing.)"""
    first, last = snaps[0].c_malloc_detail, snaps[-1].c_malloc_detail
    if len(snaps) < 2 or snaps[-1].go is not None or first is None or last is None:
        return None
    return c_in_use_finding({s: c.rss for s, c in first.items()}, {s: c.rss for s, c in last.items()},
                            snaps[-1].time - snaps[0].time)


def c_in_use_finding(first: Mapping[str, int], last: Mapping[str, int], seconds: float) -> Optional[Finding]:
    """c_in_use_growing from its figures: the C allocator's resident bytes by
    state ("in_use", "free") at the start and at the end of ``seconds``."""
    grew = last["in_use"] - first["in_use"]
    if grew < GROWTH_MIN_BYTES:
        return None
    per_min = grew / seconds * 60 if seconds > 0 else 0.0
    return Finding(
        "c_in_use_growing", "warning", f"C memory in use grew {mib(grew)} in {seconds:.0f} s",
        f"The C allocator's chunks in use grew by {mib(grew)} in {seconds:.0f} s ({mib(per_min)} a minute), "
        f"to {mib(last['in_use'])}; its free memory moved {mib(last['free'] - first['free'], sign=True)}. "
        "Memory allocated and not freed: a likely leak if it keeps growing. A heap profiler (heaptrack, "
        "valgrind's massif, jemalloc's prof) shows the call sites.",
        {"seconds": seconds, "in_use_growth_bytes": grew, "bytes_per_minute": per_min})


def trends(snaps: Sequence[Snapshot]) -> List[Finding]:
    """The findings of a series of snapshots of one process (oldest first)."""
    return [f for f in (c_memory_growing(snaps), c_in_use_growing(snaps)) if f is not None]


# --------------------------------------------------------------------------
# the runtime's own view: expvar


def read_memstats(url: str, pid: Optional[int] = None, timeout: float = HTTP_TIMEOUT) -> Dict[str, int]:
    """runtime.MemStats (the MEMSTATS fields) from an expvar endpoint: the
    JSON of /debug/vars (``{"memstats": {...}, "cmdline": [...]}``) or a
    bare MemStats object. With ``pid``, an endpoint whose ``cmdline`` is
    not that process's is refused: its figures would be another program's.
    Raises Error with one line saying what is wrong."""
    if not re.match(r"https?://", url):
        raise Error(f"--memstats {url!r}: not an http:// or https:// URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            doc = json.load(answer)
    except urllib.error.HTTPError as err:
        raise Error(f"--memstats {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise Error(f"--memstats {url}: {err.reason}") from None
    except (OSError, ValueError) as err:  # timeouts, resets, bad JSON, bad URL syntax
        raise Error(f"--memstats {url}: {err}") from None
    stats = doc.get("memstats", doc) if isinstance(doc, dict) else None
    if not isinstance(stats, dict) or not all(isinstance(stats.get(k), int) and stats[k] >= 0 for k in MEMSTATS):
        raise Error(f"--memstats {url}: no runtime.MemStats with {', '.join(MEMSTATS)} (an expvar /debug/vars "
                    "endpoint has them)")
    cmdline = doc.get("cmdline")
    if pid is not None and isinstance(cmdline, list):
        try:
            actual = psutil.Process(pid).cmdline()
        except psutil.Error:
            actual = cmdline  # gone or hidden: the scan says so
        if actual != cmdline:
            raise Error(f"--memstats {url}: serves {' '.join(cmdline)!r}, not pid {pid} ({' '.join(actual)!r})")
    return {k: stats[k] for k in MEMSTATS}


# --------------------------------------------------------------------------
# running it


def duration(text: str) -> float:
    """Seconds of ``"30s"``, ``"2m"``, ``"1h"``, ``"500ms"`` or ``"45"``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 2m)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def watch(pid: int, seconds: float, tier: str = "auto", console: Any = None) -> List[Snapshot]:
    """Scans of ``pid`` every WATCH_INTERVAL for ``seconds``, the first at
    once and the last at ``seconds``, with a progress bar on ``console``
    (stderr by default)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    snaps = [scan(pid, tier=tier)]
    start = time.monotonic()
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"watching pid {pid}", total=seconds, status=_status(snaps))
        offsets = [k * WATCH_INTERVAL for k in range(1, int(seconds / WATCH_INTERVAL) + 1)]
        if not offsets or offsets[-1] < seconds:
            offsets.append(seconds)
        for offset in offsets:
            while (left := start + offset - time.monotonic()) > 0:
                bar.update(task, completed=offset - left)  # the bar moves between scans too
                time.sleep(min(left, 0.1))
            snaps.append(scan(pid, tier=tier))
            bar.update(task, completed=offset, status=_status(snaps))
    return snaps


def _status(snaps: Sequence[Snapshot]) -> str:
    """The progress bar's live figures: RSS and the categories that moved most."""
    g = growth(snaps)
    moved = sorted((c for c in g if c != "total" and abs(g[c]) >= SHOWN_BYTES), key=lambda c: -abs(g[c]))[:2]
    return f"rss {mib(snaps[-1].total.rss)}" + "".join(f", {_signed(g, c)}" for c in moved)


def report(snaps: Sequence[Snapshot], memstats: Optional[Mapping[str, int]] = None) -> Dict[str, Any]:
    """The explanation of a scan (or of a watch: several, oldest first) as a
    JSON-ready dict: the last scan's figures, the growth over the watch, the
    runtime's MemStats if given, the findings, and the scan's warnings."""
    last = snaps[-1]
    findings = trends(snaps) + explain(last, memstats)
    return {
        "pid": last.pid,
        "time": last.time,
        "tier": last.tier,
        "go": None if last.go is None else {"version": last.go.version, "cgo": last.go.cgo},
        "rss": last.total.rss,
        "size": last.total.size,
        "categories": None if last.categories is None else {c: last.categories[c].rss for c in CATEGORIES},
        "watch": None if len(snaps) < 2 else {"seconds": last.time - snaps[0].time, "scans": len(snaps),
                                              "growth": growth(snaps)},
        "memstats": None if memstats is None else dict(memstats),
        "findings": [asdict(f) for f in ordered(findings)],
        "warnings": list(last.warnings),
    }


def run(pid: int, tier: str = "auto", seconds: Optional[float] = None, memstats_url: Optional[str] = None,
        console: Any = None) -> Dict[str, Any]:
    """``memscan explain``: scan (or watch for ``seconds``), read the
    runtime's MemStats right after the last scan, and return :func:`report`."""
    # A bad URL fails before a watch, not after it.
    memstats = read_memstats(memstats_url, pid) if memstats_url else None
    snaps = watch(pid, seconds, tier, console) if seconds else [scan(pid, tier=tier)]
    if memstats_url and seconds:
        memstats = read_memstats(memstats_url, pid)
    return report(snaps, memstats)


def render(doc: Mapping[str, Any], console: Any = None) -> None:
    """Print :func:`report`'s dict for a reader."""
    from rich.console import Console
    from rich.markup import escape

    # Piped or redirected: one line per paragraph, as long as it is, never
    # wrapped at rich's 80 columns with trailing spaces; a terminal wraps it.
    console = console or Console(soft_wrap=not sys.stdout.isatty())
    go = doc["go"]
    head = f"pid {doc['pid']}"
    if doc.get("recording"):
        head = f"{escape(doc['recording']['path'])} · recorded {head}"
    head += f" · {go['version']}{' cgo' if go['cgo'] else ''}" if go else " · no Go runtime found"
    console.print(f"[bold]{head} · tier {doc['tier']} · RSS {mib(doc['rss'])}[/bold]")
    cats = doc["categories"]
    if cats:
        top = [c for c in sorted(cats, key=lambda c: -cats[c]) if cats[c] >= doc["rss"] / 100]
        console.print("  " + " · ".join(f"{c} {mib(cats[c])}" for c in top))
    cg = doc.get("cgroup")
    if cg:
        console.print(f"memory cgroup {escape(cg['path'])}: usage {mib(cg['usage'])} of a {mib(cg['limit'])} limit, "
                      f"working set {mib(cg['working_set'])}")
    w = doc["watch"]
    if w:
        moved = [c for c in w["growth"] if abs(w["growth"][c]) >= SHOWN_BYTES]
        console.print(f"growth over {w['seconds']:.0f} s ({w['scans']} scans): "
                      + (", ".join(_signed(w["growth"], c) for c in moved) or "none"))
    colour = {"warning": "red", "notice": "yellow", "info": "cyan"}
    for f in doc["findings"]:
        console.print(f"\n[bold {colour[f['severity']]}]{f['severity']}[/] [bold]{escape(f['title'])}[/bold]")
        console.print(escape(f["text"]))
    if not doc["findings"]:
        console.print("\nNothing stands out: no part of this process's memory passes the thresholds "
                      "of memscan's findings.")
    warn(doc["warnings"])
