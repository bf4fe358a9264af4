"""goruntime: the Go runtime's off-heap memory, read from live demo programs.

Checked two ways against each running demo (every toolchain in GO_VERSIONS,
with and without cgo):

- coverage: the resident pages of the process's private anonymous memory
  that is neither a heap arena (goheap), nor the binary's .bss, nor one of
  the runtime regions found here, stay below 1% of RSS without cgo (with
  cgo the rest is C memory, and the C allocations must stay outside);
- accounting: the bytes found per kind, mapped ``rw``, against
  runtime.MemStats (equivalently the runtime/metrics classes):

  ================================  ==========================================
  MemStats / runtime/metrics        kinds here
  ================================  ==========================================
  GCSys = /memory/classes/          heapArena, page alloc index, mapped parts
  metadata/other                    of page summary and scavenge index, gc
                                    bits, span queue, part of persistentalloc
                                    (spanSet blocks, finalizer blocks...),
                                    plus GC workbufs, which live in the heap
                                    arenas (goheap's "stacks" - StackInuse)
  MSpanSys = metadata/mspan/*       persistentalloc (fixalloc chunks)
  MCacheSys = metadata/mcache/*     persistentalloc (fixalloc chunks)
  BuckHashSys = profiling/buckets   buckhash, plus buckets (persistentalloc)
  OtherSys = /memory/classes/other  allspans, rest of persistentalloc (chunk
                                    slack, itabs, addrRanges...)
  (counted nowhere)                 heap index (32 MiB, few pages resident)
  ================================  ==========================================

  so that Σ mapped bytes of all kinds but the heap index equals
  GCSys - workbufs + MSpanSys + MCacheSys + BuckHashSys + OtherSys.
"""

from __future__ import annotations

import os
import time

import pytest

import memscan
from memscan.owners.go import runtime as goruntime

from helpers.goheap import ARGS, KiB, exe_module
from helpers.goruntime import CGO_ARGS, check_regions, check_runtime, intersect, subtract
from helpers.cprogram import CProgram
from helpers.goprogram import allocator
from helpers.gotoolchain import GO_VERSIONS


# --------------------------------------------------------------------------
# helpers


# --------------------------------------------------------------------------
# without Go


def test_merge_kinds() -> None:
    blocks = [(0x3000, 0x4000, "gc bits"), (0x1000, 0x2000, "gc bits"), (0x2000, 0x3000, "gc bits"),
              (0x4000, 0x5000, "allspans"), (0x8000, 0xa000, "persistentalloc"), (0x9000, 0xb000, "persistentalloc")]
    assert goruntime._merge_kinds(blocks) == [(0x1000, 0x4000, "gc bits"), (0x4000, 0x5000, "allspans"),
                                              (0x8000, 0xb000, "persistentalloc")]
    with pytest.raises(memscan.HeapChanged, match="overlaps"):
        goruntime._merge_kinds([(0x1000, 0x3000, "gc bits"), (0x2000, 0x4000, "allspans")])


def test_subtract_helper() -> None:
    assert subtract([(0, 100)], [(10, 20), (50, 200)]) == [(0, 10), (20, 50)]
    assert intersect([(0, 100)], [(10, 20), (90, 200)]) == [(10, 20), (90, 100)]


def test_non_go_binary_is_no_runtime_info() -> None:
    import sys
    with pytest.raises(memscan.NoRuntimeInfo):
        goruntime.runtime_regions(os.getpid(), sys.executable, 0)


# --------------------------------------------------------------------------
# against the demo program


@pytest.mark.slow
@pytest.mark.parametrize("cgo", [False, True], ids=["nocgo", "cgo"])
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_runtime_regions_cover_anonymous_memory(go_program, version: str, cgo: bool) -> None:
    prog = go_program(version=version, cgo=cgo, args=CGO_ARGS if cgo else ARGS)
    check_runtime(prog, version, cgo)


@pytest.mark.slow
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_reads_of_a_busy_program(version: str) -> None:
    """A program that allocates all the time: every read succeeds within
    the three tries scan.py allows, and the regions stay well formed."""
    prog = CProgram([allocator(version, False), "-heap", "16"])
    try:
        time.sleep(0.3)
        path, bias = exe_module(prog.pid)
        changed = 0
        t0 = time.perf_counter()
        for _ in range(100):
            for attempt in range(3):
                try:
                    rr = goruntime.read_runtime(prog.pid, path, bias)
                    break
                except memscan.HeapChanged:
                    changed += 1
                    assert attempt < 2, "three reads in a row changed under us"
            check_regions(rr)
        print(f"\ngo{version} busy: 100 reads, {changed} retried, {(time.perf_counter() - t0) * 10:.1f} ms per read; "
              + ", ".join(f"{k} {v // KiB} KiB" for k, v in rr.sizes().items() if v))
    finally:
        prog.stop()
