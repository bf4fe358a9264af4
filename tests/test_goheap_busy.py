"""The exact tier on Go programs that keep their heap changing: one that
allocates flat out on every core (tests/goprogs/allocator), and the per-process
memory of what the symbol-less search found in a stripped binary."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

import memscan
from memscan.kernel import procfs
from memscan.owners.go import binary as gobinary
from memscan.owners.go import heap as goheap
from memscan.owners.go import search

from helpers.cprogram import CProgram
from helpers.goheap import exe_module
from helpers.goprogram import allocator
from helpers.gotoolchain import GO_VERSIONS

pytestmark = pytest.mark.slow



@pytest.fixture
def churn() -> Iterator[CProgram]:
    prog = CProgram([allocator(GO_VERSIONS[-1], False), "-heap", "64"])
    try:
        yield prog
    finally:
        prog.stop()


def test_unsettled_pages_are_read_again(churn) -> None:
    """What stays unsettled after the re-reads is a sliver of the heap, and
    an arena left with more than max_unsettled of it is named in a warning,
    with the binary's path (not a /proc/PID/map_files link)."""
    path, bias = exe_module(churn.pid)
    heaps = [goheap.read_heap(churn.pid, path, bias, max_unsettled=0) for _ in range(10)]
    grown = [sum(e - s for s, e, st in h.intervals if st != goheap.RESERVED) for h in heaps]
    assert sum(h.unsettled for h in heaps) <= 0.01 * sum(grown), [h.unsettled for h in heaps]
    for h in heaps:
        assert bool(h.warnings) == bool(h.unsettled), h.warnings
        assert all(os.readlink(f"/proc/{churn.pid}/exe") in w for w in h.warnings), h.warnings


def test_stripped_binary_is_searched_once_per_process(tmp_path) -> None:
    """Without symbols mheap_ and allp are found by searching the data
    segments: once per process; later reads check what was found."""
    stripped = allocator(GO_VERSIONS[-1], False, "-s -w")
    proc = CProgram([stripped, "-heap", "16"])
    other = None
    try:
        memscan.clear_caches()
        for _ in range(3):
            assert memscan.scan(proc.pid, tier="exact").go_heap_detail is not None
        hits, misses, entries = search._found.info()
        assert (misses, entries) == (1, 1) and hits >= 2, search._found.info()
        # What was found is checked at every use: an entry that no longer
        # names a plausible mheap_ is searched for again.
        path, bias = exe_module(proc.pid)
        key = (proc.pid, procfs.stat(proc.pid).starttime, gobinary.layout_of(path), bias)
        found = search._found.get(key)
        assert found is not None
        search._found.put(key, (found[0] + 8, found[1]))
        assert memscan.scan(proc.pid, tier="exact").go_heap_detail is not None
        assert search._found.get(key) == found
        # Another process of the same binary is searched on its own.
        other = CProgram([stripped, "-heap", "16"])
        assert memscan.scan(other.pid, tier="exact").go_heap_detail is not None
        assert search._found.info()[1:] == (2, 2)
        # Messages name the binary as /proc/PID/maps does, not by the
        # /proc/PID/map_files link the readers open it through.
        with open(f"/proc/{proc.pid}/maps") as f:
            first = next(line.split()[0] for line in f if line.rstrip().endswith(" " + stripped))
        span = "-".join(f"{int(x, 16):x}" for x in first.split("-"))  # map_files names: no leading zeros
        with pytest.raises(memscan.NoRuntimeInfo) as refused:
            goheap.read_heap(proc.pid, f"/proc/{proc.pid}/map_files/{span}", 0, tables=False)
        assert stripped in str(refused.value) and "map_files" not in str(refused.value)
    finally:
        proc.stop()
        if other is not None:
            other.stop()
