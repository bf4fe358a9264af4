"""The Sampler's owners between full scans: a new mapping has its owner at
once, and the Go heap's page states follow allocation, collection and
release, without a full scan (full_every is an hour here)."""

from __future__ import annotations

import time
from typing import Callable

import pytest

import memscan
from memscan import Sampler

from helpers import gotoolchain

pytestmark = pytest.mark.slow

MIB = 1 << 20
GO = gotoolchain.GO_VERSIONS[-1]
# What a quiet Go program's runtime touches between two reads, and the
# slack a state's figure has against MemStats (its spans' pages, not bytes).
SLACK = 3 * MIB


def until(s: Sampler, since: float, ok: Callable[[memscan.Sample], bool], timeout: float = 3.0) -> memscan.Sample:
    """The first sample whose owners were read after ``since`` (monotonic)
    and that satisfies ``ok``; none is a full scan."""
    deadline = time.monotonic() + timeout
    while True:
        smp = s.sample()
        assert smp.snapshot is None
        assert smp.states_age is not None
        if smp.mono - smp.states_age > since and ok(smp):
            return smp
        assert time.monotonic() < deadline, smp
        time.sleep(0.01)


def test_new_c_chunk_has_its_owner_at_once(go_program):
    """A 48 MiB malloc is a new mapping: c_malloc at once, never anon_other."""
    prog = go_program(version=GO, cgo=True, args=("-heap", 16))
    leak = 48 * MIB
    with Sampler(prog.pid, tier="exact", full_every=3600) as s:
        first = s.sample()
        assert first.snapshot is not None and first.states_age == 0.0
        before = s.sample()
        t = time.monotonic()
        prog.command(f"cleak {leak // MIB}")
        after = until(s, t, lambda smp: smp.categories["c_malloc"] - before.categories["c_malloc"] >= leak - SLACK)
    assert after.categories["anon_other"] - before.categories["anon_other"] <= SLACK
    assert after.mono - t < 1.5


def test_go_heap_states_follow_without_a_full_scan(go_program):
    """Allocate, drop (GC), release (FreeOSMemory): objects and free follow
    MemStats within a second each, with no full scan."""
    prog = go_program(version=GO, args=("-heap", 16))
    with Sampler(prog.pid, tier="exact", full_every=3600) as s:
        s.sample()
        for cmd in ("alloc 64", "drop", "release"):
            t = time.monotonic()
            ms = prog.command(cmd)["memstats"]
            inuse, free = ms["HeapInuse"], ms["HeapIdle"] - ms["HeapReleased"]

            def matches(smp: memscan.Sample) -> bool:
                d = smp.go_heap_detail
                return abs(d["objects"] - inuse) <= SLACK + inuse * 0.03 and abs(d["free"] - free) <= SLACK + free * 0.03

            smp = until(s, t, matches)
            assert smp.mono - t < 1.5, (cmd, smp.go_heap_detail, inuse, free)

