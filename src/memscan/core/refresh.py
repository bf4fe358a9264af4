"""The exact tier's owners between a Sampler's full scans.

A full scan reads every owner's structures (``scanner.owner_regions``);
between two, the owners are read again (the refresh) when they are older
than ``REFRESH_AFTER`` (``REFRESH_AFTER_C`` without a Go heap) and when
anonymous mappings grew by ``NEW_ANON`` or more since they were read:

- the mappings the same: the Go heap alone, its page allocator's chunk
  bitmaps and scavenged bits and the spans of the arenas whose bitmaps
  changed (``owners.go.heap`` keeps what it decoded of the other arenas),
  with the C allocator's and the Go runtime's regions as last read;
- after anonymous mappings grew, or first after a full scan, or in a
  process without a Go heap: every owner, so that a new C chunk (its
  header), heap arena (the arena index) or thread stack (its guard page)
  has its owner at once rather than ``anon_other``. Smaller changes (a
  program mapping and unmapping a buffer in a loop) wait for the periodic
  refresh: reading the owners of a mapping gone by then is lock time spent
  for nothing;
- when a count contradicts them: ``anon_other``, or the Go heap's pages
  resident in ``released`` address space, grew since the owners were
  read by ``STRAY_GROWTH`` of rss or more, or a page is resident in
  ``reserved`` address space, which the runtime never touches before it
  grows into it. Such pages are what owners read before a change show:
  Go 1.26+ maps runtime metadata (a few hundred KiB, persistentalloc) in
  new small mappings as the heap first grows, and a heap growing into new
  address space or reusing released pages touches them before the next
  periodic read. The sampler then reads them again in the same tick
  (every owner for ``anon_other``, the heap alone otherwise) and counts
  again. A paced tick less than ``REREAD_AFTER`` after the last read is
  missed rather than given with owners it knows are out of date, and so
  is one whose count finds the heap grown on past the read (a program
  allocating for tens of milliseconds: its ticks are missed until it
  pauses, for at most ``GROWING_READS`` reads in a row). What a read
  cannot place (memory memscan does not know, or released pages still
  resident after MADV_FREE, Go's GODEBUG=madvdontneed=0) is the new
  baseline: it is not read for again until it grows, and not before
  ``IN_VAIN_WAIT`` (0.1 s, doubled up to 2 s while reads go on changing
  no owner's claim).

Refreshes are spaced so that their CPU time stays within ``REFRESH_SHARE``
(2 %) of wall time, polite or not, but for those that new anonymous
mappings call for (at most every ``REFRESH_AFTER``) and those a
contradicting count calls for (at most every ``REREAD_AFTER``): only while
a process maps 1 MiB or more every 0.1 s, or keeps touching pages its
owners as read do not place, can they take more. Each read of the
target's memory holds its mmap_lock for a moment (access_remote_vm() in
mm/memory.c), and the decoding, also counted, does not; CPU time overstates the lock's share,
never understates it. Measured on a small cgo program: ~1.5 ms for the heap
alone, ~5 ms for every owner, so at most 13 and 4 refreshes a second. A
read that finds the heap changing under every try keeps the states in use,
which go on ageing (``Sample.states_age``).
"""

from __future__ import annotations

import time
from typing import List, Optional, Tuple

from .._errors import AccessDenied, Error, NoSuchProcess
from . import exact
from .scanner import Others, layout_of, owner_regions

__all__ = ["NEW_ANON", "Owners", "REFRESH_AFTER", "REFRESH_AFTER_C", "REFRESH_SHARE", "REREAD_AFTER", "STRAY_GROWTH"]

# Seconds after which the owners are read again (with a Go heap, whose page
# states change without a change of mappings; without one), the growth of
# anonymous mappings that has them read at once (glibc's mmap threshold is
# 128 KiB to 32 MiB, a Go arena 64 MiB, a thread stack 8 MiB by default),
# and the share of wall time (CPU time) those reads may take (the same as a
# count's, LOCK_SHARE).
REFRESH_AFTER = 0.1
REFRESH_AFTER_C = 0.5
NEW_ANON = 1 << 20
REFRESH_SHARE = 0.02
# The growth of stray pages (anon_other, resident reserved or released),
# as a share of rss (64 KiB at least: a thread's first stack pages and the
# like are not worth a read), that has the owners read again at once; the
# seconds between two such reads (at 100 Hz, one tick in two while a heap
# grows, ~1.5 ms each); and how long a read that found no owner's claim
# changed holds the next back, doubled while they go on being in vain (a
# program that maps and unmaps a buffer of its own in a loop: anon_other
# that no owner will ever claim).
STRAY_GROWTH = 1 / 256
STRAY_MIN = 64 << 10
REREAD_AFTER = 0.02
IN_VAIN_WAIT = (0.1, 2.0)
# Heap reads in a row that a heap growing on may outrun (1 s at 100 Hz)
# before what the count finds stands.
GROWING_READS = 50


def anon_bytes(table) -> int:  # type: ignore[no-untyped-def]
    """Bytes of address space in anonymous mappings (no file behind them)."""
    return sum(e - s for s, e, ino in zip(table.starts, table.ends, table.inodes) if ino == 0)


class Owners:
    """When the owners counted were read, and when they may be read again."""

    __slots__ = ("read_at", "behind", "heap_behind", "free_at", "tried_at", "_anon", "_others", "_unowned",
                 "_released", "_reserved", "_wait", "_quiet_until", "_growing")

    def __init__(self) -> None:
        self.read_at = 0.0  # mono of the read of the owners in use
        self.behind = False  # anonymous mappings grew since, or anon_other did: every owner to be read
        self.heap_behind = False  # the heap's resident pages in reserved or released grew since
        self.free_at = 0.0  # mono before which they are not read again
        self.tried_at = 0.0  # mono at which the last read, good or not, ended
        self._anon = 0  # anon_bytes() of the mappings they were read for
        self._others: "Optional[Others]" = None  # every owner's regions but the Go heap's
        # The least of each stray figure counted since the owners (the heap)
        # were read; None: taken from the next count. Resident reserved
        # address space is 0 after a read: the runtime touches no page it
        # has not grown into, and a count that finds some raced a heap
        # growing while it was read (sysMap, then pages.grow's inUse, in
        # mheap.grow).
        self._unowned: Optional[int] = None
        self._released: Optional[int] = None
        self._reserved: Optional[int] = 0
        self._wait = IN_VAIN_WAIT[0]  # after the next read in vain
        self._quiet_until = 0.0  # mono before which strays call for no read
        self._growing = 0  # reads in a row that the heap outgrew before the count

    def scanned(self, mono: float, table) -> None:  # type: ignore[no-untyped-def]
        """A full scan read every owner of the mappings in ``table`` at ``mono``."""
        self.read_at, self.behind, self._anon, self._others = mono, False, anon_bytes(table), None
        self.heap_behind, self._unowned, self._released, self._reserved = False, None, None, 0

    def mapped(self, table) -> None:  # type: ignore[no-untyped-def]
        """The mappings are now those in ``table``."""
        self.behind = self.behind or anon_bytes(table) - self._anon >= NEW_ANON

    def counted(self, mono: float, strays: Tuple[int, int, int], rss: int) -> bool:
        """A count with the owners in use found ``strays``: bytes of
        anon_other, and of the heap resident in released and reserved
        address space. True if it contradicts them: they are to be read
        again before the count is given."""
        least = max(STRAY_MIN, rss * STRAY_GROWTH)
        unowned, released, reserved = strays
        # Reserved address space is never resident but for a heap read
        # outgrown: one page calls for a read, not held back by reads in vain.
        if self._reserved is not None and reserved > self._reserved:
            self.heap_behind = True
        if mono >= self._quiet_until:
            if self._unowned is not None and unowned - self._unowned >= least:
                self.behind = True
            if self._released is not None and released - self._released >= least:
                self.heap_behind = True
        self._unowned = unowned if self._unowned is None else min(self._unowned, unowned)
        self._released = released if self._released is None else min(self._released, released)
        self._reserved = reserved if self._reserved is None else min(self._reserved, reserved)
        return self.behind or self.heap_behind

    def reread(self, mono: float, found: bool, after: Tuple[int, int, int], rss: int) -> bool:
        """The owners were read again for a count that contradicted them;
        ``found``: the read changed what they claim; the count with them
        found ``after``. True if the heap grew on while it was read (pages
        resident in reserved address space again): the count is not to be
        given, the heap is read again at the next tick, up to
        ``GROWING_READS`` times in a row. Otherwise a read that found
        nothing new was in vain: the next waits, longer each time."""
        self._growing = self._growing + 1 if after[2] > 0 else 0
        if self._growing:
            if self._growing <= GROWING_READS:
                self.heap_behind = True
                return True
            self._reserved = None  # misread, or a heap growing for seconds: what is found stands
        if found:
            self._wait = IN_VAIN_WAIT[0]
        else:
            self._quiet_until = mono + self._wait
            self._wait = min(2 * self._wait, IN_VAIN_WAIT[1])
        self.counted(mono, after, rss)
        return False

    def due(self, mono: float, go_heap: bool) -> bool:
        """The owners are to be read again now: new anonymous mappings within
        ``REFRESH_AFTER`` of the last read, whatever its cost (a new mapping
        is never left to ``anon_other`` for the seconds an expensive read's
        share would wait), else within the share."""
        if self.behind or self.heap_behind:
            return mono >= min(self.free_at, self.tried_at + REFRESH_AFTER)
        after = REFRESH_AFTER if go_heap else REFRESH_AFTER_C
        return mono >= self.free_at and mono - self.read_at >= after

    def read(self, pid: int, starttime: int, table, eng, go_heap: bool,  # type: ignore[no-untyped-def]
             mono: float) -> Optional[List[exact.Region]]:
        """The owners' regions of the mappings in ``table`` (a maps table, the
        VmFlags known filled in) read now, or None if the heap kept changing
        or a part failed: the regions in use stand."""
        lay = layout_of(pid, starttime, table)
        others = None if self.behind or not go_heap else self._others
        t0 = time.thread_time()
        try:
            # Not glibc's free lists: a sample counts c_malloc whole, and a
            # fragmented heap's walk (a read per free chunk) would hold the
            # owners of new mappings back by seconds of refresh budget.
            regions, self._others = owner_regions(pid, table, lay, eng, [], others, free_lists=False)
        except (AccessDenied, NoSuchProcess):
            raise
        except Error:
            return None
        finally:
            self.tried_at = time.monotonic()
            self.free_at = self.tried_at + (time.thread_time() - t0) * (1 / REFRESH_SHARE - 1)
        # Memory a read cannot place (released pages resident after
        # MADV_FREE, what memscan does not know) is not read for again
        # until it grows: what the next count finds is the baseline.
        self._released, self._reserved = None, 0
        self.read_at, self.heap_behind = mono, False
        if others is None:  # every owner read: the mappings' growth and anon_other count from here
            self.behind, self._anon, self._unowned = False, anon_bytes(table), None
        return regions
