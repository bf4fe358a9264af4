"""Cost of the page counts of a fully touched 1 GiB anonymous region
(262,144 pages, no THP) of this process, by each engine.

Group "pagemap-1GiB": ``memscan.kernel.pagemap.page_counts`` (PAGEMAP_SCAN
where the kernel has it, kernel 6.7+) and ``page_counts_pread`` (8 bytes of
pagemap per page), counted by the Cython and the pure-Python engine. The
region is private and the range is not marked so: the PAGEMAP_SCAN path
reads every entry's exclusive bit, its worst case. No test fails on timing.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from typing import Iterator, Tuple

import pytest

from memscan.engine import ENGINES
from memscan.kernel import pagemap

GIB = 1 << 30
PAGE = mmap.PAGESIZE


def _meminfo_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(scope="module")
def touched() -> Iterator[Tuple[int, int]]:
    if _meminfo_available() < 3 * GIB:
        pytest.skip("needs 1 GiB of free memory")
    m = mmap.mmap(-1, GIB, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            m.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB pages: the count the table shows
        for off in range(0, GIB, PAGE):
            m[off] = 1
        c = ctypes.c_char.from_buffer(m)
        addr = ctypes.addressof(c)
        del c
        yield addr, addr + GIB
    finally:
        m.close()


@pytest.fixture(scope="module")
def own_pagemap() -> Iterator[int]:
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


@pytest.mark.parametrize("how", ["page_counts", "page_counts_pread"])
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_pagemap_1gib_touched(benchmark, touched, own_pagemap, engine, how) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "pagemap-1GiB"
    benchmark.extra_info["PAGEMAP_SCAN"] = pagemap.has_scan()
    got = benchmark(getattr(pagemap, how), own_pagemap, [touched], ENGINES[engine])
    assert got == [GIB // PAGE, 0, GIB // PAGE, 0]
