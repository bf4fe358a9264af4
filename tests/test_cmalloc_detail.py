"""c_malloc's states (in use, free, reserved, unassigned) against programs
that print their own mallinfo2().

tests/cprogs/fragments.c mallocs many blocks of mixed sizes in the main
arena and three thread arenas, frees half of them at random (tcache,
fastbins, unsorted, small and large bins, top chunks), keeps a few mmapped
chunks, and prints mallinfo2(); "corrupt" then makes a free list cyclic.
"""

from __future__ import annotations

import json
import os

import pytest

import memscan
from memscan.core import exact
from memscan.owners import c as cmalloc
from memscan.owners.c.mappings import LimitReached

from test_cmalloc import JEMALLOC, smaps

MIB = 1 << 20


def close(a: int, b: int, rel: float = 0.02) -> bool:
    return abs(a - b) <= rel * max(b, 1)


def check_sums(snap: memscan.Snapshot) -> None:
    d = snap.c_malloc_detail
    assert d is not None and tuple(d) == exact.C_DETAIL
    for field in memscan.COUNTER_FIELDS:
        assert sum(getattr(c, field) for c in d.values()) == getattr(snap.categories["c_malloc"], field), field
        assert all(getattr(c, field) >= 0 for c in d.values()), (field, d)


@pytest.mark.parametrize("seed", [1, 2])
def test_used_and_free_match_mallinfo2(cprog, seed):
    prog = cprog("fragments", seed, "blocks=20000")
    mi = prog.report["mallinfo2"]
    r = cmalloc.c_regions(prog.pid, smaps(prog.pid))
    assert r.warnings == []
    # Read from outside, the arenas' free lists give mallinfo2's own figures.
    assert r.counters["fordblks"] == mi["fordblks"] and r.counters["uordblks"] == mi["uordblks"]
    # Bounded: a read per free chunk, not per chunk.
    assert r.bytes_read <= 24 * (mi["ordblks"] + mi["smblks"] + 8) + 16 * r.found["pages_probed"] + 256 * 1024

    snap = memscan.scan(prog.pid, tier="exact")
    check_sums(snap)
    d = snap.c_malloc_detail
    assert close(d["in_use"].size, mi["uordblks"] + mi["hblkhd"]), (d["in_use"], mi)
    assert close(d["free"].size, mi["fordblks"]), (d["free"], mi)
    # Every block was written before half were freed: the free chunks are
    # resident, the cost of fragmentation.
    assert d["free"].rss >= 0.9 * (mi["fordblks"] - mi["keepcost"]), (d["free"], mi)
    assert d["in_use"].rss >= 0.9 * mi["uordblks"]
    assert d["reserved"].rss == 0 and d["reserved"].size > 0  # thread arenas' heaps reserve 64 MiB each
    assert d["unassigned"].size == 0
    out = json.loads(json.dumps(snap.to_dict()))["c_malloc_detail"]
    assert out["free"]["size"] == d["free"].size and set(out) == set(exact.C_DETAIL)


def test_cyclic_free_list_falls_back_for_its_arena(cprog):
    prog = cprog("fragments", 3, "blocks=5000", "corrupt")
    mi = prog.report["mallinfo2"]
    r = cmalloc.c_regions(prog.pid, smaps(prog.pid))
    assert any("free lists do not validate" in w and "cycle" in w for w in r.warnings), r.warnings
    assert "fordblks" not in r.counters  # never a wrong figure
    main = [(s, e) for s, e, k in r.intervals if k == "main arena"]
    assert [(s, e) for s, e, st in r.states if st == "unassigned"] == main
    snap = memscan.scan(prog.pid, tier="exact")
    check_sums(snap)
    d = snap.c_malloc_detail
    # The main arena is unassigned; the thread arenas are still split.
    assert d["unassigned"].size == main[0][1] - main[0][0]
    assert 0 < d["free"].size < mi["fordblks"]


def test_detail_sums_with_partial_pages():
    """Bytes of free chunks outside whole pages move from in use to free;
    what is left of the category is unassigned."""
    c = memscan.Counters
    pieces = {"in_use": c(size=8192, rss=8192, pss=8192, uss=8192, anonymous=8192), "free": c(size=4096, rss=0),
              "reserved": c(size=1 << 20), "unassigned": c()}
    total = c(size=(1 << 20) + 16384, rss=12288, pss=12288, uss=12288, anonymous=12288)
    d = exact.c_malloc_detail(pieces, total, 100)
    assert d["free"] == c(size=4196, rss=100, pss=100, uss=100, anonymous=100)
    assert d["in_use"].size == 8092 and d["unassigned"] == c(size=4096, rss=4096, pss=4096, uss=4096, anonymous=4096)
    regions, partial = exact.c_state_regions([(0x1010, 0x1030, "free"), (0x1ff0, 0x4010, "free"),
                                              (0x5000, 0x9000, "reserved")])
    assert regions == [exact.Region(0x2000, 0x4000, memscan.core.exact.C_MALLOC, exact.C_FREE),
                       exact.Region(0x5000, 0x9000, memscan.core.exact.C_MALLOC, exact.C_RESERVED)]
    assert partial == 0x20 + 0x10 + 0x10


def test_scan_table_and_recording(cprog, tmp_path):
    """The scan table shows c_malloc's states; a recording has a column per
    state, filled on the full scans' rows."""
    import io

    from rich.console import Console

    from memscan import format as fmt
    from memscan import record

    prog = cprog("fragments", 4, "blocks=5000", "threads=1")
    snap = memscan.scan(prog.pid, tier="exact")
    out = io.StringIO()
    fmt.render(snap, Console(file=out, width=200))
    lines = out.getvalue().splitlines()
    labels = [line.split("│")[1].strip() for line in lines if line.count("│") > 2]
    at = labels.index("c_malloc")
    assert labels[at + 1 : at + 5] == list(exact.C_DETAIL)
    path = str(tmp_path / "c.csv")
    with memscan.Sampler(prog.pid, 1 / 100, "exact", full_every=0.1, polite=False) as sampler, \
            record.Writer(path, record.header(prog.pid, tier="exact", hz=100, full_every=0.1)) as writer:
        record.record(sampler, writer, duration=0.3)
    rows = record.read(path).rows
    full = [r for r in rows if r["pss"] is not None]
    assert full and all(r["c_malloc.free"] > 0 and r["c_malloc.in_use"] > 0 for r in full)
    assert all(r["c_malloc.reserved"] == r["c_malloc.unassigned"] == 0 for r in full)  # resident bytes


def test_explain_fragmentation(cprog):
    """Half of every arena freed and still resident: a fragmentation finding
    with glibc's remedies, not a leak."""
    from memscan import explain

    prog = cprog("fragments", 5, "blocks=20000")
    doc = explain.report([memscan.scan(prog.pid, tier="exact")])
    found = {f["id"]: f for f in doc["findings"]}
    frag = found["c_fragmentation"]
    assert frag["severity"] == "notice" and frag["numbers"]["free_rss_bytes"] >= 20 * MIB
    assert all(word in frag["text"] for word in ("MALLOC_ARENA_MAX", "malloc_trim", "M_TRIM_THRESHOLD"))
    assert "c_in_use_growing" not in found


def test_explain_c_leak_over_a_watch(cprog):
    """In-use C memory growing over `--for`: a leak warning."""
    from memscan import explain

    prog = cprog("fragments", 6, "blocks=2000", "threads=1", "leak")
    doc = explain.run(prog.pid, tier="exact", seconds=2.5)
    found = {f["id"]: f for f in doc["findings"]}
    assert found["c_in_use_growing"]["severity"] == "warning", doc["findings"]
    assert found["c_in_use_growing"]["numbers"]["in_use_growth_bytes"] >= 8 * MIB


def test_explain_names_the_largest_category(cprog):
    """No rule fires, yet one category holds most of the memory: say so,
    never "Nothing stands out"."""
    import io

    from rich.console import Console

    from memscan import explain

    prog = cprog("fragments", 7, "blocks=20000", "threads=0", "mmaps=0")
    snap = memscan.scan(prog.pid, tier="exact")
    snap.c_malloc_detail = None  # as under an allocator whose chunks are not read
    doc = explain.report([snap])
    assert [f["id"] for f in doc["findings"]] == ["most_memory"], doc["findings"]
    assert "c_malloc" in doc["findings"][0]["title"]
    out = io.StringIO()
    explain.render(doc, Console(file=out, width=200))
    assert "Nothing stands out" not in out.getvalue()


@pytest.mark.skipif(not os.path.exists(JEMALLOC), reason=f"{JEMALLOC} not installed (apt-get install libjemalloc2)")
def test_preloaded_allocator_lazy_free_and_warning(cprog):
    """Under jemalloc, whose structures are not read: its memory is
    unassigned but for the pages it purged lazily, and a warning says why."""
    prog = cprog("mallocs", 2, "plain", env={"LD_PRELOAD": JEMALLOC})
    snap = memscan.scan(prog.pid, tier="exact")
    check_sums(snap)
    d = snap.c_malloc_detail
    assert any("jemalloc owns malloc" in w and "LazyFree" in w for w in snap.warnings), snap.warnings
    assert d["in_use"].size == 0 and d["unassigned"].rss >= prog.report["touched"] * 0.9
    assert d["free"].rss == d["free"].lazyfree == snap.categories["c_malloc"].lazyfree


def test_exporter_and_watch(cprog):
    """The exporter's memscan_c_malloc_detail_rss_bytes, and watch's rows."""
    import io

    from rich.console import Console

    from memscan import export, watch
    from test_export import by, scrape, series

    prog = cprog("fragments", 8, "blocks=5000", "threads=1")
    samples = scrape(export.MemscanCollector(export.Targets([prog.pid]), tier="exact"))
    detail = by(series(samples, "memscan_c_malloc_detail_rss_bytes", pid=str(prog.pid)), "state")
    assert list(detail) == list(exact.C_DETAIL) and detail["free"] > 0 and detail["in_use"] > 0
    with memscan.Sampler(prog.pid, 1 / 50, "exact", full_every=0.05, polite=False) as sampler:
        samples = [sampler.sample() for _ in range(3)]
    out = io.StringIO()
    Console(file=out, width=200).print(watch.view(samples, 10.0))
    labels = [line.split("│")[1].strip() for line in out.getvalue().splitlines() if line.count("│") > 2]
    at = labels.index("c_malloc")
    assert labels[at + 1 : at + 5] == list(exact.C_DETAIL), labels


def test_plot_has_a_c_malloc_panel(cprog, tmp_path):
    from memscan import plot, record

    prog = cprog("fragments", 9, "blocks=5000", "threads=1")
    path = str(tmp_path / "c.jsonl")
    with memscan.Sampler(prog.pid, 1 / 50, "exact", full_every=0.05, polite=False) as sampler, \
            record.Writer(path, record.header(prog.pid, tier="exact", hz=50, full_every=0.05)) as writer:
        record.record(sampler, writer, duration=0.4)
    fig = plot.figure(record.read(path))
    titles = [a.get_title() for a in fig.axes]
    assert titles[-1].startswith("c_malloc by the state"), titles
    assert plot.plot(path, str(tmp_path / "c.png")).endswith("c.png")


class _File:
    """A target memory that is a file: addresses are offsets in it; reads
    capped at ``limit`` bytes, as TargetMemory caps them; the page at
    ``absent`` (if not 0) not present."""

    def __init__(self, path: str, limit: int, absent: int) -> None:
        self.mem = os.open(path, os.O_RDONLY)
        self.charged = 0
        self.limit = limit
        self.absent = absent

    def present(self, lo: int, hi: int):  # type: ignore[no-untyped-def]
        if lo <= self.absent < hi:
            return [(lo, self.absent), (self.absent + 4096, hi)]
        return [(lo, hi)]

    def charge(self, n: int) -> None:
        if self.charged + n > self.limit:
            raise LimitReached("over the cap")
        self.charged += n

    def room(self, n: int) -> int:
        return (self.limit - self.charged) // n


def _arena(tmp_path, chunks, fastbin0=0, unsorted=None, safe_linking=True,  # type: ignore[no-untyped-def]
           limit=1 << 20, absent=0):
    """An arena at 0x1000 with one heap [0x10000, 0x20000) and a top chunk
    at 0x1f000; ``chunks``: address -> (size word, fd) (the top's too, if
    given)."""
    import struct as st
    from types import SimpleNamespace

    from memscan.owners.c import bins, glibc

    ar = 0x1000
    state = [0] * (glibc.MS_SIZE // 8)
    for j in range(glibc.NBINS_PAIRS):
        state[glibc.MS_BINS // 8 + 2 * j] = state[glibc.MS_BINS // 8 + 2 * j + 1] = ar + glibc.MS_BINS + 16 * j - 16
    state[bins.MS_FASTBINS // 8] = fastbin0
    if unsorted is not None:
        state[glibc.MS_BINS // 8] = unsorted
    state[glibc.MS_TOP // 8] = 0x1F000
    image = bytearray(0x20000)
    for addr, (size_word, fd) in {0x1F000: (0x1001, 0), **chunks}.items():
        st.pack_into("<QQQ", image, addr, 0, size_word, fd)
    path = tmp_path / "mem"
    path.write_bytes(bytes(image))
    maps = SimpleNamespace(tgt=_File(str(path), limit, absent))
    return bins.Arena(maps, ar, state, [(0x10000, 0x20000)], safe_linking)  # type: ignore[arg-type]


def _protect(pos: int, ptr: int) -> int:
    return ((pos + 16) >> 12) ^ ptr  # glibc 2.32+ PROTECT_PTR of a chunk's fd


def test_free_lists_of_a_synthetic_arena(tmp_path):
    from memscan.owners.c import bins, glibc

    head = 0x1000 + glibc.MS_BINS - 16
    ok = {0x10000: (0x21, _protect(0x10000, 0x10040)), 0x10040: (0x21, _protect(0x10040, 0)),
          0x10100: (0x201, head)}
    a = _arena(tmp_path, ok, fastbin0=0x10000, unsorted=0x10100)
    assert a.free_chunks() == [(0x10000, 0x10020), (0x10040, 0x10060), (0x10100, 0x10300), (0x1F000, 0x20000)]
    assert a.maps.tgt.charged == 24 * 4  # one read per free chunk
    bad = [
        ({**ok, 0x10040: (0x31, _protect(0x10040, 0))}, "fastbin 0 holds a chunk of 48 bytes"),
        ({**ok, 0x10000: (0x21, _protect(0x10000, 0x10000))}, "met twice"),
        ({**ok, 0x10100: (0x201, 0x10400), 0x10400: (0x201, 0x10100)}, "met twice"),
        ({**ok, 0x10100: (0x201, 0x1F000), 0x1F000: (0x1001, head)}, "overlap"),  # the top in a list
        ({**ok, 0x10100: (0x201, 0x30000)}, "outside the arena's heaps"),
        ({**ok, 0x10100: (0x201, 0x10108)}, "misaligned"),
        ({**ok, 0x10100: (0x100001, head)}, "size word"),
    ]
    for chunks, why in bad:
        with pytest.raises(bins.BadList, match=why):
            _arena(tmp_path, chunks, fastbin0=0x10000, unsorted=0x10100).free_chunks()
    # A header on a page not present is not read, whole or in part.
    for p in (0x12000, 0x11FF0):
        chunks = {**ok, 0x10100: (0x201, p), p: (0x21, head)}
        with pytest.raises(bins.BadList, match="not present"):
            _arena(tmp_path, chunks, fastbin0=0x10000, unsorted=0x10100, absent=0x12000).free_chunks()
    assert _arena(tmp_path, {**ok, 0x10100: (0x201, 0x13000), 0x13000: (0x21, head)}, fastbin0=0x10000,
                  unsorted=0x10100, absent=0x12000).free_chunks()[3] == (0x13000, 0x13020)
    # The cap stops the walk where a read would go over it, the reads made charged.
    capped = _arena(tmp_path, ok, fastbin0=0x10000, unsorted=0x10100, limit=24 * 2 + 23)
    with pytest.raises(LimitReached):
        capped.free_chunks()
    assert capped.maps.tgt.charged == 24 * 2
    # glibc before 2.32 stores fd as it is.
    plain = {0x10000: (0x21, 0)}
    assert _arena(tmp_path, plain, fastbin0=0x10000, safe_linking=False).free_chunks()[0] == (0x10000, 0x10020)
    # Version unknown: whichever reading points into the arena.
    assert _arena(tmp_path, ok, fastbin0=0x10000, unsorted=0x10100, safe_linking=None).free_chunks() == \
        a.free_chunks()
