"""Every way a scan can go wrong, on real processes, in every tier that
reaches it, and through the CLI (one line on stderr, a non-zero status, no
traceback). tests/test_errors.py has the basic cases (a reaped pid, a
zombie in the layout and psutil tiers, kthreadd in auto, another user's
process in auto and layout, malformed procfs); this file the rest.

Decisions these tests hold memscan to:

- a kernel thread is an Error ("it has no user memory") in every tier,
  psutil included: never a snapshot of 0 bytes;
- a process whose main thread exited (pthread_exit) while other threads
  run is alive: it is read through a live thread, with a warning;
- a process that exits during a scan gives a complete snapshot or
  NoSuchProcess, in auto too (the layout figures of a process that died
  during the exact step are not passed off as a fallback).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

import memscan
from memscan import cli
from memscan.kernel import procfs

from helpers.cli import as_nobody, assert_one_line_error, run_cli
from helpers.cprogram import CProgram
from helpers.goprogram import GoProgram, allocator
from helpers.gotoolchain import GO_VERSIONS

TIERS = ("auto", "layout", "exact", "psutil")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run targets as root and drop privileges")


def assert_complete(snap: memscan.Snapshot, touched: int) -> None:
    """A snapshot of a whole, live process: its categories partition every
    counter of the total, the bytes the program wrote are resident, and the
    mappings smaps lists last are there (the main stack, then [vvar],
    [vdso], [vsyscall]): a read cut short by an exit would miss them."""
    cats = snap.categories
    assert cats is not None
    for k, field in enumerate(memscan.COUNTER_FIELDS):
        assert sum(c[k] for c in cats.values()) == snap.total[k], field
    assert snap.total.rss >= touched > 0
    assert cats["thread_stacks"].size > 0 and cats["kernel"].size > 0


def cli_as_nobody(*args: str):
    """cli.main(args) in a child running as nobody: (status, stdout, stderr)."""
    # Import what the parser imports lazily first: nobody may not be able to
    # read the interpreter's own files (a Python installed under /root).
    cli.parser()
    return as_nobody(lambda: cli.main(list(args)))


# ------------------------------------------------------------- missing pids


def test_pid_that_never_existed():
    """Above pid_max, zero, negative, beyond 64 bits: NoSuchProcess in
    every tier (psutil raised ValueError for negative pids)."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    for pid in (pid_max + 1, 0, -1, 2**31, 2**64):
        for tier in TIERS:
            with pytest.raises(memscan.NoSuchProcess) as err:
                memscan.scan(pid, tier=tier)
            assert err.value.pid == pid
    assert_one_line_error(run_cli("scan", str(pid_max + 1)), f"no such process (pid {pid_max + 1})")


# ---------------------------------------------------------------- exit race


@pytest.mark.parametrize("tier", ["layout", "exact", "auto"])
def test_exits_during_scans(cprog, tier):
    """200 targets that exit 0-20 ms (or ~10 scans) after setting up, each
    scanned until it is gone: every scan is a complete snapshot or NoSuchProcess. (auto gave
    layout snapshots warning "layout tier shown: process no longer exists"
    when the exit came during the exact step.)"""
    rng = random.Random(1)
    # Exits spread over the time of ~10 scans on this machine, however busy
    # it is: most targets are seen alive, then exiting or gone.
    probe = cprog("exits", 4, 60_000_000)
    t0 = time.perf_counter()
    for _ in range(5):
        memscan.scan(probe.pid, tier=tier)
    spread = max(20_000, int(2 * (time.perf_counter() - t0) * 1e6))
    probe.stop()
    snapshots = 0
    for _ in range(200):
        prog = cprog("exits", 4, rng.randint(0, spread))
        try:
            while True:
                try:
                    snap = memscan.scan(prog.pid, tier=tier)
                except memscan.NoSuchProcess as err:
                    assert err.pid == prog.pid
                    break
                assert snap.tier == ("exact" if tier == "auto" else tier)
                assert not [w for w in snap.warnings if "exited" in w or "no longer exists" in w]
                assert_complete(snap, prog.report["touched"])
                snapshots += 1
        finally:
            prog.stop()
    assert snapshots >= 50  # the race was run: many scans found the target alive


@pytest.mark.slow
@pytest.mark.parametrize("tier", TIERS)
def test_go_and_c_exits_during_scans(cprog, tier):
    """48 targets, Go, cgo and C in turn, that exit at a random moment within
    ~3 scans of setting up, each scanned until it is gone: every error is
    NoSuchProcess. (An exact scan of a Go program that exited during it
    raised "cannot open the Go binary /proc/PID/map_files/...: No such file
    or directory".)"""
    rng = random.Random(2)
    go = {cgo: allocator(GO_VERSIONS[-1], cgo) for cgo in (False, True)}
    started = []

    def start(kind: str, usec: int):  # type: ignore[no-untyped-def]
        if kind == "c":
            return cprog("exits", 4, usec)
        prog = CProgram([go[kind == "cgo"], "-workers", "0", "-heap", "4", "-exit", str(usec)])
        started.append(prog)
        return prog

    try:
        # Exits spread over the time of ~3 scans on this machine, however busy it is.
        probe = start("cgo", -1)
        t0 = time.perf_counter()
        for _ in range(3):
            memscan.scan(probe.pid, tier=tier)
        spread = max(5_000, int((time.perf_counter() - t0) * 1e6))
        probe.stop()
        errors: Counter = Counter()
        snapshots = 0
        for i in range(48):
            prog = start(("go", "cgo", "c")[i % 3], rng.randint(0, spread))
            while True:
                try:
                    snap = memscan.scan(prog.pid, tier=tier)
                except Exception as err:
                    errors[type(err).__name__] += 1
                    assert not isinstance(err, memscan.NoSuchProcess) or err.pid == prog.pid
                    break
                assert snap.total.rss >= prog.report["touched"] > 0
                if snap.categories is not None:
                    assert sum(c.rss for c in snap.categories.values()) == snap.total.rss
                snapshots += 1
            prog.stop()
    finally:
        for prog in started:
            prog.stop()
    print(f"\n{tier}: 48 exits, {snapshots} snapshots before them; errors: {dict(errors)}")
    assert errors == {"NoSuchProcess": 48}
    assert snapshots >= 24  # the race was run: many scans found the target alive


@pytest.mark.slow
@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
@pytest.mark.parametrize("step", ["context", "read_heap", "c_regions", "runtime_regions", "Pagemap"])
def test_exit_at_each_step_of_an_exact_scan(monkeypatch, step, reaped):
    """A Go program (cgo: every owner has something to read) killed just
    before each step of an exact scan reads it: NoSuchProcess, whatever the
    step raised. (Killed before the Go heap's step, the scan raised "cannot
    open the Go binary /proc/PID/map_files/...: No such file or directory".)"""
    prog = CProgram([allocator(GO_VERSIONS[-1], True), "-workers", "0", "-heap", "4"])
    try:
        kill_before(monkeypatch, step, prog, reaped)
        with pytest.raises(memscan.NoSuchProcess) as err:
            memscan.scan(prog.pid, tier="exact")
        assert err.value.pid == prog.pid
    finally:
        prog.stop()


@pytest.mark.slow
@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_exit_during_a_samplers_full_scan(monkeypatch, reaped):
    """Killed as a Sampler's exact full scan reads its Go heap: the
    iteration ends, ``exited``, and sample() raises NoSuchProcess."""
    prog = CProgram([allocator(GO_VERSIONS[-1], True), "-workers", "0", "-heap", "4"])
    try:
        with memscan.Sampler(prog.pid, tier="exact") as s:
            kill_before(monkeypatch, "read_heap", prog, reaped)
            assert list(s) == [] and s.exited
            with pytest.raises(memscan.NoSuchProcess):
                s.sample()
    finally:
        prog.stop()


def kill_before(monkeypatch, step: str, prog: CProgram, reaped: bool) -> None:
    """memscan.core.scanner's ``step`` first kills ``prog`` (reaped, or left a zombie)."""
    from memscan.core import scanner

    real = getattr(scanner, step)

    def killed_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        prog.proc.kill()
        if reaped:
            prog.proc.wait(10)
        else:
            wait_state(prog.pid, "Z")
        return real(*args, **kwargs)

    monkeypatch.setattr(scanner, step, killed_first)
    scanner._layouts.clear()  # the layout step runs once per process


def test_cli_on_a_process_that_exits(cprog):
    prog = cprog("exits", 4, 0)
    prog.proc.wait(10)  # reaped: its pid is free
    assert_one_line_error(run_cli("scan", str(prog.pid), "--tier", "exact"), "no longer exists")


# ------------------------------------------------------- zombies and threads


def test_zombie_in_the_exact_tiers(cprog):
    prog = cprog("exits", 1, 0)
    try:
        wait_state(prog.pid, "Z")
        for tier in ("exact", "auto"):
            with pytest.raises(memscan.NoSuchProcess, match="zombie"):
                memscan.scan(prog.pid, tier=tier)
        assert_one_line_error(run_cli("scan", str(prog.pid), "--tier", "exact"), "zombie")
    finally:
        prog.stop()


def wait_state(pid: int, state: str) -> None:
    deadline = time.monotonic() + 10
    while procfs.stat(pid).state != state:
        assert time.monotonic() < deadline, f"pid {pid} never reached state {state}"
        time.sleep(0.005)


def test_main_thread_exited(cprog):
    """pthread_exit() in main: the leader is a zombie, the process is not.
    Every tier reads it through its live thread, as the thread's own pid."""
    prog = cprog("mainexit", 8)
    pid, tid = prog.pid, prog.report["tid"]
    assert procfs.stat(pid).state == "Z" and procfs.live_thread(pid) == tid
    for tier in TIERS:
        snap = memscan.scan(pid, tier=tier)
        direct = memscan.scan(tid, tier=tier)
        assert snap.pid == pid and snap.tier == direct.tier
        assert f"read through thread {tid}" in snap.warnings[-1]
        assert snap.total.size == direct.total.size and snap.total.rss >= prog.report["touched"]
        if tier != "psutil":
            assert_complete(snap, prog.report["touched"])
    out = run_cli("scan", str(pid), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["pid"] == pid


@pytest.mark.slow
def test_killed_process_is_not_a_main_thread_exit(go_program):
    """SIGKILL of a multi-threaded process: its leader turns zombie before
    the other threads exit. Those threads have SIGKILL pending and are not
    taken for a live process (without that check about 3 % of such looks
    found one)."""
    taken = looks = 0
    for _ in range(10):
        prog = go_program(args=("-heap", "8"))
        os.kill(prog.pid, 9)
        # Until only the zombie leader is left (not reaped: the test is its parent).
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{prog.pid}/task")) > 1 and time.monotonic() < deadline:
            if procfs.stat(prog.pid).state == "Z":
                looks += 1
                taken += procfs.live_thread(prog.pid) is not None
        prog.stop()
    assert taken == 0, f"{taken} of {looks} looks at a dying process found a live thread"


# ------------------------------------------------------------ kernel threads


def _kthreadd() -> int:
    if not procfs.stat(2).kernel_thread:
        pytest.skip("pid 2 is not kthreadd in this pid namespace")
    return 2


def test_kernel_thread_in_every_tier():
    """A kernel thread has no user memory: an Error in every tier, never a
    snapshot of 0 bytes (the psutil tier gave one)."""
    pid = _kthreadd()
    for tier in TIERS:
        with pytest.raises(memscan.Error, match="kernel thread") as err:
            memscan.scan(pid, tier=tier)
        assert not isinstance(err.value, memscan.NoSuchProcess)
    assert_one_line_error(run_cli("scan", str(pid), "--tier", "psutil"), "kernel thread")


@root_only
def test_kernel_thread_as_another_user():
    """smaps of a kernel thread is readable (empty) by anyone: the same
    error for an unprivileged user, not a psutil fallback."""
    pid = _kthreadd()
    code, out, err = cli_as_nobody("scan", str(pid))
    assert code == 1 and out == "" and "kernel thread" in err and err.count("\n") == 1


# -------------------------------------------------------------- privileges


@root_only
def test_another_users_process_exact_tier(cprog):
    """Another user's process: smaps is refused, so the exact tier is
    AccessDenied on smaps (auto and layout are in test_errors.py)."""
    prog = cprog("mappings", 10)

    def exact() -> int:
        try:
            memscan.scan(prog.pid, tier="exact")
        except memscan.AccessDenied as err:
            print(err.path)
            return 0
        return 3

    code, out, err = as_nobody(exact)
    assert (code, out.strip()) == (0, f"/proc/{prog.pid}/smaps"), err
    code, out, err = cli_as_nobody("scan", str(prog.pid), "--tier", "exact")
    assert code == 1 and out == "" and "permission denied" in err and err.count("\n") == 1


SETPRIV = shutil.which("setpriv")


@root_only
@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) drops the capability")
def test_smaps_readable_mem_not(cprog):
    """Root without CAP_SYS_PTRACE may read a root process's smaps but not
    its mem (commoncap: the target's capabilities are not a subset of the
    reader's). auto gives the layout tier with a warning; exact refuses."""
    prog = cprog("mappings", 10)
    drop = [SETPRIV, "--bounding-set=-sys_ptrace", "--", sys.executable, "-m", "memscan", "scan", str(prog.pid)]
    auto = subprocess.run(drop + ["--json"], capture_output=True, text=True, timeout=120)
    assert auto.returncode == 0, auto.stderr
    snap = json.loads(auto.stdout)
    assert snap["tier"] == "layout" and len(snap["warnings"]) == 1
    assert "ptrace-attach" in snap["warnings"][0] and f"/proc/{prog.pid}/mem" in snap["warnings"][0]
    layout = memscan.scan(prog.pid, tier="layout")
    assert {k: v["size"] for k, v in snap["categories"].items()} == {k: v.size for k, v in layout.categories.items()}
    exact = subprocess.run(drop + ["--tier", "exact"], capture_output=True, text=True, timeout=120)
    assert_one_line_error(exact, "needs ptrace-attach rights")
    api = subprocess.run(drop[:3] + [sys.executable, "-c", (
        "import memscan\n"
        f"try: memscan.scan({prog.pid}, tier='exact')\n"
        "except memscan.AccessDenied as err: print(err.path)\n")], capture_output=True, text=True, timeout=120)
    assert api.stdout.strip() == f"/proc/{prog.pid}/mem", api.stderr


# ------------------------------------------------ binaries deleted or replaced


def _start_copy(cprog, tmp_path: Path) -> CProgram:
    """The mappings program run from a copy of its binary in ``tmp_path``."""
    first = cprog("mappings", 1)
    exe = tmp_path / "target"
    shutil.copy(os.readlink(f"/proc/{first.pid}/exe"), exe)
    first.stop()
    return CProgram([str(exe), "10"])


def _swap_binary(exe: Path, mode: str) -> None:
    if mode == "deleted":
        exe.unlink()
    else:  # another program takes the path, as a package upgrade does
        new = exe.with_name("new")
        shutil.copy(shutil.which("true") or "/bin/true", new)
        os.rename(new, exe)


@pytest.mark.parametrize("mode", ["deleted", "replaced"])
def test_binary_gone_from_disk(cprog, tmp_path, monkeypatch, mode):
    """The running binary deleted, or its path given to another file: the
    mapped file is still read (its 1 MiB .bss is told apart by its ELF
    headers only), in both tiers, as before the change."""
    prog = _start_copy(cprog, tmp_path)
    try:
        before = memscan.scan(prog.pid, tier="layout")
        assert before.categories["binary"].rss >= prog.report["bss"]
        _swap_binary(tmp_path / "target", mode)
        assert "(deleted)" in Path(f"/proc/{prog.pid}/maps").read_text()
        for tier in ("layout", "exact"):
            memscan.clear_caches()  # the next scan reads the ELF files again
            snap = memscan.scan(prog.pid, tier=tier)
            assert snap.tier == tier and snap.warnings == []
            assert {k: c.size for k, c in snap.categories.items()} == {k: c.size for k, c in before.categories.items()}
            assert snap.categories["binary"].rss == before.categories["binary"].rss
        assert run_cli("scan", str(prog.pid)).returncode == 0
    finally:
        prog.stop()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["deleted", "replaced"])
def test_go_binary_gone_from_disk(go_program, tmp_path, monkeypatch, mode):
    """A Go program whose binary went away: the exact tier still finds the
    runtime's structures (DWARF of the mapped file)."""
    built = go_program(args=("-heap", "16"))
    exe = tmp_path / "target"
    shutil.copy(built.binary, exe)
    built.stop()
    proc = subprocess.Popen([str(exe), "-heap", "16"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    prog = GoProgram(proc, str(exe), built.version, built.cgo, ["-heap", "16"], "")
    try:
        prog.wait_ready()
        before = memscan.scan(prog.pid, tier="exact")
        assert before.tier == "exact" and before.go is not None
        _swap_binary(exe, mode)
        for tier in ("layout", "exact"):
            memscan.clear_caches()  # the next scan reads the ELF files again
            snap = memscan.scan(prog.pid, tier=tier)
            assert snap.tier == tier and snap.go is not None and snap.go.version == before.go.version
            assert {k: c.size for k, c in snap.categories.items()} == {k: c.size for k, c in before.categories.items()}
        assert sum(c.size for c in snap.go_heap_detail.values()) == snap.categories["go_heap"].size
    finally:
        prog.stop()


@root_only
@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) drops the capabilities")
def test_unreadable_binary_warning_says_why(cprog):
    """A binary that cannot be read as mapped: the warning names what
    refused each path, by its errno, on a process run as nobody: EPERM on
    the map_files link (a capability), EACCES on a directory of the path or
    on the map_files directory (no capability is the cause there)."""
    first = cprog("mappings", 1)
    built = os.readlink(f"/proc/{first.pid}/exe")
    first.stop()
    d = tempfile.mkdtemp(prefix="memscan-")  # not under pytest's 0700 directory: nobody runs from it
    exe = os.path.join(d, "target")
    shutil.copy(built, exe)
    os.chmod(d, 0o755)
    prog = CProgram([SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", "--", exe, "10"])

    def scan() -> int:
        print(json.dumps(memscan.scan(prog.pid, tier="layout").warnings))
        return 0

    def nobody_scans() -> str:
        status, out, err = as_nobody(scan)
        assert status == 0, err
        [warning] = json.loads(out)
        return warning

    try:
        link = f"/proc/{prog.pid}/map_files/"
        capability = "following the link needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE"
        os.chmod(d, 0o700)  # root's: nobody may no longer search it
        warning = nobody_scans()
        assert warning.startswith(f"{exe} could not be read as mapped (")
        assert link in warning and capability in warning
        assert f"{exe}: permission denied on a directory of its path" in warning and "no such file" not in warning
        os.chmod(d, 0o755)
        os.unlink(exe)
        warning = nobody_scans()
        assert warning.startswith(f"{exe} (deleted) could not be read as mapped (")
        assert capability in warning and f"{exe}: no such file" in warning and "permission denied" not in warning
        # Root without the capabilities that pass over file modes: the map
        # files directory (nobody's, 0500) refuses the lookup itself.
        caps = "--bounding-set=-dac_override,-dac_read_search,-sys_admin,-checkpoint_restore"
        code = f"import json, memscan; print(json.dumps(memscan.scan({prog.pid}, tier='layout').warnings))"
        done = subprocess.run([SETPRIV, caps, "--", sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        [warning] = json.loads(done.stdout)
        assert f"/proc/{prog.pid}/map_files: permission denied on the directory" in warning
        assert "CAP_SYS_ADMIN" not in warning and f"{exe}: no such file" in warning
    finally:
        prog.stop()
        shutil.rmtree(d)


# ------------------------------------------------------------ many mappings


def _max_map_count() -> int:
    with open("/proc/sys/vm/max_map_count") as f:
        return int(f.read())


needs_60k = pytest.mark.skipif(_max_map_count() < 60_500, reason="vm.max_map_count is below 60,500")


@needs_60k
def test_60000_mappings(cprog):
    """60,000 unmergeable one-page mappings: both tiers, exact conservation,
    and the total is smaps_rollup's (the target is idle)."""
    prog = cprog("mappings", 60_000)
    rollup = memscan.engine.engine.parse_rollup(Path(f"/proc/{prog.pid}/smaps_rollup").read_bytes())
    for tier in ("layout", "exact"):
        snap = memscan.scan(prog.pid, tier=tier)
        assert snap.tier == tier
        assert_complete(snap, prog.report["touched"])
        # Rss and Anonymous do not depend on other processes (PSS does).
        assert (snap.total.rss, snap.total.anonymous) == (rollup.rss, rollup.anonymous)
        assert snap.categories["anon_other"].rss >= prog.report["touched"]
    out = run_cli("scan", str(prog.pid), "--json", "--compact")
    assert out.returncode == 0 and json.loads(out.stdout)["total"]["rss"] == rollup.rss


FILE_BACKED = ("binary", "shared_libs", "mapped_files", "shmem")


@pytest.mark.slow
@needs_60k
def test_60000_mappings_pure_engine(cprog):
    prog = cprog("mappings", 60_000)
    a = memscan.scan(prog.pid, tier="layout", engine="python")
    b = memscan.scan(prog.pid, tier="layout")
    assert a.categories is not None and b.categories is not None
    for name in memscan.CATEGORIES:
        x, y = a.categories[name], b.categories[name]
        if name in FILE_BACKED:
            # Pages of a file mapped by other processes too: their pss, uss
            # and shared move as those processes start and exit between
            # the two scans. What this process maps and has resident does not.
            x, y = x._replace(pss=0, uss=0, shared=0), y._replace(pss=0, uss=0, shared=0)
        assert x == y, name


# --------------------------------------------------------------- churn


def test_target_changing_its_mappings(cprog):
    """A target that maps, unmaps, mallocs and frees without pause while the
    exact tier reads its allocator's structures: each scan is a complete
    snapshot (warnings allowed, naming what changed) or a clear memscan.Error."""
    prog = cprog("mappings", 1000, "churn")
    outcomes = {"exact": 0, "layout": 0, "error": 0}
    for i in range(60):
        tier = "exact" if i % 2 else "auto"
        try:
            snap = memscan.scan(prog.pid, tier=tier)
        except memscan.NoSuchProcess:
            raise  # the target is alive throughout
        except memscan.Error as err:
            assert str(err) and tier == "exact"
            outcomes["error"] += 1
            continue
        assert_complete(snap, prog.report["touched"])
        assert all(isinstance(w, str) and w for w in snap.warnings)
        outcomes[snap.tier] += 1
    assert outcomes["exact"] >= 15, outcomes
    out = run_cli("scan", str(prog.pid), "--tier", "exact")
    assert "Traceback" not in out.stderr + out.stdout
    assert out.returncode == 0 or (out.returncode == 1 and out.stderr.count("\n") == 1)
