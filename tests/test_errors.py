"""Bad input on real processes: a clear exception in the API, one line and a
non-zero exit in the CLI, never a traceback and never a wrong figure."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

import memscan
from memscan import cli
from memscan.kernel import procfs

from helpers.cli import as_nobody, assert_one_line_error, dead_pid, run_cli
from helpers.processes import stop
from helpers.smapstext import OVERLAPPING


def test_missing_pid():
    pid = dead_pid()
    with pytest.raises(memscan.NoSuchProcess) as err:
        memscan.scan(pid)
    assert err.value.pid == pid
    assert_one_line_error(run_cli("scan", str(pid)), "no longer exists")


def test_zombie_is_an_error_not_zero_memory():
    child = subprocess.Popen(["true"])
    # Not reaped: it stays a zombie whose smaps reads as empty.
    deadline = time.monotonic() + 10
    while procfs.stat(child.pid).state != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        with pytest.raises(memscan.NoSuchProcess, match="zombie"):
            memscan.scan(child.pid, tier="layout")
        with pytest.raises(memscan.NoSuchProcess, match="zombie"):
            memscan.scan(child.pid, tier="psutil")
        assert_one_line_error(run_cli("scan", str(child.pid)), "zombie")
    finally:
        child.wait()


def test_kernel_thread():
    kthreadd = 2
    if procfs.stat(kthreadd).kernel_thread is False:
        pytest.skip("pid 2 is not kthreadd in this pid namespace")
    with pytest.raises(memscan.Error, match="kernel thread"):
        memscan.scan(kthreadd)
    assert_one_line_error(run_cli("scan", str(kthreadd)), "kernel thread")


def test_exits_during_scans_never_give_a_figure():
    """Targets that exit while being scanned: a snapshot or NoSuchProcess, never anything else."""
    outcomes = {"snapshot": 0, "gone": 0}
    for _ in range(40):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.02)"])
        try:
            while True:
                try:
                    snap = memscan.scan(child.pid, tier="layout")
                except memscan.NoSuchProcess:
                    outcomes["gone"] += 1
                    break
                outcomes["snapshot"] += 1
                assert snap.total.rss > 0
                assert sum(c.rss for c in snap.categories.values()) == snap.total.rss
        finally:
            child.wait()
    assert outcomes["gone"] == 40 and outcomes["snapshot"] > 0


def fake_proc(tmp_path, monkeypatch, copied, **written) -> int:  # type: ignore[no-untyped-def]
    """/proc as memscan reads it, under ``tmp_path``, for this process: the
    files ``copied`` from the real one, ``written`` (name=bytes) as given."""
    pid = os.getpid()
    fake = tmp_path / str(pid)
    fake.mkdir()
    for name in copied:
        (fake / name).write_bytes(Path(f"/proc/{pid}/{name}").read_bytes())
    for name, data in written.items():
        (fake / name).write_bytes(data)
    monkeypatch.setattr(procfs, "PROCFS_PATH", str(tmp_path))
    return pid


def test_malformed_procfs_names_file_and_offset(tmp_path, monkeypatch, capsys):
    pid = fake_proc(tmp_path, monkeypatch, ("stat", "limits", "status"),
                    smaps=b"00400000-00401000 r-xp 00000000 08:01 12 /bin/x\nRss:  12 parsecs\n")
    with pytest.raises(memscan.ParseError) as err:
        memscan.scan(pid, tier="layout")
    assert err.value.path == f"{tmp_path}/{pid}/smaps" and err.value.offset == 48
    assert cli.main(["scan", str(pid)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "smaps: bad value at byte 48" in out.err


@pytest.mark.parametrize("statm", [b"", b"12 34 56\n", b"1 2 3 4 five 6 7\n"])
def test_malformed_statm_stops_the_sampler_with_its_name(tmp_path, monkeypatch, statm):
    """The Sampler's rss comes from statm: text that is not its seven numbers
    is a ParseError naming the file, never a figure read from it."""
    pid = fake_proc(tmp_path, monkeypatch, ("stat", "status", "maps"), statm=statm)
    with memscan.Sampler(pid, tier="psutil") as s:
        with pytest.raises(memscan.ParseError) as err:
            s.sample()
    assert err.value.path == f"{tmp_path}/{pid}/statm"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a root target and drop to nobody")
def test_another_users_process_falls_back_to_psutil():
    target = subprocess.Popen(["sleep", "60"])
    try:
        code, out, err = as_nobody(lambda: cli.main(["scan", str(target.pid), "--json"]))
        assert code == 0, err
        snap = json.loads(out)
        assert snap["source"] == snap["tier"] == "psutil" and snap["categories"] is None
        assert "CAP_SYS_PTRACE" in snap["warnings"][0]
        status = memscan.engine.engine.parse_status(Path(f"/proc/{target.pid}/status").read_bytes())
        assert abs(snap["total"]["rss"] - status.vm_rss) <= 64 * 1024
        # The layout tier asked for explicitly: a clear refusal.
        code, out, err = as_nobody(lambda: cli.main(["scan", str(target.pid), "--tier", "layout"]))
        assert code == 1 and out == "" and "permission denied" in err and err.count("\n") == 1
    finally:
        stop(target)


def test_bad_usage_exits_2():
    proc = run_cli("scan", "notapid")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_scans_go_on_after_a_parse_error(tmp_path, monkeypatch):
    """The read buffer is reused across scans: an error must not pin it."""
    pid = os.getpid()
    fake = tmp_path / str(pid)
    fake.mkdir()
    (fake / "stat").write_bytes(Path(f"/proc/{pid}/stat").read_bytes())
    (fake / "smaps").write_bytes(b"junk\n" * 100_000)
    with monkeypatch.context() as m:
        m.setattr(procfs, "PROCFS_PATH", str(tmp_path))
        with pytest.raises(memscan.ParseError) as err:
            memscan.scan(pid, tier="layout")
    kept = err  # the traceback stays alive, as in a caller that logs it
    snap = memscan.scan(pid, tier="layout")
    assert snap.total.rss > 0 and kept.value.offset == 0


def test_mappings_listed_twice_are_read_again(tmp_path, monkeypatch, capsys):
    """A mapping that grew between two of the kernel's reads of smaps is
    listed twice: smaps is read again; if every read does so, an error,
    never a sum that counts memory twice."""
    pid = os.getpid()
    real_read = procfs.read_smaps
    calls = []

    def once_overlapping(*args, **kwargs):  # type: ignore[no-untyped-def]
        n, table = real_read(*args, **kwargs)
        calls.append(n)
        if len(calls) == 1:
            return len(OVERLAPPING), memscan.engine.engine.parse_smaps(OVERLAPPING)
        return n, table

    monkeypatch.setattr(procfs, "read_smaps", once_overlapping)
    snap = memscan.scan(pid, tier="layout")
    assert len(calls) == 2 and snap.total.rss > 1 << 20
    monkeypatch.undo()

    fake_proc(tmp_path, monkeypatch, ("stat", "limits", "status"), smaps=OVERLAPPING)
    with pytest.raises(memscan.Error, match=f"pid {pid} kept changing its mappings while its smaps was read"):
        memscan.scan(pid, tier="layout")
    assert cli.main(["scan", str(pid)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "listed a mapping twice" in out.err


# ------------------------------------------------------------- the classes

EXAMPLES = [
    memscan.Error("pid 42 is a kernel thread: it has no user memory"),
    memscan.NoSuchProcess(42, "process is a zombie"),
    memscan.AccessDenied(42, "/proc/42/mem", "reading the Go heap needs ptrace-attach rights"),
    memscan.ParseError("bad value", 48, "/proc/42/smaps"),
    memscan.NoRuntimeInfo("the exact tier cannot read the Go heap of /bin/x: it has no DWARF", no_dwarf=True),
    memscan.HeapChanged("arena index 0x1 has no heapArena"),
    memscan.ReadLimitExceeded("reading the Go heap would exceed 256 MiB"),
    memscan.ToolchainMissing("no Go toolchain found"),
    memscan.BuildError("go build failed (exit 1)", "main.go:1:1: expected 'package'", 1),
    memscan.NoSuchCgroup("no such cgroup: /kubepods/x (under /sys/fs/cgroup/memory)"),
]


def test_every_exception_is_exported_and_has_an_example():
    classes = {c for c in vars(memscan._errors).values() if isinstance(c, type) and issubclass(c, BaseException)}
    assert classes == {type(e) for e in EXAMPLES}
    assert all(getattr(memscan, c.__name__) is c and c.__name__ in memscan.__all__ for c in classes)


@pytest.mark.parametrize("err", EXAMPLES, ids=lambda e: type(e).__name__)
def test_exceptions_pickle(err):
    """Exceptions cross process boundaries (multiprocessing, concurrent.futures) whole."""
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and back.args == err.args and str(back) == str(err)
    assert vars(back) == vars(err)
