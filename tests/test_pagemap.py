"""Page counts from /proc/PID/pagemap (``memscan.kernel.pagemap``, counted by
both engines) on a live C helper whose regions have known states."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memscan
from memscan.engine import pure
from memscan.kernel import pagemap, pagemap_scan, procfs
from memscan.owners.memory import TargetMemory

from helpers.engines import fast
from helpers.processes import stop

PAGE = 4096
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds the helper process")

HELPER_C = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#define PG 4096UL
#define HUGE (2UL << 20)

static void region(const char *name, char *p, size_t pages) {
    printf("%s %lx %lx\n", name, (unsigned long)p, (unsigned long)(p + pages * PG));
}

static void die(const char *what) { perror(what); exit(2); }

static void wait_stdin(void) {
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}  /* until the test closes stdin */
}

int main(int argc, char **argv) {
    volatile char sink = 0;
    if (argc > 1 && strcmp(argv[1], "idle") == 0) {
        char *p = mmap(NULL, 64 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) die("mmap");
        memset(p, 1, 64 * PG);
        region("idle", p, 64);
        wait_stdin();
        return 0;
    }

    /* MAP_SHARED: the parent writes 64 pages, a forked child maps the first
       48 by writing them (a read fault would map more: fault-around).
       Forked before the private regions exist, so that those stay
       exclusive to the parent. */
    char *sh = mmap(NULL, 64 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) die("mmap shared");
    memset(sh, 1, 64 * PG);
    int pfd[2];
    if (pipe(pfd)) die("pipe");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1) _exit(0);
        for (size_t i = 0; i < 48; i++) sh[i * PG] = 2;
        if (write(pfd[1], "x", 1) != 1) _exit(2);
        for (;;) pause();
    }
    char c;
    if (read(pfd[0], &c, 1) != 1) die("child");

    /* Private regions, each its own VMA between PROT_NONE gaps, each at a
       2 MiB boundary. */
    size_t total = 128UL << 20;
    char *res = mmap(NULL, total + HUGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (res == MAP_FAILED) die("mmap reserve");
    char *cur = (char *)(((uintptr_t)res + HUGE - 1) & ~(HUGE - 1)) + HUGE;
    struct { const char *name; size_t pages; int kind; } regions[] = {
        {"touched", 256, 0}, {"read", 256, 1}, {"untouched", 256, 2}, {"mixed", 1024, 3},
        {"frag", 16384, 4}, {"thp_read", 512, 5}, {"thp_write", 512, 6},
    };
    for (size_t r = 0; r < sizeof(regions) / sizeof(regions[0]); r++) {
        size_t n = regions[r].pages;
        int kind = regions[r].kind;
        char *p = cur;
        if (p + n * PG > res + total + HUGE) die("layout");
        if (mprotect(p, n * PG, PROT_READ | PROT_WRITE)) die("mprotect");
        madvise(p, n * PG, kind >= 5 ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        for (size_t i = 0; i < n; i++) {
            char *q = p + i * PG;
            switch (kind) {
            case 0: if (i < 100) *q = 1; break;                          /* 100 written */
            case 1: if (i < 50) sink += *q; break;                       /* 50 zero pages */
            case 3: if (i % 4 == 0) *q = 1; else if (i % 4 == 1) sink += *q; break;
            case 4: if (i % 2 == 0) *q = 1; else sink += *q; break;      /* alternating runs */
            case 5: sink += *q; break;
            case 6: *q = 1; break;
            }
        }
        region(regions[r].name, p, n);
        cur = (char *)(((uintptr_t)(p + n * PG) + PG + HUGE - 1) & ~(HUGE - 1));
    }
    region("shared", sh, 64);
    printf("child %d\n", (int)child);
    wait_stdin();
    kill(child, SIGKILL);
    return 0;
}
"""


def _thp_read_gives_zero_pages() -> bool:
    """A read fault in a MADV_HUGEPAGE range maps the (huge) zero page unless
    THP is on for it and its zero page is off."""
    base = Path("/sys/kernel/mm/transparent_hugepage")
    try:
        enabled = (base / "enabled").read_text()
        zero = (base / "use_zero_page").read_text().strip()
    except OSError:
        return True
    return "[never]" in enabled or zero == "1"


# name -> [present, swapped, exclusive, zero]
EXPECTED: Dict[str, List[int]] = {
    "touched": [100, 0, 100, 0],
    "read": [50, 0, 0, 50],
    "untouched": [0, 0, 0, 0],
    "mixed": [512, 0, 256, 256],
    "frag": [16384, 0, 8192, 8192],
    "thp_write": [512, 0, 512, 0],
    "thp_read": [512, 0, 0, 512],
    "shared": [64, 0, 16, 0],
}


class Helper:
    def __init__(self, exe: Path, *args: str) -> None:
        self.proc = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.regions: Dict[str, Tuple[int, int]] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            words = line.split()
            if words == ["ready"]:
                return
            if words[0] == "child":
                continue
            self.regions[words[0]] = (int(words[1], 16), int(words[2], 16))
        raise RuntimeError(f"helper exited early ({self.proc.wait()})")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def stop(self) -> None:
        """End the helper as it asks (EOF on stdin), killed after 10 s."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        stop(self.proc)


@pytest.fixture(scope="module")
def helper_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc builds the helper process")
    d = tmp_path_factory.mktemp("pagemap-helper")
    (d / "helper.c").write_text(HELPER_C)
    subprocess.run(["gcc", "-O1", "-o", str(d / "helper"), str(d / "helper.c")], check=True)
    return d / "helper"


@pytest.fixture(scope="module")
def helper(helper_exe: Path) -> Iterator[Helper]:
    h = Helper(helper_exe)
    try:
        yield h
    finally:
        h.stop()


def open_pagemap(pid: int) -> int:
    return os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)


def smaps_bytes(pid: int, *keys: bytes) -> Dict[Tuple[int, int], int]:
    """(start, end) -> the sum of the smaps fields ``keys`` (b"Rss:"...) in bytes, for every VMA."""
    out: Dict[Tuple[int, int], int] = {}
    key = None
    with open(f"/proc/{pid}/smaps", "rb") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if b"-" in first and not first.endswith(b":"):
                s, e = first.split(b"-")
                key = (int(s, 16), int(e, 16))
                out[key] = 0
            elif first in keys:
                assert key is not None
                out[key] += int(line.split()[1]) * 1024
    return out


def smaps_rss(pid: int) -> Dict[Tuple[int, int], int]:
    return smaps_bytes(pid, b"Rss:")


# ------------------------------------------------------------ known regions


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_region_counts(helper, engine, name):
    fd = open_pagemap(helper.pid)
    try:
        got = pagemap.page_counts(fd, [helper.regions[name]], engine)
    finally:
        os.close(fd)
    if name == "thp_read" and not _thp_read_gives_zero_pages():
        assert got[0] == 512 and got[1] == 0 and got[2] + got[3] == 512, got
    else:
        assert got == EXPECTED[name]


def test_engines_agree_on_all_regions(helper):
    ranges = sorted(helper.regions.values())
    fd = open_pagemap(helper.pid)
    try:
        results = [pagemap.page_counts(fd, ranges, e) for e in (pure, fast) if e is not None]
        results += [pagemap.page_counts_pread(fd, ranges, e) for e in (pure, fast) if e is not None]
    finally:
        os.close(fd)
    n = len(results) // 2
    assert all(r == results[0] for r in results[:n])
    # pread alone sees zero pages by PFN only when PFNs are visible (root).
    scan = results[0]
    if pagemap.zero_pfns()[0] == 0:
        scan = [0 if i % 4 == 3 else v for i, v in enumerate(scan)]
    assert all(r == scan for r in results[n:])


def test_present_minus_zero_is_smaps_rss(helper, engine):
    """Per region VMA and summed: (present - zero) pages == smaps Rss."""
    rss = smaps_rss(helper.pid)
    ranges = sorted(helper.regions.values())
    for r in ranges:
        assert r in rss, f"region {r} is not one VMA"
    fd = open_pagemap(helper.pid)
    try:
        got = pagemap.page_counts(fd, ranges, engine)
    finally:
        os.close(fd)
    resident = [(got[4 * i] - got[4 * i + 3]) * PAGE for i in range(len(ranges))]
    assert resident == [rss[r] for r in ranges]
    assert sum(resident) == sum(rss[r] for r in ranges)


def test_whole_process_matches_smaps_rss(helper, engine):
    rss = smaps_rss(helper.pid)
    ranges = sorted(rss)
    with pagemap.Pagemap(helper.pid, engine) as pm:
        got = pm.counts(ranges)
    resident = {r: (got[4 * i] - got[4 * i + 3]) * PAGE for i, r in enumerate(ranges)}
    assert resident == rss


def test_private_ranges_need_no_exclusive_bit(helper, engine):
    """Ranges of mappings smaps shows without shared pages, marked private,
    count exactly what pagemap's bit 56 gives (the shortcut is exact)."""
    shared = smaps_bytes(helper.pid, b"Shared_Clean:", b"Shared_Dirty:")
    ranges = [r for r in sorted(shared) if r[1] <= pagemap.KERNEL_HALF]
    private = bytes(shared[r] == 0 for r in ranges)
    assert 0 < sum(private) < len(ranges)  # both kinds present: shared libraries and private memory
    with pagemap.Pagemap(helper.pid, engine) as pm:
        assert pm.counts(ranges, private) == pm.counts(ranges)


@given(st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_split_ranges_add_up(helper, data):
    """Any cut of the regions into sub-ranges (and gaps) adds up to the
    regions' counts, in both engines."""
    ranges: List[Tuple[int, int]] = []
    want = [0, 0, 0, 0]
    for name in ("mixed", "frag", "touched", "read"):
        start, end = helper.regions[name]
        pages = (end - start) // PAGE
        cuts = sorted(set(data.draw(st.lists(st.integers(0, pages), max_size=12), label=name)) | {0, pages})
        pieces = [(start + a * PAGE, start + b * PAGE) for a, b in zip(cuts, cuts[1:])]
        ranges += pieces
        want = [w + e for w, e in zip(want, EXPECTED[name])]
    ranges.sort()
    fd = open_pagemap(helper.pid)
    try:
        results = [pagemap.page_counts(fd, ranges, e) for e in (pure, fast) if e is not None]
    finally:
        os.close(fd)
    assert all(r == results[0] for r in results)
    got = [sum(results[0][k::4]) for k in range(4)]
    assert got == want


@pytest.mark.parametrize("vec_len", [1, 7, 512, 513, 600, 4096])
def test_scan_continuation_is_exact(helper, engine, monkeypatch, vec_len):
    """The walk_end quirk: vectors longer than the kernel's 512-region bounce
    buffer must not double-count (16,384 runs in 'frag')."""
    monkeypatch.setattr(pagemap_scan, "VEC_LEN", vec_len)
    fd = open_pagemap(helper.pid)
    try:
        for name in ("frag", "mixed"):
            assert pagemap.page_counts(fd, [helper.regions[name]], engine) == EXPECTED[name]
    finally:
        os.close(fd)


def test_fallback_without_scan(helper, engine, monkeypatch):
    """An old kernel (ENOTTY from the ioctl): page_counts is page_counts_pread,
    PAGEMAP_SCAN is unsupported from then on and not tried again."""
    calls = []

    def no_scan(*args):
        calls.append(args)
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")

    monkeypatch.setattr(pagemap_scan, "fcntl", type("F", (), {"ioctl": staticmethod(no_scan)}))
    monkeypatch.setattr(pagemap_scan, "_supported", True)
    ranges = sorted(helper.regions.values())
    fd = open_pagemap(helper.pid)
    try:
        assert pagemap.page_counts(fd, ranges, engine) == pagemap.page_counts_pread(fd, ranges, engine)
        assert not pagemap_scan.supported() and not pagemap.has_scan() and len(calls) == 1
        pagemap.page_counts(fd, ranges, engine)
        assert len(calls) == 1
    finally:
        os.close(fd)


def test_scan_regions(helper):
    """The wrapper's words: 3 per region, sorted, inside the range asked,
    the same whatever the vector's length."""
    if not pagemap_scan.supported():
        pytest.skip("PAGEMAP_SCAN needs kernel 6.7+")
    start, end = helper.regions["frag"]
    fd = open_pagemap(helper.pid)
    try:
        got = [
            pagemap_scan.Scan(fd, pagemap.SCAN_ANYOF, pagemap.SCAN_RETURN, n).regions(start, end).tolist()
            for n in (1, 3, 4096)
        ]
    finally:
        os.close(fd)
    assert got[0] == got[1] == got[2] and len(got[0]) % 3 == 0 and got[0]
    bounds = got[0][0::3] + got[0][1::3]
    assert start <= min(bounds) and max(bounds) <= end
    assert all(a < b for a, b in zip(got[0][0::3], got[0][1::3]))


@pytest.mark.parametrize("name", ["touched", "mixed", "frag", "read"])
def test_target_memory_present_runs(helper, name):
    """TargetMemory.present: the runs of present pages that are not the zero
    page, from the same PAGEMAP_SCAN wrapper ('frag' has 16,384 runs: many
    full vectors); pread of pagemap, which cannot tell the zero page, agrees
    where there is none."""
    start, end = helper.regions[name]
    tm = TargetMemory(helper.pid, 1 << 20)
    try:
        runs = tm.present(start, end)
        pread = tm._present_pread(start, end)
    finally:
        tm.close()
    present, _, _, zero = EXPECTED[name]
    assert sum(b - a for a, b in runs) == (present - zero) * PAGE
    assert all(start <= a < b <= end for a, b in runs)
    assert all(b < c for (_, b), (c, _) in zip(runs, runs[1:]))  # sorted, merged
    if not zero:
        assert runs == pread


def test_bad_ranges(helper, engine):
    s, e = helper.regions["touched"]
    fd = open_pagemap(helper.pid)
    try:
        assert pagemap.page_counts(fd, [], engine) == []
        assert pagemap.page_counts(fd, [(s, s)], engine) == [0, 0, 0, 0]
        for bad in ([(s + 1, e)], [(e, s)], [(s, e), (s, e)], [(-PAGE, 0)], [(s, 1 << 64)]):
            with pytest.raises(ValueError):
                pagemap.page_counts(fd, bad, engine)
    finally:
        os.close(fd)


# ----------------------------------------------------- memscan.kernel.pagemap


def test_pagemap_api(helper):
    assert pagemap.has_scan() is pagemap.has_scan()
    ranges = sorted(helper.regions.values())
    with pagemap.Pagemap(helper.pid, memscan.engine.engine) as pm:
        got = pm.counts(ranges)
        # The kernel half ([vsyscall]) is no pages, not an error.
        assert pm.counts(ranges + [(0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000)]) == got + [0, 0, 0, 0]
    assert pm.fd == -1
    with pytest.raises(ValueError):
        pm.counts(ranges)
    with pagemap.Pagemap(helper.pid, pure) as pm:
        assert pm.counts(ranges) == got


def test_has_scan_matches_kernel():
    release = tuple(int(x) for x in os.uname().release.split(".")[:2] if x.isdigit())
    if release >= (6, 7):
        assert pagemap.has_scan()


def _wait_state(pid: int, state: str) -> None:
    deadline = time.monotonic() + 10
    while procfs.stat(pid).state != state:
        assert time.monotonic() < deadline, f"pid {pid} never reached state {state}"
        time.sleep(0.005)


@pytest.mark.parametrize("reaped", [False, True], ids=["zombie", "reaped"])
def test_exited_target_raises(helper_exe, reaped):
    """A target that exits while its pagemap is open: ProcessLookupError from
    the engines (SCAN: ESRCH; pread: 0 bytes), NoSuchProcess from Pagemap;
    never zero counts."""
    h = Helper(helper_exe, "idle")
    ranges = [h.regions["idle"]]
    fd = open_pagemap(h.pid)
    pm = pagemap.Pagemap(h.pid, memscan.engine.engine)
    try:
        for e in (pure, fast):
            if e is not None:
                assert pagemap.page_counts(fd, ranges, e) == [64, 0, 64, 0]
        h.kill()
        if reaped:
            h.proc.wait()
        else:
            _wait_state(h.pid, "Z")
        for e in (pure, fast):
            if e is None:
                continue
            with pytest.raises(ProcessLookupError):
                pagemap.page_counts(fd, ranges, e)
            with pytest.raises(ProcessLookupError):
                pagemap.page_counts_pread(fd, ranges, e)
        with pytest.raises(memscan.NoSuchProcess):
            pm.counts(ranges)
        with pytest.raises(memscan.NoSuchProcess):
            pagemap.Pagemap(h.pid, memscan.engine.engine)
    finally:
        os.close(fd)
        pm.close()
        stop(h.proc)


def test_open_errors():
    with pytest.raises(memscan.NoSuchProcess):
        pagemap.Pagemap(2**22 + 12345, memscan.engine.engine)  # above pid_max's ceiling: never a process
