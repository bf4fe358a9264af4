"""Read-only, bounded reads of a live process's memory.

:class:`TargetMemory` is the one reader the allocator-structure readers
(:mod:`memscan.owners.go.heap`, :mod:`memscan.owners.go.runtime`, :mod:`memscan.owners.c`)
share. ``/proc/PID/mem`` and ``/proc/PID/pagemap`` are opened ``O_RDONLY``
and read with ``os.pread`` only: nothing is written and the target is never
ptraced (reading needs ptrace-read access all the same).

Reading a non-present anonymous page through ``/proc/PID/mem`` would map the
shared zero page into the target (and reading a swapped one swaps it in), so
pagemap is looked up before a page is read. Every byte asked for is counted
against a cap (``limit``); going over it raises the caller's ``over_limit``
error. Two ways to read, for two kinds of caller:

- :meth:`TargetMemory.read` follows pointers: the range must lie in readable
  mappings of ``/proc/PID/maps`` (parsed by the engine, re-read with
  :meth:`~TargetMemory.refresh_maps`); anonymous pages neither present nor
  swapped read as zeros; the pagemap entries looked up are cached and count
  towards the cap; anything that does not add up raises the caller's
  ``changed`` error.
- :meth:`TargetMemory.present` / :meth:`~TargetMemory.pread` /
  :meth:`~TargetMemory.read_if_present` probe: runs of present pages (not
  the zero page; ``PAGEMAP_SCAN`` where the kernel has it), and reads that
  give None when a page is not present or the range went away.
"""

from __future__ import annotations

import bisect
import errno
import os
import struct
from types import ModuleType
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple, Type

from .. import elf
from .._errors import Error, NoSuchProcess
from .._types import PERM_R
from ..engine import get_engine
from ..kernel import pagemap_scan, procfs
from ..kernel.linux import PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PM_PRESENT, PM_SWAPPED

__all__ = ["Mapping", "TargetMemory", "read_maps"]

PAGE = elf.PAGE_SIZE  # the kernel's page: /proc/PID/pagemap's granule


class Mapping(NamedTuple):
    """One line of /proc/PID/maps."""

    start: int
    end: int
    readable: bool
    #: Inode 0: anonymous (also [heap], [stack], [anon:...]); special
    #: files like [vvar] are not readable through mem anyway.
    anonymous: bool
    perms: int = 0  # PERM_R | PERM_W | PERM_X | PERM_S bits
    name: str = ""  # pathname column: "", "[heap]", "[stack]", a path ...


def read_maps(pid: int, engine: ModuleType) -> List[Mapping]:
    """The mappings of ``pid``, sorted, from ``engine``'s parse of /proc/PID/maps."""
    t = procfs.parsed(pid, "maps", engine.parse_smaps, procfs.read(pid, "maps", bytearray(), engine))
    out = [Mapping(t.starts[i], t.ends[i], bool(t.perms[i] & PERM_R), t.inodes[i] == 0, t.perms[i], t.names[i])
           for i in range(len(t))]
    out.sort()
    return out


class TargetMemory:
    """Reads of one process's memory through /proc/PID/mem, pread only.

    ``limit``: cap on the bytes asked for (see :meth:`charge`), raising
    ``over_limit`` when reached. ``changed``: what :meth:`read` raises when
    the target's memory does not look as expected (unmapped, short read).
    ``subject``: what is read, for messages (e.g. "Go heap"). ``maps``: read
    /proc/PID/maps now (what :meth:`read` checks ranges against).
    ``engine``: the engine that parses them (None: the default one).
    """

    def __init__(self, pid: int, limit: int, *, changed: Type[Exception] = Error,
                 over_limit: Type[Exception] = Error, subject: str = "target's memory", maps: bool = False,
                 engine: Optional[ModuleType] = None) -> None:
        self.pid = pid
        self.engine = get_engine(None) if engine is None else engine
        self.limit = limit
        self.changed = changed
        self.over_limit = over_limit
        self.subject = subject
        self.charged = 0  # bytes asked for, resident or not: what the cap limits
        self.bytes_read = 0  # bytes /proc/PID/mem gave
        self.pagemap_bytes = 0  # bytes read by read()'s pagemap lookups
        self._pagemap: Dict[int, int] = {}
        self.maps: List[Mapping] = []
        self._starts: List[int] = []
        self.mem = self.pagemap = -1
        if maps:
            self.refresh_maps()
        try:
            for name in ("mem", "pagemap"):
                p = procfs.path(pid, name)
                with procfs.translated(pid, p):
                    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)  # never O_RDWR: we only read
                setattr(self, name, fd)
        except BaseException:
            self.close()
            raise
        self._scan: Optional[pagemap_scan.Scan] = None

    def close(self) -> None:
        for name in ("mem", "pagemap"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def __enter__(self) -> "TargetMemory":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the cap

    def charge(self, n: int) -> None:
        """Count ``n`` bytes about to be asked for against the cap; raise
        ``over_limit`` (counting nothing) when they would exceed it."""
        if self.charged + n > self.limit:
            raise self.over_limit(f"reading the {self.subject} structures of pid {self.pid} "
                                  f"would exceed {self.limit} bytes")
        self.charged += n

    def room(self, n: int) -> int:
        """How many more reads of ``n`` bytes the cap allows: a walk of many
        small reads (glibc's free lists) charges them together afterwards,
        a call per read costing a tenth of the read again."""
        return (self.limit - self.charged) // n

    # -- mappings

    def refresh_maps(self) -> None:
        """(Re-)read /proc/PID/maps: the target may have mapped more since."""
        self.maps = read_maps(self.pid, self.engine)
        self._starts = [m.start for m in self.maps]

    def forget_residency(self) -> None:
        """Look pages up in /proc/PID/pagemap again at their next read: the
        target may have touched pages found untouched before (read as zeros)."""
        self._pagemap.clear()

    def mapping(self, addr: int) -> Optional[Mapping]:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.maps[i].end:
            return self.maps[i]
        return None

    # -- validated reads: ranges checked against maps, errors raised

    def read(self, addr: int, size: int, what: str) -> bytes:
        """``size`` bytes at ``addr``; non-resident anonymous pages read as zeros."""
        out = bytearray(max(size, 0))
        for lo, data in self.read_runs(addr, size, what):
            out[lo - addr : lo - addr + len(data)] = data
        return bytes(out)

    def read_runs(self, addr: int, size: int, what: str) -> List[Tuple[int, bytes]]:
        """(address, bytes) of the runs of [addr, addr+size) that hold data:
        file pages, and anonymous pages present or swapped. The others are
        zeros and are neither read nor charged to the cap (a Go binary that
        links net/http has over 30 MiB of .bss, nearly all never touched)."""
        if size <= 0:
            return []
        runs = [run for start, end, anonymous in self._pieces(addr, size, what)
                for run in self._readable_runs(start, end, anonymous)]
        self.charge(sum(hi - lo for lo, hi in runs))
        out = []
        for lo, hi in runs:
            data = self._pread(lo, hi - lo)
            if data is None:  # unmapped since we read maps
                raise self.changed(f"{what} at {lo:#x} was unmapped while being read")
            if len(data) != hi - lo:
                self._gone_or_changed("mem")
            out.append((lo, data))
        return out

    def words(self, addr: int, n: int, word: str, what: str) -> Tuple[int, ...]:
        """``n`` words of format ``word`` (e.g. "<Q") at ``addr``."""
        data = self.read(addr, n * struct.calcsize(word), what)
        return struct.unpack(f"{word[0]}{n}{word[1:]}", data)

    def word(self, addr: int, word: str, what: str) -> int:
        return self.words(addr, 1, word, what)[0]

    def _pieces(self, addr: int, size: int, what: str) -> List[Tuple[int, int, bool]]:
        """(start, end, anonymous) of the mappings covering [addr, addr+size)."""
        out = []
        pos, end = addr, addr + size
        while pos < end:
            m = self.mapping(pos)
            if m is None or not m.readable:
                raise self.changed(f"{what} at {addr:#x} (+{size:#x}) is not in a readable mapping of pid {self.pid}")
            out.append((pos, min(end, m.end), m.anonymous))
            pos = m.end
        return out

    def _readable_runs(self, start: int, end: int, anonymous: bool) -> Iterator[Tuple[int, int]]:
        """Sub-ranges to pread. For anonymous memory, only pages that are
        present or swapped: reading any other page would map the zero page
        into the target. File pages are read as they are (what the program
        would see)."""
        if not anonymous:
            yield start, end
            return
        first = start // PAGE
        run = None
        for i, ok in enumerate(self._resident(start, end)):
            page = (first + i) * PAGE
            if ok and run is None:
                run = max(page, start)
            elif not ok and run is not None:
                yield run, page
                run = None
        if run is not None:
            yield run, end

    def _resident(self, start: int, end: int) -> List[bool]:
        """Per page of [start, end): may it be read (present or swapped)?
        Pagemap entries are cached and count towards the cap."""
        first, last = start // PAGE, (end - 1) // PAGE
        missing = [p for p in range(first, last + 1) if p not in self._pagemap]
        if missing:
            lo, hi = missing[0], missing[-1] + 1
            self.charge(8 * (hi - lo))
            data = os.pread(self.pagemap, 8 * (hi - lo), 8 * lo)
            self.pagemap_bytes += len(data)
            if len(data) != 8 * (hi - lo):
                self._gone_or_changed("pagemap")
            for i, (entry,) in enumerate(struct.iter_unpack("<Q", data)):
                self._pagemap[lo + i] = entry
        return [bool(self._pagemap[p] & (PM_PRESENT | PM_SWAPPED)) for p in range(first, last + 1)]

    def _gone_or_changed(self, what: str) -> None:
        st = procfs.stat(self.pid)
        if st.gone or st.exiting:
            raise NoSuchProcess(self.pid, f"process exited while its {self.subject} was read")
        raise self.changed(f"short read of /proc/{self.pid}/{what}: a mapping went away")

    def _pread(self, addr: int, size: int) -> Optional[bytes]:
        """What /proc/PID/mem gives for [addr, addr+size); None when the
        range is unmapped (EIO)."""
        try:
            data = os.pread(self.mem, size, addr)
        except OSError as err:
            if err.errno == errno.EIO:
                return None
            raise
        self.bytes_read += len(data)
        return data

    # -- probing reads: present pages only, None when not there

    def present(self, start: int, end: int) -> List[Tuple[int, int]]:
        """Sorted runs (lo, hi) of pages in [start, end) (page-aligned) that
        are present and not the zero page; what may usefully be read."""
        if start >= end:
            return []
        if pagemap_scan.supported():
            try:
                return self._present_scan(start, end)
            except OSError as err:
                if err.errno not in (errno.ENOTTY, errno.EINVAL):
                    raise
        return self._present_pread(start, end)

    def _present_scan(self, start: int, end: int) -> List[Tuple[int, int]]:
        # PAGEMAP_SCAN (6.7+): runs of present pages; zero-page runs flagged.
        if self._scan is None:
            self._scan = pagemap_scan.Scan(self.pagemap, PAGE_IS_PRESENT, PAGE_IS_PRESENT | PAGE_IS_PFNZERO, 512)
        words = self._scan.regions(start, end)
        out: List[Tuple[int, int]] = []
        for r in range(0, len(words), 3):
            lo, hi, cat = max(words[r], start), min(words[r + 1], end), words[r + 2]
            if lo >= hi or cat & PAGE_IS_PFNZERO or not cat & PAGE_IS_PRESENT:
                continue
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        return out

    def _present_pread(self, start: int, end: int) -> List[Tuple[int, int]]:
        # Older kernels: 8 bytes of pagemap per page; bit 63 = present. The
        # zero page cannot be told without PFNs: harmless, it reads as zeros.
        out: List[Tuple[int, int]] = []
        step = 32768  # pages per read (256 KiB)
        page = start // PAGE
        last = end // PAGE
        while page < last:
            n = min(step, last - page)
            data = os.pread(self.pagemap, 8 * n, 8 * page)
            if len(data) != 8 * n:
                raise ProcessLookupError(errno.ESRCH, "pagemap read short: the process exited")
            for i in range(n):
                if data[8 * i + 7] & 0x80:
                    a = (page + i) * PAGE
                    if out and out[-1][1] == a:
                        out[-1] = (out[-1][0], a + PAGE)
                    else:
                        out.append((a, a + PAGE))
            page += n
        return out

    def all_present(self, addr: int, size: int) -> bool:
        lo, hi = addr & ~(PAGE - 1), (addr + size + PAGE - 1) & ~(PAGE - 1)
        runs = self.present(lo, hi)
        return len(runs) == 1 and runs[0] == (lo, hi)

    def pread(self, addr: int, size: int) -> Optional[bytes]:
        """``size`` bytes at ``addr``, whose pages the caller knows present;
        None if the range went away meanwhile."""
        self.charge(size)
        data = self._pread(addr, size)
        return data if data is not None and len(data) == size else None

    def read_present(self, start: int, end: int) -> List[Tuple[int, bytes]]:
        """(address, bytes) of every run of present pages in [start, end)
        (page-aligned), those still there when read."""
        out = []
        for lo, hi in self.present(start, end):
            data = self.pread(lo, hi - lo)
            if data is not None:
                out.append((lo, data))
        return out

    def read_if_present(self, addr: int, size: int) -> Optional[bytes]:
        """``size`` bytes at ``addr`` if every page of the range is present
        (checked in pagemap first), else None."""
        if not self.all_present(addr, size):
            return None
        return self.pread(addr, size)

    def words_if_present(self, addr: int, n: int) -> Optional[Tuple[int, ...]]:
        """``n`` little-endian 64-bit words at ``addr``, as :meth:`read_if_present`."""
        data = self.read_if_present(addr, 8 * n)
        return None if data is None else struct.unpack(f"<{n}Q", data)
