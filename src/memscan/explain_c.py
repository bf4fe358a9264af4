"""explain's rules for C memory: how much there is, what the C allocator
keeps free (fragmentation, with the remedy that fits the allocator), and
C memory that grows (a likely cgo or C leak)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from .core.snapshot import Snapshot
from .findings import (C_LARGE_SHARE, GO_FLAT_BYTES, GO_FLAT_SHARE, GROWTH_MIN_BYTES, MiB, SHOWN_BYTES, Finding,
                       growth, signed, significant)
from .format import mib


def c_memory_of(snap: Snapshot) -> int:
    """C memory of a snapshot: c_malloc, and anon_other, which holds what no
    Go structure claims (in the layout tier the large malloc chunks of a
    cgo program are among it)."""
    cats = snap.categories or {}
    return cats["c_malloc"].rss + cats["anon_other"].rss


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
    parts = ", ".join(signed(g, cat) for cat in ("c_malloc", "anon_other") if abs(g[cat]) >= SHOWN_BYTES)
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
