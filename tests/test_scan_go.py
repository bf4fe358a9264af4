"""The layout tier on real Go programs, checked against their own accounting
(runtime.MemStats, mallinfo2, bytes of C memory touched)."""

from __future__ import annotations

import os

import pytest

import memscan
from memscan.engine import ENGINES, pure
from memscan.kernel import procfs
from memscan.layout import context as layout
from memscan._types import CATEGORIES

from helpers import gotoolchain
from helpers.goprogram import c_shared_demo, scan_once_started
from helpers.processes import stop

pytestmark = pytest.mark.slow

MIB = 1 << 20
# Pages of runtime spans the program has not touched yet, and rounding.
SLACK = 4 * MIB
HEAP_ARGS = ("-heap", 64, "-garbage", 32, "-goroutines", 50)
C_ARGS = ("-cmalloc", 32, "-csmall", 500, "-cthreads", 2)
CASES = [pytest.param(v, cgo, id=f"go{v}-{'cgo' if cgo else 'nocgo'}")
         for v in gotoolchain.GO_VERSIONS for cgo in (False, True)]


def start(go_program, version, cgo):
    return go_program(version=version, cgo=cgo, args=HEAP_ARGS + (C_ARGS if cgo else ()))


def check_partition(snap):
    cats = snap.categories
    assert set(cats) == set(CATEGORIES)
    for field in ("size", "rss", "uss", "shared", "anonymous", "swap", "lazyfree", "anon_huge"):
        assert sum(getattr(c, field) for c in cats.values()) == getattr(snap.total, field), field
    pss = sum(c.pss for c in cats.values())
    assert abs(pss - snap.total.pss) <= snap.total.pss / 1000


@pytest.mark.parametrize("version,cgo", CASES)
def test_layout_against_the_programs_accounting(go_program, version, cgo):
    prog = start(go_program, version, cgo)
    rep = prog.command("stats")
    snap = memscan.scan(prog.pid, tier="layout")
    ms = rep["memstats"]
    cats = snap.categories

    check_partition(snap)
    assert snap.tier == "layout" and snap.source == "smaps"
    assert snap.go is not None and snap.go.version == rep["go_version"] and snap.go.cgo == cgo
    assert snap.allocator == ("glibc" if cgo else None)

    # The Go heap: at least what is in use (objects and goroutine stacks),
    # at most what the runtime holds and has not returned to the OS.
    low = ms["HeapInuse"] + ms["StackInuse"] - SLACK
    high = ms["HeapSys"] - ms["HeapReleased"] + ms["StackInuse"] + SLACK
    assert low <= cats["go_heap"].rss <= high, (low, cats["go_heap"].rss, high)
    # Arenas are reserved in 64 MiB units; the mapped part holds HeapSys + StackInuse.
    assert cats["go_heap"].size % (64 * MIB) == 0
    assert cats["go_heap"].size >= ms["HeapSys"] + ms["StackInuse"]

    assert cats["binary"].rss > 0
    assert cats["kernel"].size > 0  # vdso, vvar
    if cgo:
        assert cats["shared_libs"].rss > 0
        # The small mallocs (20,000 B, served from glibc arenas, as cgo calls
        # run on threads other than the main one) and the C threads' memory.
        mi = rep["mallinfo2"]
        touched = rep["c_small"] + rep["c_threads"]
        assert touched - MIB <= cats["c_malloc"].rss <= mi["arena"] + 2 * MIB, (touched, cats["c_malloc"].rss, mi)
        # Every Go M of a cgo program runs on a glibc pthread stack.
        assert cats["thread_stacks"].size >= 2 * 8 * MIB
    else:
        # A static Go program: no libraries, no C allocator; all anonymous
        # memory is the runtime's.
        assert cats["shared_libs"].size == 0 and cats["c_malloc"].size == 0
        assert cats["anon_other"].rss == 0
        assert cats["go_runtime"].rss > 0


@pytest.mark.parametrize("version", gotoolchain.GO_VERSIONS)
def test_freed_heap_goes_back(go_program, version):
    prog = start(go_program, version, False)
    before = memscan.scan(prog.pid, tier="layout").categories["go_heap"].rss
    rep = prog.command("free")
    after = memscan.scan(prog.pid, tier="layout").categories["go_heap"].rss
    ms = rep["memstats"]
    # debug.FreeOSMemory() released the freed heap with MADV_DONTNEED (Go 1.16+).
    assert before - after >= 64 * MIB - SLACK
    assert after <= ms["HeapSys"] - ms["HeapReleased"] + ms["StackInuse"] + SLACK


def test_cgo_leak_shows_outside_the_go_heap(go_program):
    prog = start(go_program, gotoolchain.GO_VERSIONS[-1], True)
    before = memscan.scan(prog.pid, tier="layout")
    rep = prog.command("cleak 48")
    after = memscan.scan(prog.pid, tier="layout")
    grown = after.total.rss - before.total.rss
    assert grown >= 48 * MIB - SLACK
    # MemStats does not see it; memscan sees it outside the Go heap.
    go_grown = after.categories["go_heap"].rss - before.categories["go_heap"].rss
    assert abs(go_grown) < SLACK
    assert rep["memstats"]["HeapInuse"] < 80 * MIB


@pytest.mark.parametrize("version,cgo", CASES)
def test_engines_agree_on_a_go_process(go_program, version, cgo):
    """Both engines over the same bytes of a live Go process's smaps."""
    prog = start(go_program, version, cgo)
    data = bytes(procfs.read(prog.pid, "smaps", bytearray(), pure))
    results = []
    for name, eng in sorted(ENGINES.items()):
        t = eng.parse_smaps(data)
        lay = layout.context(prog.pid, t)
        results.append((t, eng.classify(t, lay.context), eng.accumulate(t, eng.classify(t, lay.context))))
    assert all(r == results[0] for r in results)
    if len(ENGINES) < 2:
        pytest.skip("only the pure engine is built: nothing to compare it with")


def test_cli_scan_json_and_ps(go_program):
    import json
    import subprocess
    import sys

    prog = start(go_program, gotoolchain.GO_VERSIONS[-1], False)
    out = subprocess.run([sys.executable, "-m", "memscan", "scan", str(prog.pid), "--json"],
                         capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    assert set(d) == {"pid", "time", "source", "tier", "engine", "total", "categories", "go_heap_detail",
                      "c_malloc_detail", "runtime", "warnings", "command", "executable"}
    assert d["command"] == "memscandemo" and d["executable"] == d["runtime"]["go"]["path"]
    assert d["tier"] == "exact" and set(d["go_heap_detail"]) == {"objects", "stacks", "free", "released", "reserved"}
    assert d["c_malloc_detail"] is None  # a Go program without cgo has no C allocator
    assert d["runtime"]["go"]["version"] == prog.report["go_version"]
    table = subprocess.run([sys.executable, "-m", "memscan", "scan", str(prog.pid)],
                           capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "120"}).stdout
    assert "go_heap" in table and prog.report["go_version"] in table
    ps = json.loads(subprocess.run([sys.executable, "-m", "memscan", "ps", "--json"],
                                   capture_output=True, text=True, check=True).stdout)
    assert any(p["pid"] == prog.pid and (p["go"] or {}).get("version") == prog.report["go_version"] for p in ps)


def test_demo_command(tmp_path):
    """memscan demo --quick: the phases recorded, plotted and explained, in under 20 s (the build aside)."""
    import subprocess
    import sys
    import time

    from memscan import demo, plot, record
    from memscan.demo import build as gobuild

    gobuild.build(gobuild.DEMO_DIR, goroot=gobuild.find_goroot(), cgo=True, out_name="memscan-demo")  # cached
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "memscan", "demo", "--quick", "-o", str(out)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "120"})
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert seconds < 20, seconds
    rec = record.read(str(out / "demo.csv"))
    assert plot.title_command(rec.meta).startswith("memscan-demo -goroutines 100 ")  # not the build cache's path
    phases = [ev["name"] for ev in rec.events if ev["event"] == "phase"]
    assert phases == [p.title for p in demo.phases(cgo=True, quick=True)]
    assert rec.end is not None and rec.end["reason"] == "end of the demo"
    assert (out / "demo.png").stat().st_size > 10_000
    # Each phase shows in the figures: the live heap, its pages kept as free,
    # then released, then C memory growing while the Go heap is flat. (A
    # sample whose heap read raced the allocating program is a layout-tier
    # one, without the heap's page states.)
    assert max(v or 0 for v in rec.column("go_heap.objects")) >= 64 * MIB
    assert all(r["tier"] == "layout" for r in rec.rows if r.get("go_heap.objects") is None)
    assert max(v or 0 for v in rec.column("go_heap.free")) >= 48 * MIB
    assert rec.column("c_malloc")[-1] - min(rec.column("c_malloc")) >= 32 * MIB
    # The plot shows no anon_other spikes at the allocation and leak steps,
    # and nothing resident in address space the runtime has not grown into:
    # a sample whose owners a count contradicts has them read again first.
    exact_rows = [r for r in rec.rows if r["tier"] == "exact"]
    assert exact_rows and all(r["anon_other"] <= 0.01 * r["rss"] for r in exact_rows), \
        max(r["anon_other"] for r in exact_rows)
    assert all(r["go_heap.reserved"] == 0 for r in exact_rows), max(r["go_heap.reserved"] for r in exact_rows)
    assert "go_heap" in proc.stdout and "C memory grew" in proc.stdout and "likely cgo leak" in proc.stdout


def test_go_in_a_c_shared_library_of_a_python_host(tmp_path):
    """A Go runtime inside a non-Go host is found from the library's
    .go.buildinfo; the exact tier reads its heap through the load bias."""
    import subprocess
    import sys

    version = gotoolchain.GO_VERSIONS[-1]
    lib = c_shared_demo(version)
    host = subprocess.Popen(
        [sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1]); print('loaded', flush=True); "
         "sys.stdin.read()", lib], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout.readline().strip() == "loaded"
        snap = scan_once_started(host.pid, "layout")
        assert snap.go is not None and snap.go.path == lib and snap.go.version == f"go{version}"
        assert snap.allocator == "glibc"
        # The library's own Go runtime has its heap arenas in this process.
        assert snap.categories["go_heap"].size >= 64 * MIB
        assert snap.categories["shared_libs"].rss > 0
        exact = memscan.scan(host.pid, tier="exact")
        assert exact.go_heap_detail["objects"].size > 0
        assert sum(c.size for c in exact.go_heap_detail.values()) == exact.categories["go_heap"].size
        # The Python host's own memory (pymalloc arenas are plain mmaps, not
        # malloc's) is the one owner memscan does not read: it stays anon_other.
        assert exact.categories["c_malloc"].rss > 0 and exact.categories["go_runtime"].rss > 0
    finally:
        stop(host)
