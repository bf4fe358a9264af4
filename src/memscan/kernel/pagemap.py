"""Page counts of address ranges of a live process, from /proc/PID/pagemap.

``Pagemap(pid, engine).counts(ranges)`` gives, for each (start, end) range, how many
4 KiB pages are present (resident, the shared zero page included), swapped,
exclusively mapped (present, not the zero page, pagemap bit 56: mapped by
this process alone) and the zero page (present but not in Rss)::

    with Pagemap(pid, engine) as pm:
        counts = pm.counts([(start, end), ...])   # 4 ints per range

The counting is the engines' ``page_counts`` (PAGEMAP_SCAN on kernel 6.7+,
pread of pagemap before; see ``memscan.engine.pure``). Reading pagemap
takes the target's mmap_lock, stalling its mmap/munmap for the duration of
a read (fs/proc/task_mmu.c).

Permissions (fs/proc/base.c): pagemap is mode 0400 and needs
PTRACE_MODE_READ_FSCREDS at open: the process's owner or CAP_SYS_PTRACE
(+ CAP_DAC_READ_SEARCH for other users' processes); denial is AccessDenied.
A process that is gone or a zombie at open, or exits while being counted,
is NoSuchProcess: never zero counts.
"""

from __future__ import annotations

import ctypes
import errno
import os
from types import ModuleType
from typing import List, Optional, Sequence, Tuple

from .._cache import once
from . import procfs
from .linux import PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_SIZE, PAGEMAP_SCAN, PM_SCAN_ARG_SIZE

__all__ = ["Pagemap", "has_scan", "KERNEL_HALF"]

# Ranges at or above this address (x86-64's [vsyscall] page) are not in the
# process's page tables: pagemap has no entries for them (a read returns 0
# bytes, PAGEMAP_SCAN EFAULT) and smaps shows Rss 0. They count as no pages.
KERNEL_HALF = 1 << 63


@once
def has_scan() -> bool:
    """Whether this kernel has the PAGEMAP_SCAN ioctl (6.7+). Probed once,
    on this process's own pagemap."""
    import fcntl
    import struct

    page = ctypes.create_string_buffer(PAGE_SIZE)  # a mapped address of ours
    vec = (ctypes.c_uint64 * 3)()
    start = ctypes.addressof(page) & ~(PAGE_SIZE - 1)
    arg = bytearray(struct.pack(
        "<12Q", PM_SCAN_ARG_SIZE, 0, start, start + PAGE_SIZE, 0, ctypes.addressof(vec), 1, 0, 0, 0,
        PAGE_IS_PRESENT | PAGE_IS_SWAPPED, PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
    ))
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.ioctl(fd, PAGEMAP_SCAN, arg, True)
    except OSError as err:
        if err.errno in (errno.ENOTTY, errno.EINVAL):
            return False
        raise
    finally:
        os.close(fd)
    return True


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

    def counts(self, ranges: Sequence[Tuple[int, int]], private: Optional[bytes] = None) -> List[int]:
        """Four ints per range: present, swapped, exclusive and zero pages.

        ``ranges``: sorted, non-overlapping, page-aligned (start, end)
        address pairs (ValueError otherwise). ``private``: one byte per
        range, set where smaps showed the range's mapping with no shared
        pages, so that its pages are exclusive without reading bit 56 (see
        the engines' page_counts). Raises NoSuchProcess when the process
        exited (also mid-count), AccessDenied, or OSError.
        """
        if self.fd < 0:
            raise ValueError("I/O operation on a closed Pagemap")
        ranges = list(ranges)
        user = ranges
        if ranges and ranges[-1][1] > KERNEL_HALF:
            user = [(s, min(e, KERNEL_HALF)) for s, e in ranges if s < KERNEL_HALF]
        with procfs.translated(self.pid, self.path, True):
            out = self.engine.page_counts(self.fd, user, private[: len(user)] if private else None)
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
