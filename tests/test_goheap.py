"""goheap: the Go runtime's page states, read from live demo programs and
compared with the runtime's own accounting (runtime.MemStats).

The helpers' tests at the top run without Go; the rest build and run the
demo with every toolchain in GO_VERSIONS (marked slow).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import subprocess
import sys
import time
from typing import List

import pytest

import memscan
from memscan import Error
from memscan import elf as elfinfo
from memscan.demo import build as gobuild
from memscan.owners import memory as targetmem
from memscan.owners.go import binary as gobinary
from memscan.owners.go import bits as gobits
from memscan.owners.go import dwarf as godwarf
from memscan.owners.go import heap as goheap

from helpers import gotoolchain
from helpers.goheap import (
    ARGS, HEAP, KiB, MiB, assert_close, check_against_memstats, check_cover, describe, exe_module, maps_no_page, read,
)
from helpers.gotoolchain import GO_VERSIONS
from helpers.processes import stop


# --------------------------------------------------------------------------
# helpers of the tests


def test_maps_no_page_sees_a_read_that_maps_one() -> None:
    """The check above fails on a read of an untouched anonymous page."""
    code = ("import ctypes, mmap, sys, time\nm = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
            "print(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        addr = int(child.stdout.readline())
        with pytest.raises(AssertionError, match=hex(addr + 4 * mmap.PAGESIZE)):
            with maps_no_page(child.pid), targetmem.TargetMemory(child.pid, 1 << 20) as mem:
                assert mem.pread(addr + 4 * mmap.PAGESIZE, 8) == bytes(8)
    finally:
        stop(child)


# --------------------------------------------------------------------------
# without Go


def test_runs_and_intervals() -> None:
    assert list(gobits.runs(0)) == []
    assert list(gobits.runs(0b1101100)) == [(2, 4), (5, 7)]
    ps = 8192
    a = bytearray([goheap.OBJECTS] * 3 + [goheap.FREE] * 2)
    b = bytearray([goheap.FREE] * 4 + [goheap.RESERVED])
    # The second arena is adjacent: its leading FREE pages merge with the first's trailing ones.
    out = gobits.intervals([gobits.state_runs(0x10000, a, ps), gobits.state_runs(0x10000 + 5 * ps, b, ps)])
    assert out == [
        (0x10000, 0x10000 + 3 * ps, goheap.OBJECTS),
        (0x10000 + 3 * ps, 0x10000 + 9 * ps, goheap.FREE),
        (0x10000 + 9 * ps, 0x10000 + 10 * ps, goheap.RESERVED),
    ]
    assert gobits.range_bits([(ps, 3 * ps), (10 * ps, 100 * ps)], 0, 8, ps) == 0b110
    assert goheap.STATE_NAMES[goheap.RELEASED] == "released"


def test_target_reads_resident_memory_and_zeros_for_untouched_pages() -> None:
    """The reader gives the bytes of resident pages, zeros for never-touched
    anonymous pages without making them present, and refuses unmapped
    addresses and reads past its cap."""
    buf = ctypes.create_string_buffer(b"memscan!" * 4096)  # 32 KiB, written: resident
    untouched = mmap.mmap(-1, 16 * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # never touched
    addr = ctypes.addressof(ctypes.c_char.from_buffer(untouched))
    pid = os.getpid()
    with goheap.target(pid, 1 << 20, None) as t:
        assert t.read(ctypes.addressof(buf), 32 * KiB, "buf") == b"memscan!" * 4096
        assert t.read(addr, 16 * mmap.PAGESIZE, "untouched") == bytes(16 * mmap.PAGESIZE)
        assert t.bytes_read == 32 * KiB
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        entries = struct.unpack(f"<{16}Q", os.pread(f.fileno(), 16 * 8, addr // mmap.PAGESIZE * 8))
    assert not any(e >> 63 for e in entries), "a read mapped pages into the target"
    with goheap.target(pid, 48 * KiB, None) as t:
        with pytest.raises(memscan.HeapChanged):
            t.read(8, 8, "page zero")  # never mapped
        t.read(ctypes.addressof(buf), 32 * KiB, "buf")
        # The cap counts what is read: untouched pages cost only their pagemap entries.
        assert t.read(addr, 16 * mmap.PAGESIZE, "untouched") == bytes(16 * mmap.PAGESIZE)
        with pytest.raises(memscan.ReadLimitExceeded):
            t.read(ctypes.addressof(buf), 32 * KiB, "buf")
    untouched.close()


def test_non_go_binary_is_no_runtime_info() -> None:
    with pytest.raises(memscan.NoRuntimeInfo, match="no Go runtime"):
        goheap.read_heap(os.getpid(), sys.executable, 0)
    assert issubclass(memscan.NoRuntimeInfo, Error) and issubclass(memscan.HeapChanged, Error)


# --------------------------------------------------------------------------
# against the demo program


@pytest.mark.slow
@pytest.mark.parametrize("cgo", [False, True], ids=["nocgo", "cgo"])
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_page_states_match_memstats(go_program, version: str, cgo: bool) -> None:
    prog = go_program(version=version, cgo=cgo, args=ARGS)
    path, bias = exe_module(prog.pid)
    assert bias == 0  # the demo is ET_EXEC

    report = prog.command("stats")
    memscan.clear_caches()
    with maps_no_page(prog.pid):  # nor the zero page into untouched structures
        t0 = time.perf_counter()
        heap = read(prog.pid, path, bias)
        t1 = time.perf_counter()
        again = read(prog.pid, path, bias)  # layout cached: only the memory reads
        t2 = time.perf_counter()

    ms = report["memstats"]
    totals = heap.totals()
    print(f"\ngo{version} cgo={int(cgo)}: read_heap {1000 * (t1 - t0):.1f} ms first (DWARF parse included), "
          f"{1000 * (t2 - t1):.1f} ms cached; {heap.bytes_read} B of memory + {heap.pagemap_bytes} B of pagemap "
          f"read; {len(heap.arenas)} arenas; {heap.unsettled} B unsettled")
    print(describe(version, cgo, "stats", totals, ms))

    assert heap.go_version == f"go{version}"
    assert heap.arena_bytes == 64 * MiB and heap.page_size == 8 * KiB
    # The program is idle: its structures agree (but for a page the
    # background scavenger may be releasing right now).
    assert heap.unsettled <= 64 * KiB
    check_cover(heap)
    assert again.arenas == heap.arenas
    check_cover(again)
    # The second read reused the first's decoding of each arena whose bytes
    # read the same; decoding them afresh agrees (to the page a background
    # scavenge may release meanwhile).
    memscan.clear_caches()
    fresh = read(prog.pid, path, bias).totals()
    for state, size in again.totals().items():
        assert abs(size - fresh[state]) <= 64 * KiB, (state, size, fresh[state])

    check_against_memstats(totals, ms)

    # Drop the live heap and scavenge everything: the released pages follow.
    report = prog.command("free")
    heap = read(prog.pid, path, bias)
    totals2 = heap.totals()
    print(describe(version, cgo, "free", totals2, report["memstats"]))
    check_cover(heap)
    assert totals2["released"] >= totals["released"] + HEAP * MiB
    assert_close("released", totals2["released"], report["memstats"]["HeapReleased"], 0.01, 0)


@pytest.mark.slow
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_binary_without_dwarf_raises_no_runtime_info(version: str) -> None:
    binary = gobuild.build(gobuild.DEMO_DIR, goroot=gotoolchain.goroot(version), cgo=False, ldflags="-w",
                           out_name="memscandemo")
    # Without the shipped layout tables, a binary without DWARF cannot be read.
    with pytest.raises(memscan.NoRuntimeInfo, match="needs DWARF"):
        goheap.read_heap(os.getpid(), binary, 0, tables=False)
    # The answer is cached too, and stays the same.
    with pytest.raises(memscan.NoRuntimeInfo, match="needs DWARF"):
        goheap.read_heap(os.getpid(), binary, 0, tables=False)


@pytest.mark.slow
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_layout_fast_path_matches_full_walk(version: str, monkeypatch) -> None:
    """The DIEs found by name in .debug_info give the layout a walk of every
    runtime compile unit gives."""
    binary = gobuild.build(gobuild.DEMO_DIR, goroot=gotoolchain.goroot(version), cgo=True, out_name="memscandemo")
    memscan.clear_caches()
    fast = gobinary.layout_of(binary)
    monkeypatch.setattr(godwarf.Dwarf, "_find_by_name", lambda self, dwarf, wanted: None)
    memscan.clear_caches()
    walked = gobinary.layout_of(binary)
    memscan.clear_caches()
    assert fast == walked
    # Offsets read from the DWARF of the real toolchains (amd64).
    if sys.platform == "linux" and os.uname().machine == "x86_64":
        if version.startswith("1.21."):
            assert (walked.arenas, walked.heap_arenas.offset, walked.spans, walked.span_state) == \
                (0x10198, 0x101F0, 0x104000, 0x6B)
        else:
            assert (walked.arenas, walked.heap_arenas.offset, walked.spans, walked.span_state) == \
                (0x101D8, 0x10230, 0, 0x63)


@pytest.mark.slow
def test_go_runtime_in_a_c_shared_library(tmp_path) -> None:
    """A c-shared library's runtime: ET_DYN, mheap_ found with the load bias."""
    version = GO_VERSIONS[-1]
    lib = gobuild.build(gobuild.DEMO_DIR, goroot=gotoolchain.goroot(version), cgo=True,
                        buildmode="c-shared", out_name="libdemo.so")
    host = subprocess.Popen(
        [sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1]); print('loaded', flush=True); "
         "sys.stdin.read()", lib], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None and host.stdout.readline().strip() == "loaded"
        info = elfinfo.module_info(lib)
        assert info is not None and info.elf_type == "DYN"
        start = next(int(f[0].split("-")[0], 16) for f in _maps(host.pid) if f[-1] == lib and int(f[2], 16) == 0)
        bias = start - info.min_vaddr
        # The library starts its runtime on a thread of its own after dlopen
        # returns: wait (bounded) for its heap.
        deadline = time.monotonic() + 20
        while True:
            try:
                heap = read(host.pid, lib, bias)
                if heap.arenas and heap.totals()["objects"]:
                    break
            except memscan.HeapChanged:
                pass
            assert time.monotonic() < deadline, "the library's Go heap never appeared"
            time.sleep(0.05)
        check_cover(heap)
        assert heap.go_version == f"go{version}"
        assert heap.totals()["stacks"] > 0
        # Without the load bias mheap_ is not where the symbol table says.
        with pytest.raises(Error):
            goheap.read_heap(host.pid, lib, 0)
    finally:
        stop(host)


def _maps(pid: int) -> List[List[str]]:
    with open(f"/proc/{pid}/maps") as f:
        return [line.split() for line in f]
