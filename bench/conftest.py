"""Benchmark fixtures: a target with exactly ~N one-page VMAs, the four methods
compared, and a side-by-side round-robin ratio table in the terminal summary.

    python -m pytest bench -q --benchmark-min-rounds=5
    python -m pytest bench -q -k go      # only the exact tier on a Go process with 1 GiB of heap
    PYTHONPATH=src python3 -m pytest bench --benchmark-disable      # smoke: each body once

Nothing here fails on timing: targets are printed as "met" / "not met" only.
Why round-robin: CPU speed on shared VMs drifts up to 2x in phases of
seconds, so the robust numbers are medians of per-round ratios
of methods run interleaved, not ratios of separately measured medians.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Set

import pytest

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if importlib.util.find_spec("memscan") is None:
    sys.path.insert(0, str(SRC))  # an uninstalled checkout; installed (pip install .) in CI

import memscan  # noqa: E402
import psutil  # noqa: E402

SIZES = (1000, 20000)
# Round-robin rounds per N (these keep
# the whole run well under 3 minutes on 2 vCPUs) and in --benchmark-disable smoke mode.
RR_ROUNDS = {1000: 30, 20000: 7}
RR_ROUNDS_SMOKE = {1000: 2, 20000: 1}
TARGET_CYTHON_RAW = 1.15  # cython/raw <= this (C one-pass floor measured 1.08-1.24x)
TARGET_PSUTIL_CYTHON = 5.0  # psutil/cython >= this (psutil measured 6.4-7.5x raw)
METHODS = ("raw", "cython", "python", "psutil")

try:
    from memscan import _fast
except ImportError as _err:  # the extension is not built
    _fast = None
    FAST_MISSING = f"memscan._fast is not built ({_err}); run: python3 setup.py build_ext --inplace"
else:
    FAST_MISSING = None
HAVE_CYTHON = _fast is not None and "cython" in memscan.engine.ENGINES
if _fast is not None and not HAVE_CYTHON:
    FAST_MISSING = "memscan's Cython engine is disabled (MEMSCAN_NO_EXTENSIONS or not CPython)"


def _stale_extension() -> Optional[str]:
    """A warning when the built extension is older than _fast.pyx: its timings would be of old code."""
    if _fast is None:
        return None
    pyx = Path(memscan.__file__).with_name("_fast.pyx")
    so = Path(_fast.__file__)
    if pyx.exists() and so.stat().st_mtime < pyx.stat().st_mtime:
        return f"{so.name} is older than _fast.pyx: the Cython numbers are for a stale build"
    return None


# --------------------------------------------------------------- the target


class Target(NamedTuple):
    n: int  # pages asked for (~ one-page VMAs)
    pid: int
    vmas: int  # lines of /proc/PID/maps once ready


def compile_c(tmp_path_factory: pytest.TempPathFactory, name: str, *flags: str) -> Path:
    """bench/NAME.c compiled (skip without a C compiler)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip(f"no C compiler (gcc/cc) to build bench/{name}.c")
    exe = tmp_path_factory.mktemp(name) / name
    subprocess.run([gcc, "-O2", "-Wall", *flags, "-o", str(exe), str(HERE / f"{name}.c")], check=True)
    return exe


@pytest.fixture(scope="session")
def maptarget_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bench/maptarget.c compiled once per session."""
    return compile_c(tmp_path_factory, "maptarget")


def stop(proc: "subprocess.Popen[bytes]") -> None:
    """Kill (if still running) and reap a target; close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _count_vmas(pid: int) -> int:
    with open(f"/proc/{pid}/maps", "rb") as f:
        return f.read().count(b"\n")


@pytest.fixture(scope="session", params=SIZES, ids=lambda n: f"N={n}")
def target(request: pytest.FixtureRequest, maptarget_exe: Path) -> Iterator[Target]:
    """A running maptarget with ~N one-page VMAs; killed at the end."""
    n = request.param
    proc = subprocess.Popen(
        [str(maptarget_exe), str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until "ready" or exit
        if line != b"ready\n":
            proc.wait(timeout=10)
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"maptarget {n} did not start (exit {proc.returncode}): {line!r} {err.strip()}")
        try:
            os.sched_setaffinity(proc.pid, {0})  # the target is idle anyway; keep it off the reader's way
        except OSError:
            pass
        vmas = _count_vmas(proc.pid)
        assert vmas >= n, f"maptarget {n}: only {vmas} VMAs in /proc/{proc.pid}/maps"
        yield Target(n, proc.pid, vmas)
    finally:
        stop(proc)


# --------------------------------------------------------------- the methods


class RawReader:
    """The floor: a persistent fd of /proc/PID/smaps read whole into a reused bytearray."""

    def __init__(self, pid: int) -> None:
        self.fd = os.open(f"/proc/{pid}/smaps", os.O_RDONLY | os.O_CLOEXEC)
        self.buf = bytearray()
        # Without the extension fall back to the pure-Python loop (slower floor; labelled).
        self.read_all = _fast.read_all if _fast is not None else memscan.engine.pure.read_all
        self.kind = "_fast.read_all" if _fast is not None else "engine.pure.read_all (extension missing)"

    def __call__(self) -> int:
        return self.read_all(self.fd, self.buf)

    def close(self) -> None:
        os.close(self.fd)


def make_methods(pid: int) -> Dict[str, Callable[[], object]]:
    """Zero-argument callables for each method available here (raw first)."""
    raw = RawReader(pid)
    proc = psutil.Process(pid)  # persistent: its first call's setup is not timed
    methods: Dict[str, Callable[[], object]] = {"raw": raw}
    if HAVE_CYTHON:
        methods["cython"] = lambda: memscan.scan(pid, tier="layout", engine="cython")
    methods["python"] = lambda: memscan.scan(pid, tier="layout", engine="python")
    methods["psutil"] = lambda: proc.memory_maps(grouped=False)
    return methods


@pytest.fixture(scope="session")
def methods(target: Target) -> Iterator[Dict[str, Callable[[], object]]]:
    m = make_methods(target.pid)
    yield m
    m["raw"].close()  # type: ignore[attr-defined]


# --------------------------------------------------------------- round-robin ratios


def _median_ratio(num: List[float], den: List[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


def round_robin(
    methods: Dict[str, Callable[[], object]],
    rounds: int,
    warmup: bool = True,
    names: Sequence[str] = METHODS[1:],
) -> Dict[str, object]:
    """Each method interleaved with the raw read, ``rounds`` times; medians of per-round ratios.

    ``names``: the methods reported (``<name>_median_ms``, ``<name>/raw``;
    None for one not in ``methods``); "psutil/cython" only when psutil is one.

    Pairs (raw, method) alternate so that CPU drift cancels out, and each
    method runs in its own steady state: the pure engine's or psutil's
    allocation churn never lands on the Cython engine's timings.
    """
    if warmup:
        for fn in methods.values():  # imports, caches, buffer growth
            fn()
    clock = time.perf_counter
    raw_fn = methods["raw"]
    times: Dict[str, List[float]] = {}
    raws: Dict[str, List[float]] = {}
    for name, fn in methods.items():
        if name == "raw":
            continue
        times[name], raws[name] = [], []
        for _ in range(rounds):
            for which, f, out in (("raw", raw_fn, raws[name]), (name, fn, times[name])):
                t0 = clock()
                f()
                out.append(clock() - t0)
    raw = [t for ts in raws.values() for t in ts]
    res: Dict[str, object] = {
        "rounds": rounds,
        "raw_median_ms": statistics.median(raw) * 1e3,
        "raw_min_ms": min(raw) * 1e3,
    }
    for name in names:
        if name in times:
            res[f"{name}_median_ms"] = statistics.median(times[name]) * 1e3
            res[f"{name}/raw"] = _median_ratio(times[name], raws[name])
        else:
            res[f"{name}/raw"] = None
    if "psutil" in names:
        res["psutil/cython"] = (
            res["psutil/raw"] / res["cython/raw"] if "cython" in times else None  # type: ignore[operator]
        )
    return res


RESULTS_KEY = pytest.StashKey[Dict[int, Dict[str, object]]]()


@pytest.fixture
def bench_setup(benchmark, target: Target, rr_ratios: Dict[str, object]) -> Callable[[str], None]:  # type: ignore[no-untyped-def]
    """``bench_setup(method)``: group per N, name, and the round-robin ratios in extra_info."""

    def setup(method: str) -> None:
        benchmark.group = f"N={target.n}"
        benchmark.name = f"{method} N={target.n}"
        benchmark.extra_info.update(ratio_info(rr_ratios))
        benchmark.extra_info["method"] = method

    return setup


@pytest.fixture(scope="session")
def cython_engine() -> None:
    """Skips the test, saying why, when the Cython engine is not built."""
    if not HAVE_CYTHON:
        pytest.skip(FAST_MISSING or "memscan's Cython engine is not available")


def _opt(config: pytest.Config, name: str, default: object = None) -> object:
    try:
        return config.getoption(name)
    except ValueError:  # pytest-benchmark not installed
        return default


def smoke_mode(config: pytest.Config) -> bool:
    return bool(_opt(config, "benchmark_disable", False))


@pytest.fixture(scope="session")
def rr_ratios(request: pytest.FixtureRequest, target: Target, methods: Dict[str, Callable[[], object]]) -> Dict[str, object]:
    """Side-by-side ratios for this N, measured once per session (first use)."""
    config = request.config
    if _opt(config, "benchmark_skip", False):
        pytest.skip("round-robin ratios are a benchmark (--benchmark-skip active)")
    smoke = smoke_mode(config)
    rounds = (RR_ROUNDS_SMOKE if smoke else RR_ROUNDS)[target.n]
    res = round_robin(methods, rounds, warmup=not smoke)
    res["n"] = target.n
    res["vmas"] = target.vmas
    res["smaps_bytes"] = methods["raw"]()
    res["raw_method"] = methods["raw"].kind  # type: ignore[attr-defined]
    res["smoke"] = smoke_mode(config)
    config.stash.setdefault(RESULTS_KEY, {})[target.n] = res
    return res


def ratio_info(res: Dict[str, object]) -> Dict[str, object]:
    """What goes into ``benchmark.extra_info``: the round-robin ratios and targets."""
    keys = ("rounds", "vmas", "smaps_bytes", "raw_median_ms", "cython/raw", "python/raw", "psutil/raw", "psutil/cython")
    info = {f"rr_{k}": res.get(k) for k in keys}
    info["target_cython/raw<="] = TARGET_CYTHON_RAW
    info["target_psutil/cython>="] = TARGET_PSUTIL_CYTHON
    info["targets_met"] = _met(res)
    return info


def _met(res: Dict[str, object]) -> Dict[str, Optional[bool]]:
    cr, pc = res.get("cython/raw"), res.get("psutil/cython")
    return {
        "cython/raw": None if cr is None else bool(cr <= TARGET_CYTHON_RAW),  # type: ignore[operator]
        "psutil/cython": None if pc is None else bool(pc >= TARGET_PSUTIL_CYTHON),  # type: ignore[operator]
    }


def _fmt_ratio(x: object, width: int = 11) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a".rjust(width)
    return f"{x:.2f}x".rjust(width)  # type: ignore[str-format]


def _word(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("met" if ok else "not met")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    _layout_summary(terminalreporter, config)
    _go_summary(terminalreporter, config)


def _layout_summary(tr, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    results = config.stash.get(RESULTS_KEY, {})
    if not results:
        return
    smoke = any(r.get("smoke") for r in results.values())
    title = "memscan round-robin ratios (median of per-round ratios to the raw smaps read)"
    tr.write_sep("=", title + (" [SMOKE: --benchmark-disable, rounds cut, not meaningful]" if smoke else ""))
    tr.write_line(
        f"targets (reference only, never fail): cython/raw <= {TARGET_CYTHON_RAW}, "
        f"psutil/cython >= {TARGET_PSUTIL_CYTHON:g}"
    )
    header = (
        f"{'N':>6} {'VMAs':>6} {'rounds':>6} {'raw ms':>8} {'cython/raw':>11} {'python/raw':>11} "
        f"{'psutil/raw':>11} {'psutil/cython':>14}  cython/raw<={TARGET_CYTHON_RAW}  psutil/cython>={TARGET_PSUTIL_CYTHON:g}"
    )
    tr.write_line(header)
    for n in sorted(results):
        r = results[n]
        met = _met(r)
        tr.write_line(
            f"{n:>6} {r['vmas']:>6} {r['rounds']:>6} {r['raw_median_ms']:>8.2f} {_fmt_ratio(r['cython/raw'])} "
            f"{_fmt_ratio(r['python/raw'])} {_fmt_ratio(r['psutil/raw'])} {_fmt_ratio(r['psutil/cython'], 14)}  "
            f"{_word(met['cython/raw']):>{len('cython/raw<=') + len(str(TARGET_CYTHON_RAW))}}  "
            f"{_word(met['psutil/cython']):>{len('psutil/cython>=') + len(f'{TARGET_PSUTIL_CYTHON:g}')}}"
        )
    any_r = next(iter(results.values()))
    notes = [f"raw = {any_r['raw_method']} on a persistent fd of /proc/PID/smaps, reused bytearray"]
    if FAST_MISSING:
        notes.append(f"cython: n/a ({FAST_MISSING})")
    stale = _stale_extension()
    if stale:
        notes.append(f"WARNING: {stale}")
    for note in notes:
        tr.write_line(note)


# =============================================================== the exact tier on a Go process
#
# The target: a steady-state exact scan of a Go process with 1 GiB of
# resident heap costs at most 1.5x a raw read of its smaps (measured side by
# side, round-robin as above); the first scan of a binary, which parses its
# DWARF, is reported on its own and should stay under one second. The target
# is the bundled demo (memscan/demo) built without cgo.

GO_HEAP_MIB = 1024
GO_GOROUTINES = 100
GO_ARGS = ("-heap", str(GO_HEAP_MIB), "-goroutines", str(GO_GOROUTINES))
GO_GROUP = "go-1GiB"
#: The demo as built with DWARF (the layout from it) and stripped as
#: distributions ship Go programs (-s -w: the layout from the shipped
#: tables, mheap_ and allp found by the symbol-less search, once per
#: process): each benchmark runs on both.
GO_BUILDS = {"dwarf": "", "stripped": "-s -w"}
GO_RR_ROUNDS = 10
GO_RR_ROUNDS_SMOKE = 2
GO_METHODS = ("exact", "layout")  # besides "raw"
GO_STARTUP_TIMEOUT = 120.0  # seconds for the demo's first JSON line (it touches 1 GiB first)
TARGET_EXACT_RAW = 1.5  # exact/raw <= this, steady state
TARGET_FIRST_EXACT_MS = 1000.0  # the first exact scan of a binary (DWARF parse) < this

GO_KEY = pytest.StashKey[Dict[str, Dict[str, Any]]]()  # per build


class GoDemo(NamedTuple):
    exe: str
    go_version: str  # e.g. "go1.27.3"
    build_s: float  # 0.x s when the content-addressed cache had it
    build: str  # a key of GO_BUILDS


class GoTarget(NamedTuple):
    pid: int
    demo: GoDemo
    report: Dict[str, Any]  # the demo's first JSON line
    go_heap_rss: int  # bytes, from the first exact scan
    first_exact_ms: float  # that scan, with memscan's caches cleared
    caches_cleared: str


@pytest.fixture(scope="session", params=list(GO_BUILDS))
def go_demo(request: pytest.FixtureRequest) -> GoDemo:
    """The bundled Go demo, built without cgo (cached by gobuild after the first ~15 s build), per GO_BUILDS."""
    from memscan.demo import build as gobuild

    try:
        goroot = gobuild.find_goroot()
    except memscan.ToolchainMissing as err:
        pytest.skip(f"no Go toolchain to build the demo: {err}")
    version = gobuild.go_version(goroot)
    t0 = time.perf_counter()
    try:
        # The name the tests use too (tests/helpers/goprogram.py): one cache entry.
        exe = gobuild.build(gobuild.DEMO_DIR, goroot=goroot, cgo=False, ldflags=GO_BUILDS[request.param],
                            out_name="memscandemo")
    except memscan.BuildError as err:
        pytest.fail(f"building the Go demo failed: {err}")
    return GoDemo(exe, version, time.perf_counter() - t0, request.param)


def _pin_threads(pid: int, cpus: Set[int]) -> None:
    """sched_setaffinity on every thread (a Go program has several; the pid alone is its main thread)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


def _read_json_line(proc: "subprocess.Popen[bytes]", timeout: float, stderr_path: Path) -> Dict[str, Any]:
    import json
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
    line = proc.stdout.readline() if ready else b""
    if not line:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        err = stderr_path.read_text(errors="replace")[-2000:].strip()
        what = "no report in time" if not ready else f"exit {proc.returncode}"
        pytest.fail(f"the Go demo {' '.join(GO_ARGS)} did not start ({what}): {err}")
    return json.loads(line)


@pytest.fixture(scope="session")
def go_target(
    request: pytest.FixtureRequest, go_demo: GoDemo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GoTarget]:
    """The demo with 1 GiB of live Go heap and 100 parked goroutines; killed at the end.

    Its first exact scan is timed here, once, with the per-binary caches
    cleared (and it is this process's first scan): the "first scan of a
    binary" number. The same snapshot checks that go_heap holds >= 1 GiB.
    """
    stderr_path = tmp_path_factory.mktemp("godemo") / "stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen([go_demo.exe, *GO_ARGS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    try:
        report = _read_json_line(proc, GO_STARTUP_TIMEOUT, stderr_path)
        _pin_threads(proc.pid, {0})  # idle now; keep its runtime threads off the reader's way
        memscan.clear_caches()
        cleared = "all (memscan.clear_caches)"
        t0 = time.perf_counter()
        snap = memscan.scan(proc.pid, tier="exact")
        first_ms = (time.perf_counter() - t0) * 1e3
        assert snap.tier == "exact" and snap.categories is not None, (snap.tier, snap.warnings)
        assert snap.go_heap_detail is not None, f"no Go heap detail in the exact scan: {snap.warnings}"
        rss = snap.categories["go_heap"].rss
        assert rss >= GO_HEAP_MIB << 20, (
            f"go_heap rss {rss / 2**20:.1f} MiB < {GO_HEAP_MIB} MiB (demo memstats: {report.get('memstats')})"
        )
        config = request.config
        config.stash.setdefault(GO_KEY, {})[go_demo.build] = {
            "first_exact_ms": first_ms,
            "caches_cleared": cleared,
            "go_heap_rss": rss,
            "go_version": go_demo.go_version,
            "build_s": go_demo.build_s,
            "pid": proc.pid,
            "smoke": smoke_mode(config),
        }
        yield GoTarget(proc.pid, go_demo, report, rss, first_ms, cleared)
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def go_methods(go_target: GoTarget) -> Iterator[Dict[str, Callable[[], object]]]:
    """raw (as above), the exact scan in steady state (caches warm after the first) and layout for reference."""
    pid = go_target.pid
    raw = RawReader(pid)
    m: Dict[str, Callable[[], object]] = {
        "raw": raw,
        "exact": lambda: memscan.scan(pid, tier="exact"),
        "layout": lambda: memscan.scan(pid, tier="layout"),
    }
    yield m
    raw.close()


@pytest.fixture(scope="session")
def go_rr_ratios(
    request: pytest.FixtureRequest, go_target: GoTarget, go_methods: Dict[str, Callable[[], object]]
) -> Dict[str, object]:
    """Side-by-side ratios on the Go target, measured once per session (first use)."""
    config = request.config
    if _opt(config, "benchmark_skip", False):
        pytest.skip("round-robin ratios are a benchmark (--benchmark-skip active)")
    smoke = smoke_mode(config)
    res = round_robin(go_methods, GO_RR_ROUNDS_SMOKE if smoke else GO_RR_ROUNDS, warmup=not smoke, names=GO_METHODS)
    res["smaps_bytes"] = go_methods["raw"]()
    res["mappings"] = _count_vmas(go_target.pid)
    res["raw_method"] = go_methods["raw"].kind  # type: ignore[attr-defined]
    res["smoke"] = smoke
    config.stash.setdefault(GO_KEY, {}).setdefault(go_target.demo.build, {}).update(res)
    res["build"] = go_target.demo.build
    res.update(first_exact_ms=go_target.first_exact_ms, go_heap_rss=go_target.go_heap_rss)
    return res


def _go_met(res: Dict[str, Any]) -> Dict[str, Optional[bool]]:
    er, first = res.get("exact/raw"), res.get("first_exact_ms")
    return {
        "exact/raw": None if er is None else bool(er <= TARGET_EXACT_RAW),
        "first_exact_scan": None if first is None else bool(first < TARGET_FIRST_EXACT_MS),
    }


def go_ratio_info(res: Dict[str, Any]) -> Dict[str, object]:
    """``benchmark.extra_info`` of the go-1GiB group: the round-robin ratios, the first scan, the targets."""
    keys = ("rounds", "raw_median_ms", "exact_median_ms", "layout_median_ms", "exact/raw", "layout/raw",
            "smaps_bytes", "mappings")
    info: Dict[str, object] = {f"rr_{k}": res.get(k) for k in keys}
    info["first_exact_scan_ms"] = res.get("first_exact_ms")
    info["go_heap_rss"] = res.get("go_heap_rss")
    info["target_exact/raw<="] = TARGET_EXACT_RAW
    info["target_first_exact_scan_ms<"] = TARGET_FIRST_EXACT_MS
    info["targets_met"] = _go_met(res)
    return info


@pytest.fixture
def go_bench_setup(benchmark, go_rr_ratios: Dict[str, object]) -> Callable[[str], None]:  # type: ignore[no-untyped-def]
    """``go_bench_setup(method)``: group "go-1GiB", name, and the round-robin ratios in extra_info."""

    def setup(method: str) -> None:
        group = f"{GO_GROUP} {go_rr_ratios['build']}"
        benchmark.group = group
        benchmark.name = f"{method} {group}"
        benchmark.extra_info.update(go_ratio_info(go_rr_ratios))  # type: ignore[arg-type]
        benchmark.extra_info["method"] = method

    return setup


def _go_summary(tr, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    builds = config.stash.get(GO_KEY, None)
    if not builds:
        return
    smoke = any(r.get("smoke") for r in builds.values())
    title = (f"memscan exact tier, Go process with {GO_HEAP_MIB // 1024} GiB of heap "
             "(median of per-round ratios to the raw smaps read)")
    tr.write_sep("=", title + (" [SMOKE: --benchmark-disable, rounds cut, not meaningful]" if smoke else ""))
    tr.write_line(
        f"targets (reference only, never fail): exact/raw <= {TARGET_EXACT_RAW} in steady state; "
        f"first exact scan of a binary < {TARGET_FIRST_EXACT_MS:.0f} ms"
    )
    col = f"exact/raw<={TARGET_EXACT_RAW}"
    tr.write_line(
        f"{'build':>9} {'go_heap MiB':>11} {'rounds':>6} {'raw ms':>8} {'exact ms':>9} {'layout ms':>9} "
        f"{'exact/raw':>10} {'layout/raw':>11}  {col}"
    )
    for build, r in builds.items():
        met = _go_met(r)
        if "rounds" in r:
            tr.write_line(
                f"{build:>9} {r['go_heap_rss'] / 2**20:>11.0f} {r['rounds']:>6} {r['raw_median_ms']:>8.2f} "
                f"{r.get('exact_median_ms', float('nan')):>9.2f} {r.get('layout_median_ms', float('nan')):>9.2f} "
                f"{_fmt_ratio(r['exact/raw'], 10)} {_fmt_ratio(r['layout/raw'])}  "
                f"{_word(met['exact/raw']):>{len(col)}}"
            )
        else:
            tr.write_line(f"{build:>9} {r['go_heap_rss'] / 2**20:>11.0f}  (ratios not measured)")
    for build, r in builds.items():
        met = _go_met(r)
        tr.write_line(
            f"{build}: first exact scan: {r['first_exact_ms']:.1f} ms (target < {TARGET_FIRST_EXACT_MS:.0f} ms): "
            f"{_word(met['first_exact_scan'])}  [measured once, caches cleared: {r['caches_cleared']}; "
            "also this process's first scan]"
        )
        tr.write_line(
            f"{build}: target: memscan/demo {' '.join(GO_ARGS)} -ldflags={GO_BUILDS[build]!r}, {r['go_version']}, "
            f"cgo off, pid {r['pid']}"
            + (f", smaps {r['smaps_bytes']} B in {r['mappings']} mappings" if "smaps_bytes" in r else "")
            + f"; build {r['build_s']:.1f} s"
        )
    if any("raw_method" in r for r in builds.values()):
        raw_method = next(r["raw_method"] for r in builds.values() if "raw_method" in r)
        tr.write_line(f"raw = {raw_method} on a persistent fd of /proc/PID/smaps, reused bytearray; "
                      "exact/layout = memscan.scan(pid, tier=...), caches warm")
