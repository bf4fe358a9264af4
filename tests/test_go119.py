"""The exact tier on Go 1.19, the Go Debian 12 builds its packages with
(golang-1.19-go, go1.19.8; .ci/run installs it and Debian's prometheus):

- the demo built with that toolchain, cgo and not, with DWARF, stripped
  (``-ldflags=-s -w``: the layout table and the symbol-less search) and as
  a PIE: page states against its own MemStats, every resident page owned;
- Debian's own prometheus (go1.19.8, stripped, cgo): page states against
  its own ``/metrics`` (``go_memstats_*``), every resident page owned.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

import memscan

from helpers.goheap import MiB, check_against_memstats
from helpers.goprogram import GoProgram, GoPrograms
from helpers.gotoolchain import GO_1_19
from helpers.processes import free_port

ARGS = ("-heap", 64, "-garbage", 32, "-goroutines", 50)
C_ARGS = ("-cmalloc", 32, "-csmall", 500, "-cthreads", 2)
PROMETHEUS = "/usr/bin/prometheus"

BUILDS = [
    pytest.param(False, "", "exe", id="nocgo"),
    pytest.param(True, "", "exe", id="cgo"),
    pytest.param(False, "-s -w", "exe", id="nocgo-stripped"),
    pytest.param(True, "-s -w", "exe", id="cgo-stripped"),
    pytest.param(False, "", "pie", id="nocgo-pie"),
    pytest.param(True, "-s -w", "pie", id="cgo-stripped-pie"),
]


@pytest.fixture
def built(tmp_path) -> Iterator[Callable[..., GoProgram]]:
    """``built(cgo, ldflags, buildmode)``: the demo built with Go 1.19, started."""
    started: List[GoPrograms] = []

    def start(cgo: bool, ldflags: str, buildmode: str) -> GoProgram:
        progs = GoPrograms(str(tmp_path), ldflags, buildmode)
        started.append(progs)
        return progs.start(version=GO_1_19, cgo=cgo, args=ARGS + (C_ARGS if cgo else ()))

    try:
        yield start
    finally:
        for progs in started:
            progs.stop_all()


def check_owned(snap: memscan.Snapshot) -> None:
    """Every resident page has an owner: what is left is at most 1% of RSS."""
    assert snap.categories["anon_other"].rss <= snap.total.rss / 100, \
        f"anon_other {snap.categories['anon_other'].rss / MiB:.3f} MiB of {snap.total.rss / MiB:.1f} MiB"


def quiet_scan(prog: GoProgram, tries: int = 5) -> Tuple[Dict[str, int], memscan.Snapshot]:
    """MemStats and an exact scan of a moment the background scavenger left
    alone (a young program releases megabytes at a time): the scan between
    two MemStats that agree on HeapReleased, within a few tries. Of the two,
    the one nearer the scan's objects: answering "stats" allocates after
    MemStats were read, tens of KiB, more than 1% of a heap just freed."""
    for _ in range(tries):
        ms = prog.command("stats")["memstats"]
        snap = memscan.scan(prog.pid, tier="exact")
        after = prog.command("stats")["memstats"]
        if after["HeapReleased"] == ms["HeapReleased"]:
            break
    objects = snap.go_heap_detail["objects"].size if snap.go_heap_detail else 0
    return min((ms, after), key=lambda m: abs(m["HeapInuse"] - objects)), snap


@pytest.mark.slow
@pytest.mark.parametrize("cgo,ldflags,buildmode", BUILDS)
def test_demo_built_with_go_1_19(built, cgo: bool, ldflags: str, buildmode: str) -> None:
    prog = built(cgo, ldflags, buildmode)
    for command in ("stats", "free"):
        if command == "free":
            prog.command("free")
        # (the answer to "free" allocates after reading MemStats: ask again)
        ms, snap = quiet_scan(prog)
        assert snap.tier == "exact" and snap.go is not None and snap.go.version == f"go{GO_1_19}", snap.warnings
        totals = {state: c.size for state, c in snap.go_heap_detail.items()}
        print(f"\ncgo={int(cgo)} {ldflags or 'DWARF'} {buildmode} after {command}: "
              + ", ".join(f"{k} {v / MiB:.3f} MiB" for k, v in totals.items())
              + f"; MemStats HeapInuse {ms['HeapInuse'] / MiB:.3f}, HeapIdle-HeapReleased "
              f"{(ms['HeapIdle'] - ms['HeapReleased']) / MiB:.3f}, HeapReleased {ms['HeapReleased'] / MiB:.3f}; "
              f"anon_other {snap.categories['anon_other'].rss / MiB:.3f} MiB of {snap.total.rss / MiB:.1f} MiB")
        check_against_memstats(totals, ms)
        check_owned(snap)
    assert snap.go_heap_detail["released"].size >= 64 * MiB


def metrics(port: int) -> Dict[str, float]:
    """The ``go_memstats_*`` samples of a Go program's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("go_memstats_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def within(name: str, got: float, a: float, b: float, rel: float, floor: float) -> None:
    """``got`` between the values read before and after it, give or take."""
    slack = max(rel * max(a, b), floor)
    assert min(a, b) - slack <= got <= max(a, b) + slack, \
        f"{name}: {got / MiB:.3f} MiB read, /metrics said {a / MiB:.3f} then {b / MiB:.3f} MiB"


@pytest.mark.slow
def test_debian_prometheus(tmp_path) -> None:
    """Debian's prometheus (go1.19.8, stripped, cgo) scraping itself."""
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(f"{PROMETHEUS} is missing: .ci/run installs it (apt-get install prometheus)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 5s\nscrape_configs:\n  - job_name: self\n"
                      f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "w") as log:
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert prom.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus not ready within 30 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass  # not listening yet
            time.sleep(0.25)
        before = metrics(port)
        snap = memscan.scan(prom.pid, tier="exact")
        after = metrics(port)
        assert snap.tier == "exact" and snap.go is not None and snap.go.version == "go1.19.8", snap.warnings
        d = {state: c.size for state, c in snap.go_heap_detail.items()}
        print(f"\nprometheus: " + ", ".join(f"{k} {v / MiB:.3f} MiB" for k, v in d.items())
              + "; /metrics before/after: " + ", ".join(
                  f"{k[12:]} {before[k] / MiB:.3f}/{after[k] / MiB:.3f}"
                  for k in ("go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes",
                            "go_memstats_heap_released_bytes"))
              + f"; anon_other {snap.categories['anon_other'].rss / MiB:.3f} MiB of {snap.total.rss / MiB:.1f} MiB")
        within("objects", d["objects"], before["go_memstats_heap_inuse_bytes"],
               after["go_memstats_heap_inuse_bytes"], 0.01, 0)

        def free(m: Dict[str, float]) -> float:
            return m["go_memstats_heap_idle_bytes"] - m["go_memstats_heap_released_bytes"]

        within("free", d["free"], free(before), free(after), 0.02, 512 * 1024)
        within("released", d["released"], before["go_memstats_heap_released_bytes"],
               after["go_memstats_heap_released_bytes"], 0.02, 256 * 1024)
        check_owned(snap)
    finally:
        prom.terminate()
        prom.wait(timeout=30)
