"""The exact tier: Go heap arenas split by the runtime's page states, checked
against the programs' own accounting (runtime.MemStats)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import memscan
from memscan.core import exact

from helpers import gotoolchain
from helpers.goprogram import c_shared_demo, scan_once_started
from helpers.processes import stop

MIB = 1 << 20
HEAP_ARGS = ("-heap", 64, "-garbage", 32, "-goroutines", 50)
C_ARGS = ("-cmalloc", 32, "-csmall", 500, "-cthreads", 2)
CASES = [pytest.param(v, cgo, id=f"go{v}-{'cgo' if cgo else 'nocgo'}")
         for v in gotoolchain.GO_VERSIONS for cgo in (False, True)]


@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**6), min_size=1, max_size=20))
def test_shares_add_up(total, weights):
    parts = exact.shares(total, weights)
    assert sum(parts) == total and all(p >= 0 for p in parts)
    if sum(weights):
        assert all(p == 0 for p, w in zip(parts, weights) if w == 0)


def test_cut_and_combine():
    a = 0xC000000000
    heap = [exact.Region(a, a + 8 * MIB, 0, 0), exact.Region(a + 8 * MIB, a + 9 * MIB, 0, 1),
            exact.Region(a + 9 * MIB, a + 64 * MIB, 0, 3)]
    other = [exact.Region(a - 8192, a + 4096, 2)]  # overlaps the heap: the heap wins
    regions, conflict = exact.combine([heap, other])
    assert conflict == 4096
    assert regions[0] == exact.Region(a - 8192, a, 2) and regions[1] == heap[0]
    starts = [r.start for r in regions]
    pieces = exact.cut(a - 3 * 4096, a + 40 * MIB, regions, starts, 9)
    assert [(p.category, p.detail) for p in pieces] == [(9, -1), (2, -1), (0, 0), (0, 1), (0, 3)]
    assert pieces[0].start == a - 3 * 4096 and pieces[-1].end == a + 40 * MIB
    assert all(x.end == y.start for x, y in zip(pieces, pieces[1:]))


def close(value, want, rel, floor):
    return abs(value - want) <= max(want * rel, floor)


def check_exact(snap, ms):
    d = snap.go_heap_detail
    assert snap.tier == "exact" and d is not None
    heap = snap.categories["go_heap"]
    for field in memscan.COUNTER_FIELDS:
        assert sum(getattr(c, field) for c in d.values()) == getattr(heap, field), field
        assert sum(getattr(c, field) for c in snap.categories.values()) == getattr(snap.total, field), field
    assert close(d["objects"].size, ms["HeapInuse"], 0.01, 0), (d["objects"].size, ms["HeapInuse"])
    assert close(d["stacks"].size, ms["StackInuse"], 0.10, 256 * 1024), (d["stacks"].size, ms["StackInuse"])
    assert close(d["free"].size, ms["HeapIdle"] - ms["HeapReleased"], 0.01, 512 * 1024)
    assert close(d["released"].size, ms["HeapReleased"], 0.01, 512 * 1024)
    assert d["reserved"].rss == 0
    # Every resident page has an owner: what is left is at most 1% of RSS.
    assert snap.categories["anon_other"].rss <= snap.total.rss / 100, snap.categories["anon_other"]


@pytest.mark.slow
@pytest.mark.parametrize("version,cgo", CASES)
def test_go_heap_detail_matches_memstats(go_program, version, cgo):
    prog = go_program(version=version, cgo=cgo, args=HEAP_ARGS + (C_ARGS if cgo else ()))
    ms = prog.command("stats")["memstats"]
    snap = memscan.scan(prog.pid, tier="exact")
    check_exact(snap, ms)
    d = snap.go_heap_detail
    # The live heap was written to: resident. Freed heap the runtime keeps is resident too.
    assert d["objects"].rss >= ms["HeapInuse"] - 4 * MIB
    if cgo:
        # C memory: at least what the program touched, at most what glibc holds.
        rep = prog.report
        mi = rep["mallinfo2"]
        c = snap.categories["c_malloc"].rss
        assert rep["c_touched"] - MIB <= c <= mi["arena"] + mi["hblkhd"] + 2 * MIB, (c, rep["c_touched"], mi)
        # Its states as the program's own mallinfo2() counts them.
        cd = snap.c_malloc_detail
        assert close(cd["in_use"].size, mi["uordblks"] + mi["hblkhd"], 0.02, 0), (cd, mi)
        assert close(cd["free"].size, mi["fordblks"], 0.02, 0), (cd, mi)
        # Every M runs on a glibc pthread stack.
        assert snap.categories["thread_stacks"].size >= 2 * 8 * MIB
    assert memscan.scan(prog.pid).tier == "exact"  # auto picks exact where permitted

    prog.command("free")
    # The report of "free" allocates after reading MemStats: ask again.
    ms = prog.command("stats")["memstats"]
    snap = memscan.scan(prog.pid, tier="exact")
    check_exact(snap, ms)
    # FreeOSMemory released with MADV_DONTNEED (Go 1.16+): released pages leave RSS.
    assert snap.go_heap_detail["released"].size >= 64 * MIB
    assert snap.go_heap_detail["released"].rss <= 1 * MIB


@pytest.mark.slow
@pytest.mark.parametrize("version", gotoolchain.GO_VERSIONS)
def test_madv_free_released_pages_stay_resident(go_program, version):
    prog = go_program(version=version, args=HEAP_ARGS, env={"GODEBUG": "madvdontneed=0"})
    prog.command("free")
    snap = memscan.scan(prog.pid, tier="exact")
    released = snap.go_heap_detail["released"]
    # The kernel keeps MADV_FREE'd pages until it needs them: in RSS, as LazyFree.
    assert released.rss >= 60 * MIB
    assert snap.categories["go_heap"].lazyfree == snap.total.lazyfree
    # All of it released, but for the pages the runtime took back meanwhile
    # (its background work allocates): a page reused but not yet written is
    # still LazyFree (mm/madvise.c clears it only when the page is dirtied).
    assert 0 <= snap.categories["go_heap"].lazyfree - released.lazyfree <= 64 * 1024
    assert close(released.lazyfree, released.rss, 0.02, 2 * MIB)


@pytest.mark.slow
@pytest.mark.parametrize("ldflags", ["-w", "-s -w"])
def test_binaries_without_dwarf(go_program, ldflags):
    """-w keeps symbols: the shipped layout tables give the offsets; -s -w
    has no symbols either: the heap index is found by its shape."""
    from memscan.demo import build as gobuild

    version = gotoolchain.GO_VERSIONS[-1]
    binary = gobuild.build(gobuild.DEMO_DIR, goroot=gotoolchain.goroot(version), cgo=False, ldflags=ldflags,
                           out_name="demo-stripped")
    import subprocess

    proc = subprocess.Popen([binary, *map(str, HEAP_ARGS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        import json

        proc.stdout.readline()
        proc.stdin.write("stats\n")
        proc.stdin.flush()
        ms = json.loads(proc.stdout.readline())["memstats"]
        check_exact(memscan.scan(proc.pid, tier="exact"), ms)
    finally:
        stop(proc)


@pytest.mark.slow
def test_without_ptrace_rights_auto_says_why(go_program):
    """Root without CAP_SYS_PTRACE may read smaps but not /proc/PID/mem of a
    root process (commoncap): auto shows the layout tier and says why; the
    exact tier asked for is one clear line in the CLI."""
    import json
    import shutil
    import subprocess
    import sys

    import os

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop CAP_SYS_PTRACE")
    prog = go_program(version=gotoolchain.GO_VERSIONS[-1], args=HEAP_ARGS)
    drop = ["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace", sys.executable, "-m", "memscan"]
    out = subprocess.run([*drop, "scan", str(prog.pid), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert snap["tier"] == "layout" and snap["go_heap_detail"] is None
    assert any("ptrace-attach" in w for w in snap["warnings"]), snap["warnings"]
    refused = subprocess.run([*drop, "scan", str(prog.pid), "--tier", "exact"], capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "ptrace-attach" in refused.stderr


JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


@pytest.mark.parametrize("preload", [None, JEMALLOC], ids=["glibc", "jemalloc"])
def test_c_program(cprog, preload):
    """A C program: its malloc'ed memory is c_malloc, its threads' stacks are
    thread_stacks, its own mmap is not malloc's, and nothing is left over."""
    import os

    if preload and not os.path.exists(preload):
        pytest.fail(f"{preload} is missing: .ci/run installs libjemalloc2")
    prog = cprog("mallocs", 3, *(["plain"] if preload else []), env={"LD_PRELOAD": preload} if preload else None)
    snap = memscan.scan(prog.pid, tier="exact")
    rep = prog.report
    mi = rep["mallinfo2"]
    c = snap.categories["c_malloc"].rss
    assert snap.tier == "exact" and snap.go is None
    if preload is None:
        assert rep["touched"] - MIB <= c <= mi["arena"] + mi["hblkhd"] + 2 * MIB, (c, rep["touched"], mi)
    else:
        assert c >= rep["touched"] * 0.9
    assert snap.categories["thread_stacks"].size >= 3 * 8 * MIB
    # The program's own mmap (not malloc's) is the only anonymous memory no owner claims.
    foreign = rep["foreign"][1]
    assert foreign <= snap.categories["anon_other"].rss <= foreign + snap.total.rss / 100, snap.categories["anon_other"]
    for field in memscan.COUNTER_FIELDS:
        assert sum(getattr(x, field) for x in snap.categories.values()) == getattr(snap.total, field)


def test_no_go_heap_detail_without_go(cprog, tmp_path):
    """A process with no Go runtime has no Go heap to detail: None, not a
    dict of zeros, in the API, in JSON and in a recording's CSV."""
    import json

    from memscan import record

    prog = cprog("mallocs", 1)
    snap = memscan.scan(prog.pid, tier="exact")
    assert snap.tier == "exact" and snap.go is None and snap.go_heap_detail is None
    assert json.loads(json.dumps(snap.to_dict()))["go_heap_detail"] is None
    path = str(tmp_path / "c.csv")
    with memscan.Sampler(prog.pid, 1 / 100, "exact", full_every=0.1, polite=False) as sampler, \
            record.Writer(path, record.header(prog.pid, tier="exact", hz=100, full_every=0.1)) as writer:
        record.record(sampler, writer, duration=0.3)
    rows = record.read(path).rows
    assert len(rows) >= 2 and all(r["tier"] == "exact" for r in rows)
    assert all(r[f"go_heap.{d}"] is None for r in rows for d in exact.DETAIL)


@pytest.mark.slow
def test_cgo_program_under_jemalloc(go_program):
    """A cgo program with jemalloc preloaded: jemalloc's regions hold its C
    memory; the Go heap is still split by the runtime's page states."""
    import os

    if not os.path.exists(JEMALLOC):
        pytest.fail(f"{JEMALLOC} is missing: .ci/run installs libjemalloc2")
    prog = go_program(version=gotoolchain.GO_VERSIONS[-1], cgo=True, args=HEAP_ARGS + C_ARGS,
                      env={"LD_PRELOAD": JEMALLOC})
    ms = prog.command("stats")["memstats"]
    snap = memscan.scan(prog.pid, tier="exact")
    assert snap.allocator == "jemalloc"
    check_exact(snap, ms)
    assert snap.categories["c_malloc"].rss >= prog.report["c_touched"] - MIB


@pytest.mark.slow
def test_c_shared_library_in_a_c_host(cprog):
    """A Go c-shared library in a C host: every resident page has an owner."""
    lib = c_shared_demo(gotoolchain.GO_VERSIONS[-1])
    snap = scan_once_started(cprog("dlhost", lib).pid, "exact")
    assert snap.go.path == lib and snap.go_heap_detail["objects"].size > 0
    assert snap.categories["anon_other"].rss <= snap.total.rss / 100, snap.categories["anon_other"]


@pytest.mark.slow
def test_the_engine_asked_for_does_every_step(go_program, monkeypatch):
    """scan(engine="python") parses and counts with the pure-Python engine
    everywhere, the exact tier's owners included: with every function of
    the Cython engine broken, the scan is the same as the Cython one's."""
    from memscan.engine import ENGINES

    if "cython" not in ENGINES:
        pytest.fail("the Cython engine is not built: pip install builds it")
    prog = go_program(version=gotoolchain.GO_VERSIONS[-1], cgo=True, args=HEAP_ARGS + C_ARGS)
    ms = prog.command("stats")["memstats"]
    fast = memscan.scan(prog.pid, tier="exact")

    def broken(*args, **kwargs):
        raise AssertionError("the Cython engine was used")

    for name in ENGINES["python"].__all__:  # every kernel (tests/test_engine_protocol.py)
        monkeypatch.setattr(ENGINES["cython"], name, broken)
    memscan.clear_caches()
    pure = memscan.scan(prog.pid, tier="exact", engine="python")
    assert pure.engine == "python" and pure.tier == "exact" and not pure.warnings
    check_exact(pure, ms)
    assert pure.categories["c_malloc"].size == fast.categories["c_malloc"].size
    assert pure.categories["thread_stacks"].size == fast.categories["thread_stacks"].size
