"""``memscan explain``: where a process's memory goes, said in plain words.

The rules are pure functions from snapshots (and optionally the Go
runtime's own MemStats, read from an expvar endpoint) to findings, each with
the numbers it rests on. A finding is made only when its memory is
significant (the thresholds in :mod:`memscan.findings`; the C rules are in
:mod:`memscan.explain_c`); the situations are those Go users meet:
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
from dataclasses import asdict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import psutil

from ._errors import Error
from ._types import CATEGORIES
from .core.scanner import scan
from .core.snapshot import Snapshot
from .explain_c import c_fragmentation, c_in_use_growing, c_memory, c_memory_growing, c_memory_of
from .findings import GiB, MIN_BYTES, SEVERITIES, SHOWN_BYTES, Finding, growth, signed, significant
from .format import mib, warn


#: VIRT is called inflated when untouched address space is at least this
#: much (a Go program reserves ~1.1 GiB for the page allocator at start-up
#: alone) and VIRT is at least this many times RSS.
VIRT_MIN_UNTOUCHED = 1 * GiB
VIRT_RATIO = 4.0
#: Seconds between scans of a watch (``--for``), and the expvar read timeout.
WATCH_INTERVAL = 1.0
HTTP_TIMEOUT = 5.0

#: The runtime.MemStats fields read from an expvar endpoint.
MEMSTATS = ("Alloc", "HeapAlloc", "Sys", "HeapIdle", "HeapReleased", "HeapInuse", "StackInuse")


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
        rest = rss - cats["go_heap"].rss - cats["go_runtime"].rss - c_memory_of(snap) - files
        seen += (f", of which {heap}, go_runtime {mib(cats['go_runtime'].rss)}, C memory {mib(c_memory_of(snap))}, "
                 f"the binary, libraries and mapped files {mib(files)}, and {mib(rest)} else")
        numbers.update(go_heap_bytes=cats["go_heap"].rss, go_runtime_bytes=cats["go_runtime"].rss,
                       c_bytes=c_memory_of(snap), files_bytes=files)
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
    return f"rss {mib(snaps[-1].total.rss)}" + "".join(f", {signed(g, c)}" for c in moved)


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


def look(pid: int, tier: str = "auto", seconds: Optional[float] = None, memstats_url: Optional[str] = None,
         console: Any = None) -> Tuple[List[Snapshot], Optional[Dict[str, int]]]:
    """Scan (or watch for ``seconds``) and read the runtime's MemStats right
    after the last scan: the snapshots, oldest first, and the MemStats."""
    # A bad URL fails before a watch, not after it.
    memstats = read_memstats(memstats_url, pid) if memstats_url else None
    snaps = watch(pid, seconds, tier, console) if seconds else [scan(pid, tier=tier)]
    if memstats_url and seconds:
        memstats = read_memstats(memstats_url, pid)
    return snaps, memstats


def run(pid: int, tier: str = "auto", seconds: Optional[float] = None, memstats_url: Optional[str] = None,
        console: Any = None) -> Dict[str, Any]:
    """``memscan explain``: :func:`report` of what :func:`look` finds."""
    return report(*look(pid, tier, seconds, memstats_url, console))


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
                      + (", ".join(signed(w["growth"], c) for c in moved) or "none"))
    colour = {"warning": "red", "notice": "yellow", "info": "cyan"}
    for f in doc["findings"]:
        console.print(f"\n[bold {colour[f['severity']]}]{f['severity']}[/] [bold]{escape(f['title'])}[/bold]")
        console.print(escape(f["text"]))
    if not doc["findings"]:
        console.print("\nNothing stands out: no part of this process's memory passes the thresholds "
                      "of memscan's findings.")
    warn(doc["warnings"])
