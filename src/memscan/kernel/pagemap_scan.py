"""The PAGEMAP_SCAN ioctl on /proc/PID/pagemap (kernel 6.7+, fs/proc/task_mmu.c;
Documentation/admin-guide/mm/pagemap.rst): runs of pages by category, from
the page tables, without an 8-byte entry per page.

``supported()`` tells whether this kernel has it: probed once on this
process's own pagemap, and set to False for good when a scan gets ENOTTY
(an ioctl that pagemap does not know). ``Scan(fd, anyof, returned)`` holds
the buffers of one pagemap fd; ``regions(start, end)`` runs the ioctl over
[start, end) until the walk is done and returns the regions as words.

walk_end can be stale on 6.18 when the output vector is longer than the
kernel's 512-region bounce buffer: a call that came back with fewer regions
than the vector holds finished its range; after a full vector the scan
continues from max(walk_end, end of the last region), never from walk_end
alone (which double-counts).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from array import array
from typing import Optional

from .linux import PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_REGION_WORDS, PAGE_SIZE, PAGEMAP_SCAN, PM_SCAN_ARG_SIZE

__all__ = ["supported", "Scan", "VEC_LEN"]

#: Regions per ioctl (24 bytes each).
VEC_LEN = 4096

# Whether the kernel has PAGEMAP_SCAN; None until probed or first used.
_supported: Optional[bool] = None

# Words of struct pm_scan_arg (include/uapi/linux/fs.h) that change per call.
_START, _END, _WALK_END = 2, 3, 4


def supported() -> bool:
    """Whether this kernel has PAGEMAP_SCAN (6.7+)."""
    global _supported
    if _supported is None:
        _supported = _probe()
    return _supported


def _probe() -> bool:
    page = ctypes.create_string_buffer(PAGE_SIZE)  # a mapped address of ours
    start = ctypes.addressof(page) & ~(PAGE_SIZE - 1)
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        Scan(fd, PAGE_IS_PRESENT | PAGE_IS_SWAPPED, PAGE_IS_PRESENT | PAGE_IS_SWAPPED, 1).regions(start, start + PAGE_SIZE)
    except OSError as err:
        if err.errno in (errno.ENOTTY, errno.EINVAL):
            return False
        raise
    finally:
        os.close(fd)
    return True


class Scan:
    """PAGEMAP_SCAN over one pagemap fd: pages in any of the categories
    ``anyof`` (PAGE_IS_*), reported with the categories ``returned``. The
    argument and the output vector are allocated once (so one Scan serves
    one thread at a time); ``vec_len`` regions per ioctl."""

    def __init__(self, fd: int, anyof: int, returned: int, vec_len: int = 0) -> None:
        self.fd = fd
        self.vec_len = vec_len or VEC_LEN
        self._vec = bytearray(PAGE_REGION_WORDS * 8 * self.vec_len)
        self._words = memoryview(self._vec).cast("Q")
        addr = ctypes.addressof((ctypes.c_char * len(self._vec)).from_buffer(self._vec))
        self._arg = bytearray(struct.pack(
            "<12Q", PM_SCAN_ARG_SIZE, 0, 0, 0, 0, addr, self.vec_len, 0, 0, 0, anyof, returned,
        ))
        self._argw = memoryview(self._arg).cast("Q")

    def _ioctl(self, start: int, end: int) -> int:
        global _supported
        argw = self._argw
        argw[_START] = start
        argw[_END] = end
        argw[_WALK_END] = 0
        try:
            return fcntl.ioctl(self.fd, PAGEMAP_SCAN, self._arg, True)
        except OSError as err:
            if err.errno == errno.ENOTTY:
                _supported = False
            raise

    def regions(self, start: int, end: int) -> memoryview:
        """The regions in [start, end) (page-aligned addresses), 3 words
        each: start, end, categories. The view is valid until the next call.
        OSError from the kernel propagates: ENOTTY or EINVAL from a kernel
        without PAGEMAP_SCAN, EIO when the walk makes no progress."""
        ret = self._ioctl(start, end)
        words = self._words
        if ret < self.vec_len:
            return words[: PAGE_REGION_WORDS * ret]
        # A full vector: go on after what was returned (walk_end alone may be stale).
        out = array("Q", self._vec)
        pos = start
        while ret == self.vec_len:
            nxt = max(self._argw[_WALK_END], words[PAGE_REGION_WORDS * ret - 2])
            if nxt <= pos:
                raise OSError(errno.EIO, "PAGEMAP_SCAN made no progress")
            pos = nxt
            if pos >= end:
                break
            ret = self._ioctl(pos, end)
            if ret and words[0] < pos:
                words[0] = pos
            out.frombytes(memoryview(self._vec)[: PAGE_REGION_WORDS * 8 * ret])
        return memoryview(out)
