"""Page counts of address ranges of a live process, from /proc/PID/pagemap.

``Pagemap(pid, engine).counts(ranges)`` gives, for each (start, end) range, how many
4 KiB pages are present (resident, the shared zero page included), swapped,
exclusively mapped (present, not the zero page, pagemap bit 56: mapped by
this process alone) and the zero page (present but not in Rss)::

    with Pagemap(pid, engine) as pm:
        counts = pm.counts([(start, end), ...])   # 4 ints per range

This module reads (PAGEMAP_SCAN through ``pagemap_scan``, pread of
pagemap); the engine's kernels count what was read
(``memscan.engine.pure.pages``). Reading pagemap takes the target's
mmap_lock, stalling its mmap/munmap for the duration of a read
(fs/proc/task_mmu.c).

Permissions (fs/proc/base.c): pagemap is mode 0400 and needs
PTRACE_MODE_READ_FSCREDS at open: the process's owner or CAP_SYS_PTRACE
(+ CAP_DAC_READ_SEARCH for other users' processes); denial is AccessDenied.
A process that is gone or a zombie at open, or exits while being counted,
is NoSuchProcess: never zero counts.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from array import array
from types import ModuleType
from typing import List, Optional, Sequence, Tuple

from .._cache import once
from . import pagemap_scan, procfs
from .linux import PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_SHIFT, PAGE_SIZE, PM_PFN_MASK, PM_PRESENT

__all__ = ["Pagemap", "has_scan", "page_counts", "page_counts_pread", "zero_pfns", "KERNEL_HALF"]

# Ranges at or above this address (x86-64's [vsyscall] page) are not in the
# process's page tables: pagemap has no entries for them (a read returns 0
# bytes, PAGEMAP_SCAN EFAULT) and smaps shows Rss 0. They count as no pages.
KERNEL_HALF = 1 << 63

# How the counts are taken. Both engines count what these steps return, so
# they give the same counts on the same process state:
#
# 1. PAGEMAP_SCAN (kernel 6.7+) over the ranges, ranges closer than
#    SCAN_GAP pages merged into one span, with category_anyof_mask =
#    PRESENT|SWAPPED and return_mask = PRESENT|SWAPPED|PFNZERO: run-length
#    present, swapped and zero-page runs (PFNZERO is one compare per PTE in
#    the kernel, unlike FILE or HUGE, which look at the struct page).
# 2. pread of pagemap over the present, non-zero runs (runs closer than
#    READ_GAP pages read together, in reads of at most READ_BYTES), counting
#    entries with bits 63 and 56: SCAN has no "exclusive" category.
# 3. Without PAGEMAP_SCAN (ENOTTY or EINVAL: an older kernel), pread of the
#    whole ranges; zero pages are then told by their PFN, which only an opener
#    with CAP_SYS_ADMIN sees: otherwise zero is 0 (see zero_pfns()).
SCAN_ANYOF = PAGE_IS_PRESENT | PAGE_IS_SWAPPED
SCAN_RETURN = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO
SCAN_GAP = 256  # pages: ranges closer than this share one scan
READ_GAP = 256  # pages: runs closer than this share one pread
READ_BYTES = 256 * 1024  # bytes per pread (32,768 pages, 128 MiB of address space)


#: Whether this kernel has the PAGEMAP_SCAN ioctl (6.7+).
has_scan = pagemap_scan.supported


@once
def zero_pfns() -> Tuple[int, int, int]:
    """(zero_pfn, huge_zero_first_pfn, huge_zero_end_pfn) as this process sees
    them in its own pagemap, or zeros where unknown.

    Found once: a private anonymous page that is only read maps the shared
    zero page, a read-only 2 MiB MADV_HUGEPAGE range the huge zero page (when
    THP and its zero page are on). PFNs are 0 unless the opener of pagemap
    had CAP_SYS_ADMIN: then (0, 0, 0), and the pread path reports no zero
    pages. Only that path uses this; PAGEMAP_SCAN tells zero pages itself.
    """
    try:
        return _find_zero_pfns()
    except OSError:  # no /proc/self/pagemap (a sandbox): no PFNs either
        return (0, 0, 0)


def _find_zero_pfns() -> Tuple[int, int, int]:
    zero = hz_lo = hz_hi = 0
    huge = 2 << 20
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "rb") as f:
            huge = int(f.read())
    except (OSError, ValueError):
        pass
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        def entry(addr: int) -> int:
            data = os.pread(fd, 8, (addr >> PAGE_SHIFT) * 8)
            return struct.unpack("<Q", data)[0] if len(data) == 8 else 0

        m = mmap.mmap(-1, PAGE_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            m[0]  # a read fault maps the zero page
            c = ctypes.c_char.from_buffer(m)
            e = entry(ctypes.addressof(c))
            del c
        finally:
            m.close()
        if e & PM_PRESENT:
            zero = e & PM_PFN_MASK
        if zero and hasattr(mmap, "MADV_HUGEPAGE"):
            m = mmap.mmap(-1, 2 * huge, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            try:
                c = ctypes.c_char.from_buffer(m)
                base = ctypes.addressof(c)
                del c
                off = -base % huge
                m.madvise(mmap.MADV_HUGEPAGE, off, huge)
                m[off]
                e0, e1 = entry(base + off), entry(base + off + PAGE_SIZE)
                pfn = e0 & PM_PFN_MASK
                if e0 & PM_PRESENT and e1 & PM_PRESENT and pfn and pfn != zero and (e1 & PM_PFN_MASK) == pfn + 1:
                    hz_lo, hz_hi = pfn, pfn + huge // PAGE_SIZE
            except OSError:
                pass
            finally:
                m.close()
    finally:
        os.close(fd)
    return zero, hz_lo, hz_hi


def _exited() -> ProcessLookupError:
    return ProcessLookupError(errno.ESRCH, "pagemap read 0 bytes: the process exited")


def _pread_full(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``offset`` of pagemap; 0 bytes means the target exited."""
    n = 0
    while n < len(view):
        got = os.preadv(fd, [view[n:]], offset + n)
        if got == 0:
            raise _exited()
        n += got


def _read_segments(fd: int, engine: ModuleType, segs: "array[int]", out: "array[int]",
                   zero: Optional[Tuple[int, int, int]]) -> None:
    """Read the pagemap entries of ``segs`` (engine.count_regions' segments)
    and count them into ``out``: bit 56 only, or (``zero`` given: the zero
    page's PFNs) all four counts.

    Every call reads pagemap at least once (the entry of address 0 when there
    are no segments): a read after the scans that returns bytes proves the
    target's memory still existed when they ran. On 6.18 PAGEMAP_SCAN of a
    zombie or reaped target returns no regions, not ESRCH; pread returns 0
    bytes.
    """
    if not segs:
        _pread_full(fd, memoryview(bytearray(8)), 0)
        return
    plan = engine.read_plan(segs, READ_BYTES // 8, READ_GAP)
    view = memoryview(bytearray(8 * max(plan[r + 1] - plan[r] for r in range(0, len(plan), 3))))
    for r in range(0, len(plan), 3):
        lo, hi, i = plan[r], plan[r + 1], plan[r + 2]
        entries = view[: (hi - lo) * 8]
        _pread_full(fd, entries, lo * 8)
        if zero is None:
            engine.count_exclusive(entries, lo, segs, i, out)
        else:
            engine.count_entries(entries, lo, segs, i, out, zero)


def page_counts(fd: int, ranges: Sequence[Tuple[int, int]], engine: ModuleType, private: Optional[bytes] = None,
                scan: "Optional[pagemap_scan.Scan]" = None) -> List[int]:
    """Page counts of address ranges of a process, from its pagemap fd.

    ``fd``: an open /proc/PID/pagemap; ``ranges``: sorted, non-overlapping,
    page-aligned (start, end) address pairs (ValueError otherwise). Returns
    4 ints per range: present (pagemap bit 63; the zero page included),
    swapped (bit 62), exclusive (present, not the zero page, bit 56) and zero
    (present pages that are the shared zero page or the huge zero page).
    ``engine`` counts; ``scan``: a pagemap_scan.Scan of ``fd`` to reuse.

    Uses PAGEMAP_SCAN where the kernel has it, pread of pagemap otherwise
    (see page_counts_pread). OSError from the kernel propagates (ESRCH as
    ProcessLookupError). A target that exited before or during the call
    raises ProcessLookupError: pagemap is always read after the scans (a
    read of 0 bytes means the target's memory is gone), never silent zeros.
    Ranges must lie below the top of user space (TASK_SIZE).

    ``private``: optional, one byte per range; non-zero marks a range in a
    mapping that smaps showed with no shared pages (Shared_Clean and
    Shared_Dirty 0). Its present pages that are not the zero page are then
    counted exclusive without reading their entries: PAGEMAP_SCAN cannot
    report bit 56, and the pread it takes costs more than the scan itself
    (about 4 ms per GiB resident). The pread path reads bit 56 regardless.
    """
    rng = engine.page_ranges(ranges)
    if not rng:
        return []
    if pagemap_scan.supported():
        try:
            return _counts_scan(fd, rng, engine, private or b"", scan or pagemap_scan.Scan(fd, SCAN_ANYOF, SCAN_RETURN))
        except OSError as err:
            if err.errno not in (errno.ENOTTY, errno.EINVAL):
                raise
    return _counts_pread(fd, rng, engine)


def _counts_scan(fd: int, rng: "array[int]", engine: ModuleType, private: bytes, scan: "pagemap_scan.Scan") -> List[int]:
    out = array("q", bytes(16 * len(rng)))
    segs = array("Q")  # present, non-zero pieces: (start page, end page, range index)
    spans = engine.scan_spans(rng, SCAN_GAP)
    for s in range(0, len(spans), 2):
        first, last = spans[s], spans[s + 1]
        words = scan.regions(rng[2 * first] << PAGE_SHIFT, rng[2 * last - 1] << PAGE_SHIFT)
        engine.count_regions(words, rng, first, last, private, out, segs)
    _read_segments(fd, engine, segs, out, None)
    return out.tolist()


def page_counts_pread(fd: int, ranges: Sequence[Tuple[int, int]], engine: ModuleType) -> List[int]:
    """page_counts by pread of pagemap alone (what page_counts falls back to
    without PAGEMAP_SCAN): 8 bytes per page of every range, read in chunks of
    up to 256 KiB. Zero pages are told by PFN (zero_pfns()): counted only
    when both this process and the opener of ``fd`` see PFNs, 0 otherwise."""
    rng = engine.page_ranges(ranges)
    return _counts_pread(fd, rng, engine) if rng else []


def _counts_pread(fd: int, rng: "array[int]", engine: ModuleType) -> List[int]:
    n = len(rng) // 2
    out = array("q", bytes(32 * n))
    segs = array("Q")
    for j in range(n):
        if rng[2 * j] < rng[2 * j + 1]:
            segs.extend((rng[2 * j], rng[2 * j + 1], j))
    _read_segments(fd, engine, segs, out, zero_pfns())
    return out.tolist()


class Pagemap:
    """An open /proc/PID/pagemap (read-only), counted by an engine.

    ``engine``: the engine module that counts (``memscan.engine.get_engine``
    picks one). ``dir_fd``: a /proc/PID directory fd
    (``procfs.open_dir``) to open through, so that a reused pid cannot
    substitute another process. Close it, or use it as a context manager.
    """

    def __init__(self, pid: int, engine: ModuleType, dir_fd: Optional[int] = None) -> None:
        self.pid = pid
        self.engine = engine
        self.path = procfs.path(pid, "pagemap")
        self._pinned = dir_fd is not None
        with procfs.translated(pid, self.path, self._pinned):
            self.fd: int = os.open(
                "pagemap" if dir_fd is not None else self.path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd
            )
        self._scan: Optional[pagemap_scan.Scan] = None

    def counts(self, ranges: Sequence[Tuple[int, int]], private: Optional[bytes] = None) -> List[int]:
        """Four ints per range: present, swapped, exclusive and zero pages.

        ``ranges``: sorted, non-overlapping, page-aligned (start, end)
        address pairs (ValueError otherwise). ``private``: one byte per
        range, set where smaps showed the range's mapping with no shared
        pages, so that its pages are exclusive without reading bit 56 (see
        page_counts). Raises NoSuchProcess when the process
        exited (also mid-count), AccessDenied, or OSError.
        """
        if self.fd < 0:
            raise ValueError("I/O operation on a closed Pagemap")
        ranges = list(ranges)
        user = ranges
        if ranges and ranges[-1][1] > KERNEL_HALF:
            user = [(s, min(e, KERNEL_HALF)) for s, e in ranges if s < KERNEL_HALF]
        if self._scan is None:
            self._scan = pagemap_scan.Scan(self.fd, SCAN_ANYOF, SCAN_RETURN)
        with procfs.translated(self.pid, self.path, True):
            out = page_counts(self.fd, user, self.engine, private[: len(user)] if private else None, self._scan)
        return out + [0] * (4 * (len(ranges) - len(user)))

    has_scan = staticmethod(has_scan)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> "Pagemap":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.fd < 0 else f"fd={self.fd}"
        return f"<Pagemap pid={self.pid} {state}>"
