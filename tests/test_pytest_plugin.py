"""The pytest plugin (memscan.pytest_plugin) on real Go programs: the
memscan_sampler fixture, its assertions, and benchmark.extra_info."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

import memscan
from memscan.pytest_plugin import MemoryProfile

MiB = 1 << 20

# The inner test: what the README shows, a benchmark of a Go server's HTTP
# endpoint while memscan samples the server.
BENCH_TEST = textwrap.dedent(
    """
    import os
    import urllib.request

    def test_server(benchmark, memscan_sampler):
        pid, url = int(os.environ["MEMSCAN_DEMO_PID"]), os.environ["MEMSCAN_DEMO_URL"]
        mem = memscan_sampler(pid, interval=0.005)
        benchmark.pedantic(lambda: urllib.request.urlopen(url, timeout=10).read(), rounds=40)
        mem.assert_no_growth("c_malloc", max_bytes=4 << 20)
        mem.assert_peak_below("rss", 1 << 30)
    """
)


# Saves benchmark.extra_info once memscan_sampler (set up after it) has
# written it. (--benchmark-json would do, but gathering its machine info
# takes pytest-benchmark up to a minute here.)
SAVE_EXTRA_INFO = textwrap.dedent(
    """
    import json, os
    import pytest

    @pytest.fixture(autouse=True)
    def save_extra_info(benchmark):
        yield
        with open(os.environ["MEMSCAN_EXTRA_INFO"], "w") as f:
            json.dump(benchmark.extra_info, f)
    """
)


@pytest.mark.slow
def test_benchmark_extra_info_from_a_go_server(go_program, pytester, monkeypatch, tmp_path) -> None:
    prog = go_program(cgo=True, args=("-heap", "48", "-csmall", "500", "-http", "127.0.0.1:0"))
    addr = prog.report["http"]
    monkeypatch.setenv("MEMSCAN_DEMO_PID", str(prog.pid))
    monkeypatch.setenv("MEMSCAN_DEMO_URL", f"http://{addr}/debug/vars")
    out = tmp_path / "extra_info.json"
    monkeypatch.setenv("MEMSCAN_EXTRA_INFO", str(out))
    pytester.makepyfile(test_server=BENCH_TEST)
    pytester.makeconftest(SAVE_EXTRA_INFO)
    # Loaded by its entry point when memscan is installed; -p is then a no-op.
    result = pytester.runpytest("-p", "memscan.pytest_plugin", "-q")
    result.assert_outcomes(passed=1)

    info = json.loads(out.read_text())["memscan"]
    snap = memscan.scan(prog.pid)
    assert info["pid"] == prog.pid and info["tier"] == snap.tier == "exact"
    assert info["samples"] >= 2 and not info["exited"]
    for name in ("rss", *memscan.CATEGORIES, "go_heap.objects"):
        assert 0 <= info["mean"][name] <= info["peak"][name], name
    # The program's own accounting: 48 MiB of live Go heap, 500 x 20000 B of C malloc.
    assert info["peak"]["go_heap.objects"] >= 48 * MiB
    assert info["peak"]["c_malloc"] >= 500 * 20000
    assert info["peak"]["binary"] > 0 and info["peak"]["shared_libs"] > 0
    # A quiet server: the means are what a scan sees now (within a few pages of runtime churn).
    assert abs(info["mean"]["go_heap"] - snap.categories["go_heap"].rss) <= 2 * MiB
    assert abs(info["mean"]["rss"] - snap.total.rss) <= 4 * MiB


@pytest.mark.slow
def test_growth_of_a_cgo_leak_fails_the_assertion(go_program, memscan_sampler) -> None:
    prog = go_program(cgo=True, args=("-heap", "16"))
    # Not polite: full scans (which refresh the C allocator's regions) every 0.2 s.
    mem = memscan_sampler(prog.pid, interval=0.005, full_every=0.2, polite=False)
    assert isinstance(mem, MemoryProfile)
    time.sleep(0.2)
    report = prog.command("cleak 24")
    time.sleep(0.6)  # a full scan or two: the new C memory is in c_malloc's regions
    mem.stop()
    assert mem.samples >= 10 and mem.error is None
    # C memory grew by what the program touched; the Go heap did not move.
    assert 24 * MiB <= mem.growth("c_malloc") <= 24 * MiB + 2 * MiB, report
    mem.assert_no_growth("go_heap", max_bytes=2 * MiB)
    with pytest.raises(AssertionError, match=r"c_malloc of pid \d+ grew by 2[4-6]\.\d MiB"):
        mem.assert_no_growth("c_malloc", max_bytes=4 * MiB)
    assert mem.peak["c_malloc"] >= mem.last["c_malloc"] >= mem.first["c_malloc"] + 24 * MiB
    with pytest.raises(AssertionError, match="peak rss"):
        mem.assert_peak_below("rss", mem.peak["rss"])
    with pytest.raises(KeyError, match="not sampled"):
        mem.growth("go_heap.nonsense")


def test_no_such_process_is_raised_in_the_test(memscan_sampler) -> None:
    with pytest.raises(memscan.NoSuchProcess):
        memscan_sampler(2**22 + 12345)  # above pid_max's default ceiling: never a process
