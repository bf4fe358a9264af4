"""Sampler: a process's memory, by category, many times a second, without
hurting the process.

The contract::

    class Sampler:
        def __init__(self, pid: int, interval: float = 0.01, tier: str = "auto", *,
                     full_every: float = 1.0, polite: bool = True, engine=None): ...
        # Context manager (__enter__ opens files and checks the pid: NoSuchProcess
        # if absent; __exit__ closes everything) and iterator of Sample.
        # Iteration ends cleanly (StopIteration) when the target exits; then
        # sampler.exited is True. No truncated sample is ever yielded.
        # Attributes: .samples (count yielded), .missed (total ticks missed),
        # .rate (achieved samples/s), .exited, .warnings
        def sample(self) -> Sample: ...  # one tick now, without pacing (for callers
                                         # that drive their own clock); raises
                                         # NoSuchProcess if the target is gone

    with Sampler(pid, interval=0.01) as s:
        for smp in s:
            print(smp.seq, smp.rss, smp.categories["go_heap"])

Ticks are on a fixed grid (tick ``seq`` is due at start + seq * interval,
where start is when the first sample, a full scan, was made: its one-time
work, DWARF and tables, is no gap in the grid);
a tick that cannot start within half an interval of its time because the
previous one overran (or, polite, because the target's lock budget is
spent) is skipped, and the next sample says how many were (``missed``);
``seq`` counts skipped ticks too.

What each figure of a Sample is, and how fresh: :mod:`memscan.core.sample`.

Politeness (``polite=True``, the default): smaps, pagemap and PAGEMAP_SCAN
walk the page tables under the target's mmap_lock, stalling its mmap,
munmap and mprotect (a 10 Hz full-smaps reader cut an mmap-heavy target's
throughput by 22-46 %, bench/test_bench_sampler.py). A count is one ioctl that
holds the lock while it walks: its CPU time is the time it holds the lock
(waiting for the lock costs the target nothing), and counts are kept to
``LOCK_SHARE`` (2 %) of wall time: after a count that took d seconds of
CPU the next waits until d / LOCK_SHARE has passed; a tick that needs a
count sooner is skipped (``missed``), never answered with old figures. A
full scan takes the lock hundreds of times (smaps chunk by chunk, the
allocators' structures piece by piece), often after waiting for the
target's own mmap, and stalls the target about as long as it lasts
(measured: a 30 ms scan of a 1,000-mapping mmap loop cost it ~30 ms of
work): full scans are spaced to ``FULL_SCAN_SHARE`` (1 %) of their wall
time when that is longer than ``full_every`` (a 20 ms scan: every 2 s at
most), the first scan excepted (its one-time work, reading DWARF, tables
and searching for the heap's structures, is not charged), and sleep ``SMAPS_PAUSE``
between the ~4 KiB read() chunks of smaps, so that a waiting mmap gets the
lock between them (rwsem readers otherwise take it again first).
``polite=False`` counts on every tick and scans every ``full_every``
seconds whatever they cost the target. ``sample()`` is never paced: a
caller driving its own clock chooses the rate.

Liveness: a target exiting mid-read makes maps read as a silent EOF
(m_start() in fs/proc/task_mmu.c finds no mm). Every tick ends with a liveness check (a pidfd
where the kernel and Python have one, /proc/PID/stat otherwise); a sample
read while the process was exiting is dropped, and iteration ends with
``exited`` True. A process whose main thread exited alone (pthread_exit in
main: the leader is a zombie, its /proc files show no memory) is read
through another of its threads, with a warning, as scan() does.
"""

from __future__ import annotations

import dataclasses
import os
import select
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from .._cache import LRU
from .._errors import AccessDenied, Error, HeapChanged, NoSuchProcess
from .._types import CATEGORIES, GO_HEAP, SmapsTable
from ..engine import engine_name, get_engine
from ..kernel import procfs
from ..kernel.pagemap import Pagemap
from . import exact, fallback
from .refresh import REREAD_AFTER, Owners
from .scanner import TIERS, layout_of, scan_parts
from .sample import Sample

__all__ = ["Sample", "Sampler", "FULL_SCAN_SHARE", "LOCK_SHARE", "RECOUNT_AFTER", "SMAPS_PAUSE"]

PAGE = 4096
# Polite: the share of wall time the ticks' counts may hold the target's
# mmap_lock (their CPU time), and the share full scans may last (wall time).
LOCK_SHARE = 0.02
FULL_SCAN_SHARE = 0.01
# Polite: seconds to sleep between the ~4 KiB read() chunks of smaps in a
# full scan, so that a waiting mmap/munmap gets the lock between them.
SMAPS_PAUSE = 50e-6
# Seconds a count may be reused while maps and statm show no change.
RECOUNT_AFTER = 0.1
# How many classifications (maps texts) are kept between full scans.
_CLASSIFIED_KEPT = 4


class _LockBudgetSpent(Exception):
    """A polite tick needed to read under the target's mmap_lock too soon."""


class _OwnersBehind(Exception):
    """A paced tick's count contradicts the owners, and reading them again
    now is too soon or did not help (core.refresh): the tick is missed."""


class Sampler:
    """Samples process ``pid`` every ``interval`` seconds (the module
    docstring has the contract, the sources and their freshness).

    ``tier``: "auto" (exact where permitted, else layout, else psutil),
    "exact", "layout" or "psutil" (status totals only, no ptrace rights
    needed). ``full_every``: seconds between full smaps scans. ``polite``:
    keep reads that hold the target's mmap_lock to LOCK_SHARE of the time.
    ``engine``: "cython" or "python" (default: the fastest available).
    """

    def __init__(self, pid: int, interval: float = 0.01, tier: str = "auto", *, full_every: float = 1.0,
                 polite: bool = True, engine: Optional[str] = None) -> None:
        if tier not in TIERS:
            raise ValueError(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
        if not interval >= 0:
            raise ValueError(f"interval must be >= 0 seconds, not {interval!r}")
        if not full_every > 0:
            raise ValueError(f"full_every must be > 0 seconds, not {full_every!r}")
        self.pid = pid
        self.interval = float(interval)
        self.tier = tier
        self.full_every = float(full_every)
        self.polite = polite
        self._eng = get_engine(engine)
        self._engine_name = engine_name(self._eng)
        self.samples = 0
        self.missed = 0
        self.exited = False
        self.warnings: List[str] = []
        self._first_mono: Optional[float] = None
        self._last_mono: Optional[float] = None
        self._seq = -1
        self._open = False
        self._dir_fd = -1
        self._statm_fd = -1
        self._maps_fd = -1
        self._pidfd = -1
        self._poll: Optional["select.poll"] = None
        self._pagemap: Optional[Pagemap] = None
        self._starttime = 0
        self._via = pid  # the pid or thread id whose /proc files are read
        self._gone: Optional[NoSuchProcess] = None  # once the process is found gone
        self._paced = False  # the tick is one of iteration's, which may be missed; not sample()'s
        self._maps_buf = bytearray()
        self._maps_seen: Optional[bytes] = None
        # maps text -> its table (VmFlags filled in), layout categories and intervals.
        self._classified: "LRU[bytes, Tuple[SmapsTable, bytearray, exact.Intervals]]" = LRU(_CLASSIFIED_KEPT)
        self._basis: Optional[Tuple[SmapsTable, bytearray]] = None  # the table and categories of _intervals
        self._flags: Dict[Tuple[int, int], int] = {}
        self._intervals: Optional[exact.Intervals] = None
        self._regions: Optional[Sequence[exact.Region]] = None
        self._outside = 0
        self._go_heap = False  # the last full scan read a Go heap (has a go_heap_detail)
        self._counted: Optional[Tuple[Tuple[int, ...], List[int], float]] = None  # statm key, pages, when
        self._next_full = 0.0
        self._scanned = False  # a full scan succeeded: the one-time work is done
        self._lock_free_at = 0.0
        self._owners = Owners()  # when the owners and heap states in use were read

    # ------------------------------------------------------------ lifecycle

    @property
    def rate(self) -> float:
        """Samples per second achieved between the first and the last sample."""
        if self.samples < 2 or self._first_mono is None or self._last_mono is None:
            return 0.0
        span = self._last_mono - self._first_mono
        return (self.samples - 1) / span if span > 0 else 0.0

    def __enter__(self) -> "Sampler":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the process's files (NoSuchProcess if it does not exist or is
        a zombie); ``with Sampler(...)`` does this."""
        if self._open:
            return
        pid = self.pid
        try:
            # A pidfd names this very process: a reused pid cannot stand in for it.
            if hasattr(os, "pidfd_open"):
                try:
                    self._pidfd = os.pidfd_open(pid)
                except ProcessLookupError:
                    raise NoSuchProcess(pid) from None
                except OSError:
                    self._pidfd = -1  # kernel < 5.3, or a thread id: /proc/PID/stat is the check
                else:
                    self._poll = select.poll()
                    self._poll.register(self._pidfd, select.POLLIN)
            self._open_files()
            self._open = True
        except BaseException:
            self.close()
            raise

    def _open_files(self) -> None:
        """statm, maps and pagemap, through /proc/PID, or through /proc/TID
        of another thread once the main thread has exited alone (its /proc
        files then show no memory, but the process lives on: one mm for the
        whole thread group)."""
        pid = via = self.pid
        self._dir_fd = procfs.open_dir(pid)
        st = procfs.stat(pid, self._dir_fd)
        procfs.check_user_process(pid, st)
        if st.gone or st.exiting:
            tid = procfs.live_thread(pid) if self._lives() else None
            if tid is None:
                raise NoSuchProcess(pid, "process is a zombie" if st.state == "Z" else "")
            os.close(self._dir_fd)
            self._dir_fd = -1
            via = tid
            self._dir_fd = procfs.open_dir(via)
            st = procfs.stat(via, self._dir_fd)
            self.warnings.append(f"the main thread of pid {pid} has exited: its memory is read through thread {via}")
        self._via = via
        self._starttime = st.starttime
        self._statm_fd = self._open_file("statm")
        if self.tier != "psutil":
            try:
                self._maps_fd = self._open_file("maps")
                self._pagemap = Pagemap(via, self._eng, self._dir_fd)
            except AccessDenied as err:
                if self.tier != "auto":
                    raise
                self.tier = "psutil"
                self.warnings.append(f"the mappings of pid {pid} may not be read ({err.path}: permission "
                                     "denied): only totals are sampled")

    def _open_file(self, name: str) -> int:
        with procfs.translated(self.pid, procfs.path(self._via, name), True):
            return os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir_fd)

    def _lives(self) -> bool:
        """The process has not exited (as its pidfd says; False without one)."""
        return self._poll is not None and not self._poll.poll(0)

    def _close_files(self) -> None:
        if self._pagemap is not None:
            self._pagemap.close()
            self._pagemap = None
        for attr in ("_statm_fd", "_maps_fd", "_dir_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                setattr(self, attr, -1)
                os.close(fd)

    def close(self) -> None:
        """Close every file (idempotent)."""
        self._open = False
        self._close_files()
        self._poll = None
        if self._pidfd >= 0:
            fd, self._pidfd = self._pidfd, -1
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"<Sampler pid={self.pid} tier={self.tier} interval={self.interval} samples={self.samples} "
                f"missed={self.missed}{' exited' if self.exited else ''}>")

    # ------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[Sample]:
        if not self._open:
            raise ValueError("the Sampler is not open: use it in a with statement")
        return self._run()

    def _run(self) -> Iterator[Sample]:
        start = time.monotonic()
        k = 0  # grid index of the tick being made, counted from ``start``
        missed = 0
        first = True
        while True:
            due = start + k * self.interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            try:
                self._paced = True
                smp = self._tick(self._seq + 1 + missed, missed, self.polite)
            except _LockBudgetSpent:
                # Nothing more to learn before the lock budget is back.
                ready = self._lock_free_at
                missed += 1
            except (HeapChanged, _OwnersBehind):
                # No good heap states or owners yet: read again at the next tick.
                ready = time.monotonic()
                missed += 1
            except NoSuchProcess:
                self.exited = True
                return
            else:
                yield smp
                ready = time.monotonic()
                missed = 0
                if first:
                    # The grid starts after the first sample: its full scan's
                    # one-time work leaves no run of missed ticks behind it.
                    start = ready - k * self.interval
                    first = False
            # The next tick on the grid that can start on time, or less than
            # half an interval late.
            k += 1
            if self.interval > 0:
                over = ready - (start + k * self.interval) - self.interval / 2
                if over > 0:
                    skip = int(over // self.interval) + 1
                    k += skip
                    missed += skip
            else:
                start = max(ready, time.monotonic())
                k = 0

    def sample(self) -> Sample:
        """One tick now, without pacing. Raises NoSuchProcess (and sets
        ``exited``) if the target is gone, HeapChanged if the exact tier's
        first full scan found the Go heap changing under every read."""
        if not self._open:
            raise ValueError("the Sampler is not open: use it in a with statement or call open()")
        try:
            self._paced = False
            return self._tick(self._seq + 1, 0, False)
        except NoSuchProcess:
            self.exited = True
            raise

    # ------------------------------------------------------------ one tick

    def _tick(self, seq: int, missed: int, polite: bool) -> Sample:
        """One sample; ``polite``: raise _LockBudgetSpent rather than read
        under the target's mmap_lock before ``_lock_free_at``."""
        if self._gone is not None:
            raise self._gone
        mono = time.monotonic()
        wall = time.time()
        try:
            try:
                smp = self._read(seq, mono, wall, missed, polite)
            except NoSuchProcess:
                if not self._lives():
                    raise
                # The thread read through exited alone: go on through another.
                self._close_files()
                self._open_files()
                smp = self._read(seq, mono, wall, missed, polite)
            except Exception:
                # A target exiting mid-scan fails the step reading it in that
                # step's terms (scanner._scan_alive): gone, it is NoSuchProcess.
                self._check_alive()
                if self._dying():
                    raise NoSuchProcess(self.pid, "process exited during the tick") from None
                raise
        except NoSuchProcess as err:
            self._gone = err
            raise
        self._seq = seq
        self.samples += 1
        self.missed += missed
        if self._first_mono is None:
            self._first_mono = mono
        self._last_mono = mono
        return smp

    def _read(self, seq: int, mono: float, wall: float, missed: int, polite: bool) -> Sample:
        if self.tier == "psutil":
            smp = self._psutil_tick(seq, mono, wall, missed)
        elif mono >= self._next_full and not (polite and mono < self._lock_free_at):
            smp = self._full_tick(seq, mono, wall, missed, polite)
        else:
            smp = self._count_tick(seq, mono, wall, missed, polite)
        self._check_alive()
        return smp

    def _check_alive(self) -> None:
        """Raise NoSuchProcess if the target exited (or began to) by now:
        what was read may be truncated."""
        if self._poll is not None:
            if self._poll.poll(0):
                raise NoSuchProcess(self.pid, "process exited during the tick")
            return
        st = procfs.stat(self._via, self._dir_fd)
        if st.gone or st.exiting:
            raise NoSuchProcess(self.pid, "process exited during the tick")

    def _dying(self) -> bool:
        """The thread read through is gone or exiting, and no other thread
        lives: a multi-threaded process being killed. Its pidfd turns
        readable only once its last thread is gone (pidfd_poll: exit_state
        and thread_group_empty), its leader is a zombie before that."""
        try:
            st = procfs.stat(self._via)
        except Error:
            st = None
        return (st is None or st.gone or st.exiting) and procfs.live_thread(self.pid) is None

    def _statm(self) -> Tuple[int, Tuple[int, ...]]:
        """VmRSS and the counters that change whenever a page is mapped or
        unmapped, from statm: the same per-mm counters as status's VmRSS,
        RssAnon, RssFile and RssShmem (task_statm() in fs/proc/task_mmu.c),
        as seven numbers rather than ~1.5 KB of text to format and parse
        (~4 us of CPU against ~19 us)."""
        p = procfs.path(self._via, "statm")
        with procfs.translated(self.pid, p, True):
            data = os.pread(self._statm_fd, 256, 0)
        size, resident, shared = procfs.parsed_statm(self.pid, data)[:3]
        if size == 0:
            # No address space: the process no longer has its memory (zombie, exiting).
            raise NoSuchProcess(self.pid, "process exited")
        # An anonymous page swapped out leaves resident, and so changes the key.
        return resident * PAGE, (resident, shared, size)

    def _psutil_tick(self, seq: int, mono: float, wall: float, missed: int) -> Sample:
        rss, _ = self._statm()
        snap = None
        if mono >= self._next_full:
            snap = fallback.snapshot(self._via, self._engine_name, "psutil tier")
            snap.pid = self.pid
            self._next_full = mono + self.full_every
        return Sample(self.pid, seq, mono, wall, "psutil", rss, None, None, snap, missed)

    def _full_tick(self, seq: int, mono: float, wall: float, missed: int, polite: bool) -> Sample:
        maps = self._read_maps()
        # Wall time, pauses included: a scan takes the lock hundreds of times,
        # often waiting for the target's own mmap first, and stands in the
        # target's way for about as long as it lasts.
        t0 = time.monotonic()
        try:
            parts = scan_parts(self._via, self._eng, self._engine_name, self.tier,
                               SMAPS_PAUSE if self.polite else 0.0)
        except HeapChanged as err:
            if self._intervals is None:
                raise
            parts = None
            why = f"{err}: samples carry the last good Go heap states, their age in states_age"
            self.warnings += [why] if why not in self.warnings else []
        cost = time.monotonic() - t0
        # The first scan's cost is mostly one-time work (DWARF, tables, the
        # search for mheap_): the next scan's cost is the one to go by.
        charged = self.polite and self._scanned
        self._next_full = mono + max(self.full_every, cost / FULL_SCAN_SHARE if charged else 0.0)
        self._scanned = self._scanned or parts is not None
        if parts is None:
            return self._count_tick(seq, mono, wall, missed, False)
        self._owners.scanned(mono, parts.table)
        snap = parts.snapshot
        snap.pid = self.pid
        for w in snap.warnings:
            if w not in self.warnings:
                self.warnings.append(w)
        t = parts.table
        self._flags = {(t.starts[i], t.ends[i]): t.vmflags[i] for i in range(len(t))}
        self._regions = parts.regions
        self._outside = exact.outside_category(parts.layout.context.go_only)
        self._go_heap = snap.go_heap_detail is not None
        self._classified.clear()
        self._basis = t, parts.cats
        self._intervals = exact.Intervals(t, parts.cats, parts.regions, self._outside)
        # The classification stands for the maps read just before, if the
        # scan saw the same mappings; else the next tick rebuilds it.
        if _same_mappings(self._eng.parse_smaps(maps), t):
            self._maps_seen = maps
            self._classified.put(maps, (t, parts.cats, self._intervals))
        else:
            self._maps_seen = None
        self._counted = None
        assert snap.categories is not None
        cats = {name: c.rss for name, c in snap.categories.items()}
        detail = None if snap.go_heap_detail is None else {k: c.rss for k, c in snap.go_heap_detail.items()}
        if snap.tier == "exact" and self._owners.counted(mono, _strays(cats, detail), snap.total.rss):
            # The scan raced a heap growing while it was read: this tick's
            # figures are a count with the owners read again (core.refresh),
            # its snapshot (pss, swap, uss) the scan's.
            return dataclasses.replace(self._count_tick(seq, mono, wall, missed, polite), snapshot=snap)
        return Sample(self.pid, seq, mono, wall, snap.tier, snap.total.rss, cats, detail, snap, missed,
                      0.0 if snap.tier == "exact" else None)

    def _read_maps(self) -> bytes:
        p = procfs.path(self._via, "maps")
        with procfs.translated(self.pid, p, True):
            n = self._eng.read_all(self._maps_fd, self._maps_buf)
        return bytes(memoryview(self._maps_buf)[:n])

    def _reclassify(self, maps: bytes) -> None:
        """The classification for mappings as /proc/PID/maps shows them now.

        Kept for the last few maps texts seen since the full scan: a program
        that maps and unmaps the same buffer flips between two of them."""
        self._maps_seen = maps
        kept = self._classified.get(maps)
        if kept is not None:
            self._basis, self._intervals = kept[:2], kept[2]
            self._owners.mapped(kept[0])
            return
        first = [maps]  # the text just read, then fresh ones

        def read():  # type: ignore[no-untyped-def]
            text = first.pop() if first else self._read_maps()
            return procfs.parsed(self.pid, "maps", self._eng.parse_smaps, text), text

        t, maps = procfs.without_overlap(self.pid, "maps", read, self._eng.first_overlap)
        self._maps_seen = maps
        if not len(t):
            raise NoSuchProcess(self.pid, "process exited")  # a live process always has mappings
        flags = self._flags
        for i in range(len(t)):
            t.vmflags[i] = flags.get((t.starts[i], t.ends[i]), 0)
        lay = layout_of(self._via, self._starttime, t)
        cats = self._eng.classify(t, lay.context)
        self._basis = t, cats
        self._intervals = exact.Intervals(t, cats, self._regions, self._outside)
        self._classified.put(maps, (t, cats, self._intervals))
        self._owners.mapped(t)

    def _refresh_owners(self, mono: float) -> None:
        """Read the owners again for the mappings counted now (core.refresh)."""
        assert self._basis is not None
        t, cats = self._basis
        regions = self._owners.read(self._via, self._starttime, t, self._eng, self._go_heap, mono)
        if regions is None:
            return
        self._regions = regions
        self._classified.clear()
        self._intervals = exact.Intervals(t, cats, regions, self._outside)
        if self._maps_seen is not None:
            self._classified.put(self._maps_seen, (t, cats, self._intervals))
        self._counted = None

    def _count_tick(self, seq: int, mono: float, wall: float, missed: int, polite: bool) -> Sample:
        rss, key = self._statm()
        maps = self._read_maps()
        if maps != self._maps_seen:
            self._reclassify(maps)
            self._counted = None
        if self._regions is not None and self._owners.due(mono, self._go_heap):
            self._refresh_owners(mono)
        pages = self._count(key, mono, polite)
        iv = self._intervals
        assert iv is not None
        exact_tier = iv.tier == "exact"
        cats, detail = self._figures(pages, exact_tier)
        if exact_tier and self._owners.counted(mono, _strays(cats, detail), rss):
            # The count contradicts the owners in use (core.refresh): read
            # them again and count with what they say now.
            if self._paced and mono < self._owners.tried_at + REREAD_AFTER:
                raise _OwnersBehind
            claims = self._regions
            self._refresh_owners(mono)
            cats, detail = self._figures(self._count(key, mono, polite), exact_tier)
            if self._owners.reread(mono, self._regions != claims, _strays(cats, detail), rss) and self._paced:
                raise _OwnersBehind
            iv = self._intervals
        age = mono - self._owners.read_at if exact_tier else None
        return Sample(self.pid, seq, mono, wall, iv.tier, rss, cats, detail, None, missed, age)

    def _figures(self, pages: List[int], exact_tier: bool) -> Tuple[Dict[str, int], Optional[Dict[str, int]]]:
        """Bytes per category, and per Go heap state (None without a Go heap
        read), of a count's pages."""
        cats = {name: pages[i] * PAGE for i, name in enumerate(CATEGORIES)}
        detail = None
        if exact_tier and self._go_heap:
            detail = {name: pages[exact.NCAT + i] * PAGE for i, name in enumerate(exact.DETAIL)}
            cats[CATEGORIES[GO_HEAP]] += sum(detail.values())
        return cats, detail

    def _count(self, key: Tuple[int, ...], mono: float, polite: bool) -> List[int]:
        """Pages per category and heap state (exact.GROUPS) in the intervals
        in use: the count kept while statm shows no change, else a new one."""
        iv = self._intervals
        assert iv is not None and self._pagemap is not None
        counted = self._counted
        if counted is None or counted[0] != key or mono - counted[2] > RECOUNT_AFTER:
            if polite and mono < self._lock_free_at:
                raise _LockBudgetSpent
            # CPU time: one ioctl holds the lock while it walks (per 512
            # regions); time spent waiting for the lock costs the target nothing.
            t0 = time.thread_time()
            counts = self._pagemap.counts(iv.ranges, iv.private)
            self._lock_free_at = time.monotonic() + (time.thread_time() - t0) * (1 / LOCK_SHARE - 1)
            pages = [0] * exact.GROUPS
            for j, g in enumerate(iv.groups):
                pages[g] += counts[4 * j] - counts[4 * j + 3]
            counted = self._counted = (key, pages, mono)
        return counted[1]


def _strays(cats: Dict[str, int], detail: Optional[Dict[str, int]]) -> Tuple[int, int, int]:
    """Bytes resident where the owners as read say nothing should be, or no
    one owns them: anon_other, and the Go heap's released and reserved."""
    return cats["anon_other"], detail["released"] if detail else 0, detail["reserved"] if detail else 0


def _same_mappings(a: SmapsTable, b: SmapsTable) -> bool:
    return (a.starts == b.starts and a.ends == b.ends and a.perms == b.perms and a.inodes == b.inodes
            and a.names == b.names)
