"""The flight recorder (``memscan record --ring``): the last seconds kept in
memory and written at the target's exit, at a trigger or on Ctrl-C; a Go
program driven past its real v1 cgroup's limit until the kernel OOM-kills it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from memscan import plot, record
from memscan.ring import RingWriter, Trigger

from helpers.cgroups import memory_cgroup
from helpers.goprogram import GoProgramError
from helpers.processes import stop

MIB = 1 << 20


def ring_cli(*args: str) -> "subprocess.Popen[str]":
    return subprocess.Popen([sys.executable, "-m", "memscan", "record", *args], stderr=subprocess.PIPE, text=True)


def finish(rec: "subprocess.Popen[str]", timeout: float = 60) -> int:
    """Its exit status once it ended; what it printed is in the assertion."""
    _, err = rec.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return rec.returncode


@pytest.mark.parametrize("text, what, value, percent", [
    ("rss>1GiB", "rss", 1 << 30, False), ("go_heap>=512MiB", "go_heap", 512 * MIB, False),
    ("cgroup>90%", "cgroup", 90.0, True), ("cgroup > 900MB", "cgroup", 900e6, False),
])
def test_triggers(text, what, value, percent):
    t = Trigger(text)
    assert (t.what, t.value, t.percent) == (what, value, percent)


@pytest.mark.parametrize("text", ["rss<1GiB", "heap>1GiB", "rss>90%", "rss>1XB", "rss>"])
def test_bad_triggers(text):
    with pytest.raises(ValueError):
        Trigger(text)


def test_ring_keeps_only_the_last_seconds(tmp_path):
    path = str(tmp_path / "ring.jsonl")
    with RingWriter(path, {"memscan": "x", "pid": 1}, seconds=0.2, limit=1000) as w:
        w._start(time.monotonic(), time.time())
        for i in range(5):
            w._put(json.dumps({"seq": i}))
        time.sleep(0.3)
        w._put(json.dumps({"seq": 5}))
        w.event("stop", reason="trigger")
        assert w.flush() == 1
    lines = [json.loads(x) for x in (tmp_path / "ring.jsonl").read_text().splitlines()]
    assert lines[0]["ring"] == 0.2 and [x.get("seq") for x in lines[1:]] == [5, None]
    with RingWriter(str(tmp_path / "bounded.csv"), {"memscan": "x"}, seconds=60, limit=3) as w:
        for i in range(10):
            w._put(str(i))
        assert w.flush() == 3


def test_exit_by_signal_and_trigger(tmp_path):
    target = subprocess.Popen(["sleep", "30"])
    try:
        out = str(tmp_path / "sig.csv")
        rec = ring_cli(str(target.pid), "--ring", "1", "--hz", "20", "-o", out)
        time.sleep(2)
        target.send_signal(signal.SIGTERM)
        assert finish(rec) == 0
        got = record.read(out)
        assert got.end["event"] == "exit" and got.end["signal"] == "SIGTERM" and got.end["oom_kill"] is False
        mono = got.column("mono")
        # Only the last second is kept, and it ends within a tick or two of the death.
        assert 0.6 <= mono[-1] - mono[0] <= 1.15 and got.end["died"] - mono[-1] < 0.5
    finally:
        target.kill()
        target.wait()
    target = subprocess.Popen(["sleep", "30"])
    try:
        out = str(tmp_path / "trig.jsonl")
        rec = ring_cli(str(target.pid), "--ring", "5", "--hz", "20", "-o", out, "--trigger", "rss>1KiB")
        assert finish(rec) == 0
        got = record.read(out)
        assert got.end["reason"] == "trigger" and got.meta["trigger"] == "rss>1KiB" and len(got.rows) >= 1
        rec = ring_cli(str(target.pid), "--ring", "5", "-o", out)
        time.sleep(1.5)
        rec.send_signal(signal.SIGINT)
        assert finish(rec) == 130
        assert record.read(out).end["reason"] == "interrupted"
    finally:
        target.kill()
        target.wait()


def test_exit_of_a_process_its_parent_reaps_at_once(tmp_path):
    # The parent waits on the target, so /proc never shows it a zombie: the
    # proc connector tells how it ended.
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen(['sleep', '30']); "
                               "print(p.pid, flush=True); sys.exit(p.wait() and 0)"], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        out = str(tmp_path / "reaped.jsonl")
        rec = ring_cli(str(pid), "--ring", "2", "--hz", "20", "-o", out)
        time.sleep(1.5)
        os.kill(pid, signal.SIGUSR1)
        assert finish(rec) == 0
        assert record.read(out).end["signal"] == "SIGUSR1"
    finally:
        stop(parent)


def test_trigger_needs_ring():
    proc = subprocess.run([sys.executable, "-m", "memscan", "record", "1", "-o", "x.csv", "--trigger", "rss>1GiB"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--trigger needs --ring" in proc.stderr


@pytest.mark.slow
def test_oom_kill_in_a_real_cgroup(go_program, tmp_path):
    pytest.importorskip("matplotlib")
    prog = go_program(cgo=True)
    with memory_cgroup(limit=160 * MIB) as cg:
        cg.add(prog.pid)
        out = str(tmp_path / "oom.jsonl")
        rec = ring_cli(str(prog.pid), "--ring", "3", "--hz", "20", "--tier", "layout", "-o", out)
        time.sleep(1.0)
        with pytest.raises(GoProgramError):
            for _ in range(40):  # 320 MiB: twice the limit
                prog.command("alloc 8")
                time.sleep(0.2)
        assert finish(rec) == 0
        assert cg.file("memory.oom_control").split()[-1] == "1"
    got = record.read(out)
    end = got.end
    assert end["event"] == "exit" and end["signal"] == "SIGKILL" and end["oom_kill"] is True, end
    mono, rss = got.column("mono"), got.column("rss")
    assert 2.5 <= mono[-1] - mono[0] <= 3.1
    # The last sample within a tick or two (50 ms) of the death, as the kernel timed it.
    assert 0 <= end["died"] - mono[-1] <= 0.15, (end["died"], mono[-1])
    # The heap grew towards the limit in the seconds kept.
    assert max(rss) > 100 * MIB and rss[-1] > rss[0]
    png = plot.plot(out)
    assert png.endswith(".png")


def test_exit_watch_sees_the_wait_status():
    from memscan.kernel.exits import ExitWatch

    for argv, status in ((["sleep", "30"], signal.SIGKILL), (["sh", "-c", "sleep 0.3; exit 3"], 3 << 8)):
        child = subprocess.Popen(argv)
        watch = ExitWatch(child.pid)
        if not watch.available:
            stop(child)
            pytest.skip("the proc connector needs CAP_NET_ADMIN")
        try:
            if status == signal.SIGKILL:
                child.kill()
            child.wait()
            assert watch.status(timeout=5) == status
        finally:
            watch.close()
