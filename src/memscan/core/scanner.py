"""scan(): one look at a process, in the tier asked for."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from .._cache import LRU
from .._errors import AccessDenied, Error, HeapChanged, NoSuchProcess, ParseError
from .._types import C_MALLOC, CATEGORIES, GO_HEAP, GO_RUNTIME, THREAD_STACKS, Counters, SmapsTable
from ..engine import engine_name, get_engine
from ..kernel import procfs
from ..kernel.pagemap import Pagemap
from ..layout.context import Layout, context
from ..owners.c import SPLIT_KINDS, c_regions
from ..owners.go.heap import read_heap
from ..owners.go.runtime import runtime_regions
from . import exact, fallback
from .snapshot import Snapshot

TIERS = ("auto", "exact", "layout", "psutil")

# Samplers scan the same process again and again: keep each thread's read
# buffer (smaps of 20,000 mappings is 14 MB; growing a new buffer to that
# size costs as much as parsing it), and the layout facts of recent
# processes, valid while the process and its loaded files are the same.
_local = threading.local()
_LAYOUTS_KEPT = 64
_layouts: "LRU[Tuple, Layout]" = LRU(_LAYOUTS_KEPT)


def scan(pid: int, tier: str = "auto", *, engine: Optional[str] = None, mappings: bool = False) -> Snapshot:
    """Attribute the memory of process ``pid`` to memscan's categories.

    ``tier``: "layout" decides per mapping from smaps alone; "exact" also
    splits the Go heap by the runtime's own page states (read-only from
    /proc/PID/mem, which needs ptrace-attach rights) and fills
    ``go_heap_detail``; "psutil" gives totals only; "auto" gives the best
    tier permitted, with a warning naming what was missing. ``engine``
    picks "cython" or "python" (default: the fastest available).
    ``mappings``: also list the pieces behind the figures in
    ``Snapshot.mappings`` (smaps tiers only): every mapping, cut by owner
    where the exact tier split it.

    Raises NoSuchProcess (no such pid, a zombie, or an exit during the scan),
    AccessDenied (an explicit tier that is not permitted), ParseError, Error
    (a kernel thread: it has no user memory). A process whose main thread
    exited while other threads run is read through one of them.
    """
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
    eng = get_engine(engine)
    name = engine_name(eng)
    if pid <= 0:
        raise NoSuchProcess(pid)  # no /proc entry; psutil would raise ValueError
    try:
        return _scan_alive(pid, eng, name, tier, mappings)
    except NoSuchProcess as err:
        tid = procfs.live_thread(pid) if sys.platform.startswith("linux") else None
        if tid is None:
            raise
        gone = err
    # The main thread exited, others run: read the process through one of them.
    try:
        snap = _scan_alive(tid, eng, name, tier, mappings)
    except NoSuchProcess:
        raise gone from None
    snap.pid = pid
    snap.warnings.append(f"the main thread of pid {pid} has exited: its memory was read through thread {tid}")
    return snap


def _scan_alive(pid: int, eng, name: str, tier: str, mappings: bool) -> Snapshot:  # type: ignore[no-untyped-def]
    """_scan(), whose failures are NoSuchProcess once the process is found gone.

    A process that exits mid-scan fails whichever step was reading it, in
    that step's terms: its binary's /proc/PID/map_files link vanishes
    (ENOENT: "cannot open the Go binary"), /proc/PID/mem reads short, a
    structure half torn down fails its checks. Whatever a step raised, a
    process that is no longer the one the scan began on (gone, a zombie,
    exiting, or its pid reused: another start time) raised it by exiting.
    """
    if not sys.platform.startswith("linux"):
        return _scan(pid, eng, name, tier, None, mappings)
    began = procfs.stat(pid)
    try:
        snap = _scan(pid, eng, name, tier, began, mappings)
    except NoSuchProcess:
        raise
    except Exception as err:
        if _exited(pid, began.starttime):
            raise NoSuchProcess(pid, "process exited during the scan") from err
        raise
    # psutil reads the status and statm of a process whose memory is torn
    # down as zeros, not as an error: only a process still there after the
    # read was read whole (the smaps tiers check that after reading smaps).
    if snap.source == "psutil" and _exited(pid, began.starttime):
        raise NoSuchProcess(pid, "process exited during the scan")
    return snap


def _exited(pid: int, starttime: int) -> bool:
    """``pid`` is no longer the live process that started at ``starttime``."""
    try:
        st = procfs.stat(pid)
    except Error:
        return True
    return st.gone or st.exiting or st.starttime != starttime


def _scan(pid: int, eng, name: str, tier: str, st: Optional[procfs.Stat],  # type: ignore[no-untyped-def]
          mappings: bool) -> Snapshot:
    """The scan in ``tier``; ``st``: the process's stat, None off Linux."""
    if tier == "psutil":
        if st is not None:
            procfs.check_user_process(pid, st)
        return fallback.snapshot(pid, name, "psutil tier requested")
    if st is None:
        if tier == "auto":
            return fallback.snapshot(pid, name, "smaps exists only on Linux")
        raise Error(f"the {tier} tier needs Linux's /proc/PID/smaps")
    try:
        return scan_parts(pid, eng, name, tier, mappings=mappings).snapshot
    except AccessDenied as err:
        if tier != "auto":
            raise
        return fallback.snapshot(pid, name, f"smaps of pid {pid} may not be read ({err.path}: permission denied)")


class Parts(NamedTuple):
    """A smaps scan's Snapshot and what it was made from, for callers that
    follow the process afterwards (the Sampler): the mappings, their layout
    categories, the layout facts, and the exact tier's regions (None in the
    layout tier)."""

    snapshot: Snapshot
    table: SmapsTable
    cats: bytearray
    layout: Layout
    regions: Optional[Sequence[exact.Region]]


def scan_parts(pid: int, eng, engine_name: str, tier: str, pause: float = 0.0,  # type: ignore[no-untyped-def]
               mappings: bool = False) -> Parts:
    """The smaps scan of ``scan()`` ("exact", "layout" or "auto"), with its
    parts; ``pause``: seconds between the read() calls of smaps
    (procfs.read_smaps); ``mappings``: fill ``Snapshot.mappings``."""
    when = time.time()
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray()
    dir_fd = procfs.open_dir(pid)

    def read():  # type: ignore[no-untyped-def]
        n, table = procfs.read_smaps(pid, buf, eng, dir_fd, pause)
        # A process that exited mid-read ends its smaps early: that, not
        # the text's end, is the error to report.
        st = procfs.stat_after_read(pid, dir_fd, n == 0)
        if isinstance(table, ParseError):
            raise table
        return table, st

    try:
        table, st = procfs.without_overlap(pid, "smaps", read, eng.first_overlap)
    finally:
        os.close(dir_fd)
    lay = layout_of(pid, st.starttime, table)
    cats = eng.classify(table, lay.context)
    sums = eng.accumulate(table, cats)
    categories: Dict[str, Counters] = {
        cat: Counters(*sums[9 * i : 9 * i + 9]) for i, cat in enumerate(CATEGORIES)
    }
    total = Counters(*sums[9 * len(CATEGORIES) :])
    warnings = list(lay.warnings)
    detail = c_detail = None
    done = "layout"
    regions = None
    allocator = lay.allocator
    pieces: Dict[int, List[Tuple[exact.Piece, Counters]]] = {}
    if tier in ("exact", "auto"):
        try:
            split, partial, owner, pymalloc = _split(pid, table, cats, lay, eng, warnings, mappings)
        except Error as err:
            if tier == "exact" or isinstance(err, NoSuchProcess):
                raise
            warnings.append(f"layout tier shown: {err}")
        else:
            categories = exact.apply(categories, CATEGORIES, split)
            detail, done, regions, pieces = split.detail, "exact", split.regions, split.pieces or {}
            if pymalloc and allocator:
                # CPython's arenas sit beside the C allocator, which serves
                # the interpreter's requests above 512 bytes.
                allocator += "+pymalloc"
            if split.c_detail is not None:
                lazy = owner in PRELOADED
                c_detail = exact.c_malloc_detail(split.c_detail, categories["c_malloc"], partial, lazy)
                if lazy:
                    warnings.append(f"{owner} owns malloc: its memory in use and free cannot be told apart "
                                    "without its own structures (not read); only the pages it purged lazily "
                                    "(MADV_FREE, LazyFree) are shown as free, the rest as unassigned")
    snap = Snapshot(
        pid, when, "smaps", done, engine_name, total, categories, go_heap_detail=detail,
        go=lay.go, allocator=allocator, warnings=warnings, c_malloc_detail=c_detail,
        mappings=exact.parts(table, cats, pieces) if mappings else None,
    )
    return Parts(snap, table, cats, lay, regions)


# Allocators that replace malloc whose chunks are not read.
PRELOADED = ("jemalloc", "tcmalloc")

# A heap read that races with the target (a structure changed mid-read) is
# tried again this many times before the scan falls back.
HEAP_READ_TRIES = 3


def _read_structures(pid: int, what: str, read):  # type: ignore[no-untyped-def]
    """``read()`` of a target's structures through /proc/PID/mem, tried again
    when the target changed them mid-read; errors say what was being read."""
    mem = procfs.path(pid, "mem")
    for attempt in range(HEAP_READ_TRIES):
        try:
            with procfs.translated(pid, mem):
                return read()
        except HeapChanged:
            if attempt + 1 == HEAP_READ_TRIES:
                raise HeapChanged(f"{what} kept changing while it was read ({HEAP_READ_TRIES} tries)") from None
        except AccessDenied as err:
            raise AccessDenied(pid, mem, f"reading {what} needs ptrace-attach rights "
                                         "(the process's owner, or CAP_SYS_PTRACE)") from err


def _split(pid: int, table, cats, lay: Layout, eng,  # type: ignore[no-untyped-def]
           warnings: List[str], keep: bool) -> Tuple[exact.Split, int, Optional[str], bool]:
    """The exact tier's split of the mappings (``owner_regions``), the bytes
    of free C chunks outside whole pages (exact.c_state_regions), who owns
    malloc (None: not read) and whether pymalloc arenas were found; or an
    Error saying why it cannot be had.
    ``keep``: with each piece's Counters (exact.split)."""
    regions, others = owner_regions(pid, table, lay, eng, warnings)
    outside = exact.outside_category(lay.context.go_only)
    with Pagemap(pid, eng) as pm:
        for attempt in range(HEAP_READ_TRIES):
            split = exact.split(table, cats, regions, pm, outside, keep)
            # Pages resident in address space the runtime had not grown
            # into: the heap grew (mheap.grow: sysMap, then the page
            # allocator's inUse) between its read and this count. Read the
            # heap again, the other owners as they were.
            if lay.go_module is None or not split.detail["reserved"].rss or attempt + 1 == HEAP_READ_TRIES:
                break
            regions, others = owner_regions(pid, table, lay, eng, [], others)
    # No Go runtime, no Go heap to detail: None, not a page state of zero bytes each.
    if lay.go_module is None:
        split = split._replace(detail=None)
    # No C allocator read: None likewise.
    if others.allocator is None:
        return split._replace(c_detail=None), 0, None, False
    return split, others.c_partial, others.allocator, others.pymalloc


class Others(NamedTuple):
    """What the owners other than the Go heap claim, read once and reusable."""

    sources: List[List[exact.Region]]
    c_partial: int  # bytes of free C chunks outside whole pages (exact.c_state_regions)
    allocator: Optional[str]  # who owns malloc; None: the C allocator was not read
    pymalloc: bool  # CPython's pymalloc arenas were found


def owner_regions(pid: int, table, lay: Layout, eng, warnings: List[str],  # type: ignore[no-untyped-def]
                  others: Optional[Others] = None, free_lists: bool = True) -> Tuple[List[exact.Region], Others]:
    """The owners' regions of the mappings in ``table`` (smaps, or maps with
    the VmFlags known), or an Error saying why they cannot be had; also what
    the owners other than the Go heap claim, which a later call may pass as
    ``others`` to read the Go heap alone. Owners read, the first winning
    where claims overlap: the Go heap (required where a Go runtime is
    loaded), the C allocator (glibc's arenas, mmapped chunks and thread
    stacks; jemalloc, tcmalloc; pymalloc) and the Go runtime's off-heap
    structures; a part that cannot be read is attributed per mapping, with
    a warning. ``free_lists``: split glibc's arenas into the chunks in use
    and free (``c_regions``), as a full scan does."""
    mod = lay.go_module
    heap_source: List[List[exact.Region]] = []
    skip: List[Tuple[int, int]] = []
    if mod is not None:
        heap = _read_structures(pid, "the Go heap", lambda: read_heap(pid, mod.path, mod.bias, engine=eng))
        warnings.extend(heap.warnings)
        heap_source.append([exact.Region(s, e, GO_HEAP, st) for s, e, st in heap.intervals])
        skip = [(a, a + heap.arena_bytes) for a in heap.arenas]
    if others is None:
        others = _others(pid, table, mod, eng, warnings, skip, free_lists)
    regions, conflict = exact.combine(heap_source + others.sources)
    if conflict:
        warnings.append(f"{conflict} bytes were claimed by two owners; the first claim (Go heap, C allocator, "
                        "Go runtime) was kept")
    return regions, others


def _others(pid: int, table, mod, eng, warnings: List[str], skip: List[Tuple[int, int]],  # type: ignore[no-untyped-def]
            free_lists: bool) -> Others:
    """The C allocator's regions and the Go runtime's metadata, those that can be read."""
    sources: List[List[exact.Region]] = []
    c = None
    partial = 0
    try:
        c = _read_structures(pid, "the C allocator's structures",
                             lambda: c_regions(pid, table, skip=skip, engine=eng, free_lists=free_lists))
    except (AccessDenied, NoSuchProcess):
        raise
    except Error as err:
        warnings.append(f"C allocator attributed per mapping: {err}")
    else:
        warnings.extend(c.warnings)
        # The arenas' states first: they lie inside the arenas, whose other bytes are in use.
        states, partial = exact.c_state_regions(c.states)
        sources.append(states)
        sources.append([exact.Region(s, e, THREAD_STACKS, -1) if kind == "pthread stack"
                        else exact.Region(s, e, C_MALLOC, exact.C_IN_USE if kind in SPLIT_KINDS else exact.C_UNASSIGNED)
                        for s, e, kind in c.intervals])
    if mod is not None:
        try:
            meta = _read_structures(pid, "the Go runtime's metadata",
                                    lambda: runtime_regions(pid, mod.path, mod.bias, eng))
        except (AccessDenied, NoSuchProcess):
            raise
        except Error as err:
            warnings.append(f"Go runtime metadata attributed per mapping: {err}")
        else:
            sources.append([exact.Region(s, e, GO_RUNTIME) for s, e, _ in meta])
    return Others(sources, partial, None if c is None else c.allocator,
                  c is not None and c.found.get("pymalloc_arenas", 0) > 0)


def layout_of(pid: int, starttime: int, table) -> Layout:  # type: ignore[no-untyped-def]
    """layout.context.context(), cached per process and set of loaded files.

    The key holds where every file is mapped (address, device, inode): a
    library loaded or unloaded, or a binary replaced, gives a new key.
    """
    files = table.file_starts
    key = (pid, starttime, tuple(table.starts[i] for i in files), tuple(table.inodes[i] for i in files),
           tuple(table.devs[i] for i in files))
    return _layouts.get_or_make(key, lambda: context(pid, table))
