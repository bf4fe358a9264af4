"""Reading the Go heap of the demo program, and checking what was read: the
helpers and checks shared by the Go heap, runtime and layout-table tests."""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from typing import Dict, Iterator, List, Optional, Set, Tuple
from unittest import mock

import memscan
from memscan import elf as elfinfo
from memscan.owners import memory as targetmem
from memscan.owners.go import heap as goheap

MiB = 1 << 20
KiB = 1 << 10
HEAP, GARBAGE, GOROUTINES = 64, 32, 50
ARGS = ["-heap", HEAP, "-garbage", GARBAGE, "-goroutines", GOROUTINES]


def exe_module(pid: int) -> Tuple[str, int]:
    """(path that opens the executable as mapped, load bias) of ``pid``."""
    exe = os.readlink(f"/proc/{pid}/exe")
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].rstrip("\n") == exe and int(fields[2], 16) == 0:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                for path in elfinfo.mapped_path(pid, start, end, exe):
                    info = elfinfo.module_info(path)
                    if info is not None:
                        return path, (start - info.min_vaddr if info.elf_type == "DYN" else 0)
    raise AssertionError(f"no mapping of {exe} in pid {pid}")


def retried(read_fn, *args, tries: int = 3, **kwargs):  # type: ignore[no-untyped-def]
    """``read_fn(*args, **kwargs)`` (a heap or runtime read), tried again
    (bounded) if the target changed under it."""
    for attempt in range(tries):
        try:
            return read_fn(*args, **kwargs)
        except memscan.HeapChanged:
            if attempt + 1 == tries:
                raise
    raise AssertionError("unreachable")


def read(pid: int, path: str, bias: int, tables: Optional[bool] = None) -> goheap.HeapPages:
    """read_heap, tried again (bounded) if the target changed under it."""
    return retried(goheap.read_heap, pid, path, bias, tables=tables)


def present_anon_pages(pid: int) -> Set[int]:
    """Page numbers of readable anonymous mappings that pagemap shows present."""
    pages: Set[int] = set()
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 or fields[1][0] != "r":
                    continue
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                first, count = lo // mmap.PAGESIZE, (hi - lo) // mmap.PAGESIZE
                data = os.pread(fd, 8 * count, 8 * first)
                pages.update(first + i for i, (e,) in enumerate(struct.iter_unpack("<Q", data)) if e >> 63)
    finally:
        os.close(fd)
    return pages


@contextlib.contextmanager
def maps_no_page(pid: int) -> Iterator[None]:
    """Checks that memscan's reads of ``pid``'s memory inside the block made
    no page present (a read of an untouched anonymous page would map the zero
    page): every page that became present meanwhile lies outside what was
    read. The target's own runtime may fault pages elsewhere meanwhile."""
    reads: List[Tuple[int, int]] = []
    real = targetmem.TargetMemory._pread

    def recorded(self: targetmem.TargetMemory, addr: int, size: int) -> Optional[bytes]:
        if self.pid == pid:
            reads.append((addr // mmap.PAGESIZE, -(-(addr + size) // mmap.PAGESIZE)))
        return real(self, addr, size)

    before = present_anon_pages(pid)
    with mock.patch.object(targetmem.TargetMemory, "_pread", recorded):
        yield
    new = present_anon_pages(pid) - before
    assert reads, "the block read none of the target's memory"
    mapped = sorted(p for p in new if any(lo <= p < hi for lo, hi in reads))
    assert not mapped, [hex(p * mmap.PAGESIZE) for p in mapped]


def check_cover(heap: goheap.HeapPages) -> None:
    """Intervals sorted, disjoint, merged, inside arenas, covering them all."""
    assert heap.arenas == tuple(sorted(heap.arenas)) and heap.arenas
    assert all(a % heap.arena_bytes == 0 for a in heap.arenas)
    prev_end, prev_state = None, None
    for start, end, state in heap.intervals:
        assert start < end and start % heap.page_size == 0 and end % heap.page_size == 0
        assert 0 <= state < len(goheap.STATE_NAMES)
        if prev_end is not None:
            assert start >= prev_end, "overlap"
            assert not (start == prev_end and state == prev_state), "adjacent intervals not merged"
        assert any(a <= start and end <= a + heap.arena_bytes for a in heap.arenas) or \
            _in_adjacent_arenas(heap, start, end)
        prev_end, prev_state = end, state
    assert sum(e - s for s, e, _ in heap.intervals) == len(heap.arenas) * heap.arena_bytes


def _in_adjacent_arenas(heap: goheap.HeapPages, start: int, end: int) -> bool:
    """A merged interval may run across adjacent arenas."""
    pos = start
    while pos < end:
        if pos - pos % heap.arena_bytes not in heap.arenas:
            return False
        pos = pos - pos % heap.arena_bytes + heap.arena_bytes
    return True


def expected(memstats: Dict[str, int]) -> Dict[str, int]:
    return {
        "objects": memstats["HeapInuse"],
        "stacks": memstats["StackInuse"],
        "free": memstats["HeapIdle"] - memstats["HeapReleased"],
        "released": memstats["HeapReleased"],
    }


def check_against_memstats(totals: Dict[str, int], ms: Dict[str, int]) -> None:
    """Bytes per page state against the MemStats of the same moment."""
    exp = expected(ms)
    assert_close("objects", totals["objects"], exp["objects"], 0.01, 0)
    # mSpanManual also holds GC workbufs, which MemStats counts in GCSys.
    assert_close("stacks", totals["stacks"], exp["stacks"], 0.10, 256 * KiB)
    # A floor of 256 KiB for a background scavenge between report and read.
    assert_close("released", totals["released"], exp["released"], 0.01, 256 * KiB)
    assert_close("free", totals["free"], exp["free"], 0.01, 512 * KiB)
    # What the runtime grew into is HeapSys + StackInuse (runtime/mstats.go);
    # the rest of the arenas is reserved address space.
    grown = sum(totals[name] for name in ("objects", "stacks", "free", "released"))
    assert_close("grown", grown, ms["HeapSys"] + ms["StackInuse"], 0.01, 0)


def describe(version: str, cgo: bool, what: str, totals: Dict[str, int], memstats: Dict[str, int]) -> str:
    exp = expected(memstats)
    parts = [f"{name} {totals[name] / MiB:.3f} MiB ({(totals[name] - exp[name]) / KiB:+.0f} KiB)" for name in exp]
    parts.append(f"reserved {totals['reserved'] / MiB:.0f} MiB")
    return f"go{version} cgo={int(cgo)} {what}: " + ", ".join(parts)


def assert_close(name: str, got: int, want: int, rel: float, floor: int) -> None:
    assert abs(got - want) <= max(rel * want, floor), \
        f"{name}: {got / MiB:.3f} MiB read, MemStats says {want / MiB:.3f} MiB"
