"""memscan.Sampler on real processes: its per-tick figures against scan()
and the programs' own accounting, following changes, and exits raced."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time

import psutil
import pytest

import memscan
from memscan import CATEGORIES, Sampler
from memscan.engine import ENGINES

from helpers import gotoolchain
from helpers.cli import dead_pid
from helpers.processes import stop

MIB = 1 << 20
# A quiet Go program's runtime (sysmon, the scavenger) still touches a page
# now and then between two reads.
SLACK = 1 * MIB
GO = gotoolchain.GO_VERSIONS[-1]
HEAP_MIB = 64


def counted(sampler: Sampler) -> memscan.Sample:
    """A sample whose categories come from a pagemap count, not a full scan
    (the first tick is a full scan; full_every is long in these tests)."""
    while True:
        smp = sampler.sample()
        if smp.snapshot is None:
            return smp


def assert_close(got: dict, want: dict, slack: int = SLACK) -> None:
    assert set(got) == set(want)
    off = {k: (got[k], want[k]) for k in want if abs(got[k] - want[k]) > slack}
    assert not off, off


@pytest.mark.slow
@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("tier", ["exact", "layout"])
def test_categories_agree_with_scan(go_program, tier, engine):
    prog = go_program(version=GO, args=("-heap", HEAP_MIB, "-goroutines", 20))
    with Sampler(prog.pid, tier=tier, full_every=3600, engine=engine) as s:
        first = s.sample()
        assert first.seq == 0 and first.snapshot is not None and first.tier == tier
        smp = counted(s)
    snap = memscan.scan(prog.pid, tier=tier, engine=engine)
    assert smp.tier == tier and smp.pid == prog.pid and smp.missed == 0
    assert_close(smp.categories, {k: c.rss for k, c in snap.categories.items()})
    assert abs(smp.rss - snap.total.rss) <= SLACK
    assert abs(sum(smp.categories.values()) - smp.rss) <= SLACK
    assert smp.categories["go_heap"] >= HEAP_MIB * MIB - SLACK
    # The full scan's figures are the scan's.
    assert first.categories == {k: c.rss for k, c in first.snapshot.categories.items()}
    assert first.rss == first.snapshot.total.rss
    if tier == "exact":
        assert smp.go_heap_detail is not None and first.go_heap_detail is not None
        assert_close(smp.go_heap_detail, {k: c.rss for k, c in snap.go_heap_detail.items()})
        assert sum(smp.go_heap_detail.values()) == smp.categories["go_heap"]
        # The live -heap slices are objects (the program's own HeapAlloc).
        live = prog.command("stats")["memstats"]["HeapAlloc"]
        assert smp.go_heap_detail["objects"] >= min(live, HEAP_MIB * MIB) - SLACK
    else:
        assert smp.go_heap_detail is None and first.go_heap_detail is None


@pytest.mark.slow
def test_follows_freed_go_heap(go_program):
    """FreeOSMemory returns the heap to the OS: the next tick sees it, no full scan needed."""
    prog = go_program(version=GO, args=("-heap", HEAP_MIB))
    with Sampler(prog.pid, tier="exact", full_every=3600) as s:
        before = counted(s)
        rep = prog.command("free")
        after = counted(s)
    assert after.snapshot is None
    dropped = before.categories["go_heap"] - after.categories["go_heap"]
    assert dropped >= HEAP_MIB * MIB - 4 * MIB, (before.categories, after.categories)
    assert before.rss - after.rss >= HEAP_MIB * MIB - 4 * MIB
    ms = rep["memstats"]
    assert after.categories["go_heap"] <= ms["HeapSys"] - ms["HeapReleased"] + ms["StackInuse"] + 4 * MIB


@pytest.mark.slow
def test_follows_new_mappings(go_program):
    """A 48 MiB malloc is a new mapping: seen at once (classified from maps),
    and put in c_malloc by the next full scan, as scan() does."""
    prog = go_program(version=GO, cgo=True, args=("-heap", 16))
    leak = 48 * MIB
    # Not polite: the full scan comes exactly full_every after the last one.
    with Sampler(prog.pid, tier="exact", full_every=0.3, polite=False) as s:
        before = counted(s)
        prog.command(f"cleak {leak // MIB}")
        after = counted(s)
        grown = sum(after.categories.values()) - sum(before.categories.values())
        assert leak - SLACK <= grown <= leak + 4 * MIB, (before.categories, after.categories)
        assert abs(after.categories["go_heap"] - before.categories["go_heap"]) <= SLACK
        time.sleep(0.3)
        full = s.sample()
        assert full.snapshot is not None
        refreshed = counted(s)
    snap = memscan.scan(prog.pid, tier="exact")
    assert snap.categories["c_malloc"].rss - before.categories["c_malloc"] >= leak - SLACK
    assert_close(refreshed.categories, {k: c.rss for k, c in snap.categories.items()})


@pytest.mark.slow
def test_iteration_paces_and_counts(go_program):
    prog = go_program(version=GO, args=("-heap", 16))
    interval = 0.01
    with Sampler(prog.pid, interval=interval, full_every=0.25) as s:
        got = []
        for smp in s:
            got.append(smp)
            if time.monotonic() - got[0].mono >= 1.0:
                break
        assert not s.exited
        assert s.samples == len(got)
        assert s.missed == sum(g.missed for g in got)
        # seq counts the ticks missed too.
        for a, b in zip(got, got[1:]):
            assert b.seq == a.seq + b.missed + 1
            assert b.mono >= a.mono
        # Ticks on the grid: about 100 in a second, made or missed.
        assert 80 <= got[-1].seq + 1 <= 105, got[-1].seq
        assert 40 <= s.rate <= 105, s.rate
        # A full scan every 0.25 s at most (later if it is costly, when polite).
        fulls = [g for g in got if g.snapshot is not None]
        assert 1 <= len(fulls) <= 5
        assert got[0].snapshot is not None
        # The grid starts after the first sample: its full scan's one-time
        # work (DWARF, tables, the heap's structures) leaves no gap ...
        assert got[0].seq == 0 and got[1].seq == 1 and got[1].missed == 0
        # ... and is not charged to the full scans' share: the second comes
        # full_every later, not a hundred times the first one's cost.
        assert fulls[1].mono - got[0].mono < 0.25 + 0.15, [f.mono - got[0].mono for f in fulls]


# Touches 64 KiB more of one reserved mapping every ~0.25 ms: its memory
# changes all the time, its mappings never.
GROWER = ("import mmap, time\nm = mmap.mmap(-1, 4 << 30)\ni = 0\nwhile True:\n    for _ in range(16):\n"
          "        m[i] = 1\n        i += 4096\n    time.sleep(0.0002)\n")


def test_polite_sampler_keeps_to_its_lock_share(monkeypatch):
    """A process whose memory changes all the time needs a count on every
    tick; polite, counts are spaced by LOCK_SHARE (made tiny here) and the
    ticks in between are missed, not answered with an old count."""
    from memscan.core import sampler as sampler_mod

    monkeypatch.setattr(sampler_mod, "LOCK_SHARE", 0.0002)  # spacing ~5000x a count's CPU time
    child = subprocess.Popen([sys.executable, "-c", GROWER])
    try:
        _wait_exec(child.pid)
        time.sleep(0.1)
        made = {}
        for polite in (True, False):
            with Sampler(child.pid, interval=0.002, polite=polite, full_every=3600) as s:
                t0 = time.monotonic()
                got = []
                for smp in s:
                    got.append(smp)
                    if time.monotonic() - t0 >= 0.5:
                        break
            # Each sample's categories are counted at its own tick, after its
            # rss was read and before the next sample's was: the process only
            # grows (~256 KiB a millisecond), so the count lies between the
            # two, where a count kept from an earlier tick would lag below.
            # (The kernel's per-CPU rss counters are off by a few pages.)
            for g, nxt in zip(got, got[1:]):
                assert g.rss - MIB <= sum(g.categories.values()) <= nxt.rss + MIB, (g, nxt.rss)
            made[polite] = (s.samples, s.missed)
        polite_n, polite_missed = made[True]
        rude_n, _ = made[False]
        assert polite_missed > 2 * polite_n, made
        assert rude_n > 2 * polite_n, made
    finally:
        stop(child)


def _check_sample(smp: memscan.Sample, shrink: int, growth: int) -> None:
    """Figures of a live process: never zero, nothing cut off the end of
    maps (the main [stack], which exec filled with the arguments, is near
    its end), and the categories add up to rss, give or take what the
    process may have unmapped (``shrink``) or mapped (``growth``) between
    the status read and the count. (Just after exec, before ld.so ran, a
    process has only a few stack pages: 16 KiB is a true figure.)"""
    assert smp.rss > 0, smp
    assert smp.categories is not None and set(smp.categories) == set(CATEGORIES)
    assert min(smp.categories.values()) >= 0
    assert smp.categories["thread_stacks"] > 0, smp
    total = sum(smp.categories.values())
    assert smp.rss - shrink <= total <= smp.rss + growth, smp


def _wait_exec(pid: int) -> None:
    """Until the kernel finished setting up the new program: Popen returns
    once exec closed the close-on-exec fds, before the ELF segments and the
    vDSO are mapped (a real, but not yet meaningful, state)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/maps", "rb") as f:
                if b"[vdso]" in f.read():
                    return
        except OSError:
            return  # gone already
        time.sleep(0.0005)


# Allocates about a MiB every 20 us and never frees: os._exit skips the
# interpreter's teardown, which would free it all while the process lives.
ALLOCATOR = ("import os, time\na = []\nt = time.monotonic()\nwhile time.monotonic() - t < {:.3f}:\n"
             "    a.append(bytearray(65536))\nos._exit(0)\n")


def test_exits_end_iteration_cleanly():
    """Short-lived processes sampled flat out until they exit (some reaped
    at once, some left zombies): iteration just ends, with exited set; every
    sample has a live process's figures."""
    rng = random.Random(1)
    outcomes = {"ended": 0, "gone before": 0}
    samples = 0
    for i in range(24):
        if i % 2:
            argv = ["sleep", f"{rng.uniform(0.005, 0.05):.3f}"]
            shrink, growth = 64 * 1024, 8 * MIB  # ld.so mapping libc while we read
        else:
            argv = [sys.executable, "-c", ALLOCATOR.format(rng.uniform(0.0, 0.05))]
            # Also unmaps a few pymalloc arenas (256 KiB) while importing.
            shrink, growth = MIB, 64 * MIB
        child = subprocess.Popen(argv)
        _wait_exec(child.pid)
        reaper = threading.Thread(target=child.wait) if i % 4 < 2 else None
        if reaper is not None:
            reaper.start()
        try:
            with Sampler(child.pid, interval=0, polite=bool(i % 3), full_every=0.01 if i % 5 == 0 else 1.0) as s:
                for smp in s:
                    _check_sample(smp, shrink, growth)
                assert s.exited
                samples += s.samples
                outcomes["ended"] += 1
                with pytest.raises(memscan.NoSuchProcess):
                    s.sample()
        except memscan.NoSuchProcess:
            outcomes["gone before"] += 1
        finally:
            if reaper is not None:
                reaper.join()
            child.wait()
    assert outcomes["ended"] >= 12, outcomes
    assert samples > 0


def test_main_thread_exited(cprog):
    """pthread_exit() in main: the leader is a zombie but the process runs
    on; the sampler reads it through its live thread, and ends when it exits."""
    prog = cprog("mainexit", 8)
    pid, tid = prog.pid, prog.report["tid"]
    for tier in ("auto", "psutil"):
        with Sampler(pid, tier=tier, interval=0.005) as s:
            smps = [s.sample() for _ in range(3)]
            assert any(f"through thread {tid}" in w for w in s.warnings), s.warnings
        for smp in smps:
            assert smp.pid == pid and smp.rss >= prog.report["touched"]
            assert (smp.categories is None) == (tier == "psutil")
        assert smps[0].snapshot is not None and smps[0].snapshot.pid == pid
    with Sampler(pid, interval=0.005) as s:
        got = 0
        for smp in s:
            got += 1
            if got == 5:
                prog.stop()  # killed: the whole process exits
        assert s.exited and got >= 5


def test_no_such_process():
    pid = dead_pid()
    with pytest.raises(memscan.NoSuchProcess) as err:
        with Sampler(pid):
            pass
    assert err.value.pid == pid


def test_zombie_is_no_such_process():
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for tier in ("auto", "psutil"):
            with pytest.raises(memscan.NoSuchProcess):
                with Sampler(child.pid, tier=tier):
                    pass
    finally:
        child.wait()


def test_psutil_tier_gives_totals_only():
    proc = subprocess.Popen(["sleep", "30"])
    _wait_exec(proc.pid)
    time.sleep(0.1)  # ld.so done: sleep's memory stays as it is
    try:
        with Sampler(proc.pid, tier="psutil") as s:
            smps = [s.sample() for _ in range(3)]
        want = psutil.Process(proc.pid).memory_info().rss
        for smp in smps:
            assert smp.tier == "psutil" and smp.categories is None and smp.go_heap_detail is None
            assert abs(smp.rss - want) <= 64 * 1024
        assert smps[0].snapshot is not None and smps[0].snapshot.tier == "psutil"
        assert smps[0].snapshot.total.rss == pytest.approx(want, abs=64 * 1024)
        assert [smp.seq for smp in smps] == [0, 1, 2]
    finally:
        stop(proc)


def test_bad_arguments():
    with pytest.raises(ValueError, match="tier"):
        Sampler(1, tier="precise")
    with pytest.raises(ValueError, match="interval"):
        Sampler(1, interval=-1)
    with pytest.raises(ValueError, match="full_every"):
        Sampler(1, full_every=0)
    s = Sampler(1)
    with pytest.raises(ValueError, match="not open"):
        s.sample()


def test_sample_is_frozen():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        with Sampler(proc.pid, tier="layout") as s:
            smp = s.sample()
        with pytest.raises(AttributeError):
            smp.rss = 0  # type: ignore[misc]
        assert smp.tier == "layout" and smp.snapshot is not None and smp.go_heap_detail is None
    finally:
        stop(proc)


def test_maps_listed_twice_are_read_again(monkeypatch):
    """A count tick's maps that lists a mapping twice (it grew between two
    of the kernel's reads) is read again; never counted twice."""
    from helpers.smapstext import OVERLAPPING

    # The interpreter settled (its start-up done): rss holds still between
    # the tick's status read and its count.
    child = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"
        with Sampler(child.pid, full_every=3600) as s:
            s.sample()
            real = s._read_maps
            texts = [OVERLAPPING]
            monkeypatch.setattr(s, "_read_maps", lambda: texts.pop() if texts else real())
            smp = counted(s)
            assert not texts and abs(sum(smp.categories.values()) - smp.rss) <= SLACK
            monkeypatch.setattr(s, "_read_maps", lambda: OVERLAPPING)
            with pytest.raises(memscan.Error, match="kept changing its mappings while its maps was read"):
                s.sample()
    finally:
        stop(child)
