"""Cost of one memscan sample against the kernel floor and psutil, per N one-page VMAs.

Groups "N=1000" / "N=20000": the raw smaps read (floor), memscan.scan(tier="layout")
with each engine, psutil memory_maps(grouped=False). Every benchmark carries the
side-by-side round-robin ratios of its N in extra_info (see conftest.py), whose
table is printed in the terminal summary. No test fails on timing.
"""

from __future__ import annotations

import math

import memscan


def _check_snapshot(snap: memscan.Snapshot, target) -> None:  # type: ignore[no-untyped-def]
    assert snap.pid == target.pid
    assert snap.tier == "layout"
    assert snap.total.rss >= target.n * 4096  # the target touched all of its N pages


def test_raw_read_smaps(benchmark, bench_setup, target, methods, rr_ratios) -> None:  # type: ignore[no-untyped-def]
    """The floor: the kernel's cost of generating smaps, nothing parsed."""
    bench_setup("raw")
    benchmark.extra_info["raw_method"] = rr_ratios["raw_method"]
    n = benchmark(methods["raw"])
    assert n > 500 * target.n  # ~720 B of smaps per one-page VMA


def test_scan_layout_cython(cython_engine, benchmark, bench_setup, target, methods) -> None:  # type: ignore[no-untyped-def]
    bench_setup("cython")
    snap = benchmark(methods["cython"])
    assert snap.engine == "cython"
    _check_snapshot(snap, target)


def test_scan_layout_python(benchmark, bench_setup, target, methods) -> None:  # type: ignore[no-untyped-def]
    bench_setup("python")
    snap = benchmark(methods["python"])
    assert snap.engine == "python"
    _check_snapshot(snap, target)


def test_psutil_memory_maps(benchmark, bench_setup, target, methods) -> None:  # type: ignore[no-untyped-def]
    """The peer anchor: psutil parses all of smaps in pure Python."""
    bench_setup("psutil")
    maps = benchmark(methods["psutil"])
    assert len(maps) >= target.n


def test_round_robin_ratios(target, methods, rr_ratios) -> None:  # type: ignore[no-untyped-def]
    """Side-by-side ratios (printed in the terminal summary). Sanity only, never timing."""
    assert rr_ratios["rounds"] >= 1
    for name in ("cython", "python", "psutil"):
        r = rr_ratios[f"{name}/raw"]
        if name not in methods:
            assert r is None
            continue
        assert r is not None and math.isfinite(r) and r > 0, (name, r)
