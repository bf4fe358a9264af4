"""memscan watch: the sparkline, the table on real samples of a Go program
whose heap is freed while it is watched, and the command in a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import random
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memscan.format import mib
from memscan.watch import BLOCKS, SPARK_FLOOR, sparkline, view

MIB = 1 << 20


def test_sparkline():
    assert sparkline([]) == ""
    assert sparkline([5, 5, 5]) == "▁▁▁"
    assert sparkline(list(range(8))) == BLOCKS
    assert sparkline([0, 7, 14, 14], width=3) == "▁▅█"  # the last two are one group
    # 100 values in 10 characters: the one peak stays visible.
    values = [0] * 100
    values[55] = 3
    assert sparkline(values, width=10) == "▁▁▁▁▁█▁▁▁▁"
    # A change far below the floor stays low; one of the floor's size is full height.
    assert sparkline([0, 4096, 0], floor=1 << 20) == "▁▁▁"
    assert sparkline([0, 1 << 20, 0], floor=1 << 20) == "▁█▁"


def test_sparkline_scale():
    """Sub-MiB jitter around a flat level draws flat (under half a MiB) or
    one block up at most; a 50 MiB step draws full height."""
    rng = random.Random(1)
    level = 300 * MIB
    assert sparkline([level + rng.randrange(MIB // 2) for _ in range(24)], floor=SPARK_FLOOR) == "▁" * 24
    assert set(sparkline([level + rng.randrange(MIB) for _ in range(24)], floor=SPARK_FLOOR)) <= set(BLOCKS[:2])
    step = [level + rng.randrange(MIB // 2) for _ in range(12)] + [level + 50 * MIB] * 12
    assert sparkline(step, floor=SPARK_FLOOR) == "▁" * 12 + "█" * 12


@given(st.lists(st.integers(0, 1 << 40), min_size=1, max_size=300), st.integers(1, 40))
def test_sparkline_shape(values, width):
    line = sparkline(values, width)
    assert len(line) == min(len(values), width) and set(line) <= set(BLOCKS)
    if max(values) > min(values) and len(values) <= width:
        assert [line[i] for i, v in enumerate(values) if v == max(values)] == ["█"] * values.count(max(values))
        assert [line[i] for i, v in enumerate(values) if v == min(values)] == ["▁"] * values.count(min(values))


def around(prog, command: str, n: int):  # type: ignore[no-untyped-def]
    """``n`` exact-tier samples of ``prog`` 20 ms apart, ``command`` sent
    to it, then ``n`` more."""
    from memscan.core.sampler import Sampler

    samples = []
    with Sampler(prog.pid, 0.02, "exact") as sampler:
        for k in range(2 * n):
            if k == n:
                prog.command(command)
            samples.append(sampler.sample())
            time.sleep(0.02)
    return samples


@pytest.mark.slow
def test_view_of_a_heap_being_freed(go_program):
    from rich.console import Console

    prog = go_program(args=("-heap", 64, "-goroutines", 20))
    samples = around(prog, "free", 10)  # the live heap dropped, collected and returned to the OS
    heap = [s.categories["go_heap"] for s in samples]
    assert heap[0] - heap[-1] >= 60 * MIB, heap

    console = Console(record=True, width=120, color_system=None)
    console.print(view(samples, 10.0, heading=(f"pid {prog.pid}", "x" * 500)))
    text = console.export_text()
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in text.splitlines() if line.startswith("│")}
    assert list(rows)[:7] == ["go_heap", "objects", "stacks", "free", "released", "reserved", "go_runtime"]
    assert set(rows) == {"total", "objects", "stacks", "free", "released", "reserved",
                         "go_heap", "go_runtime", "c_malloc", "thread_stacks", "binary", "shared_libs",
                         "mapped_files", "shmem", "kernel", "anon_other"}
    last = samples[-1]
    assert rows["go_heap"] == [mib(heap[-1], unit=False), f"{(heap[-1] - heap[0]) / MIB:+,.1f}",
                                sparkline(heap, floor=SPARK_FLOOR)]
    assert text.splitlines()[:2] == [f"pid {prog.pid}", "x" * 119 + "…"]  # a heading line is never wrapped
    assert rows["go_heap"][2][0] == "█" and rows["go_heap"][2][-1] == "▁"
    assert rows["objects"][0] == mib(last.go_heap_detail["objects"], unit=False)
    assert rows["total"][0] == mib(last.rss, unit=False)
    assert f"pid {prog.pid}" in text and "Δ 10 s" in text


@pytest.mark.slow
def test_view_of_a_quiet_program_then_a_step(go_program):
    """A real Go program, idle, then given 50 MiB more live heap: each row
    that moved by less than half a MiB draws flat, less than 1 MiB at most
    one block up; go_heap's step draws from the lowest block to the top."""
    from rich.console import Console

    prog = go_program(args=("-heap", 16, "-goroutines", 20))
    samples = around(prog, "alloc 50", 12)
    console = Console(record=True, width=120, color_system=None)
    console.print(view(samples, 10.0))
    rows = {line.split("│")[1].strip(): line.split("│")[4].strip()
            for line in console.export_text().splitlines() if line.startswith("│")}
    heap = [s.categories["go_heap"] for s in samples]
    assert heap[-1] - heap[0] >= 48 * MIB, heap
    assert rows["go_heap"][0] == "▁" and rows["go_heap"][-1] == "█", rows
    for cat in samples[-1].categories:
        values = [s.categories[cat] for s in samples]
        moved = max(values) - min(values)
        if moved < MIB // 2:
            assert set(rows[cat]) == {"▁"}, (cat, values)
        elif moved < MIB:
            assert set(rows[cat]) <= set(BLOCKS[:2]), (cat, values)


def watch_in_a_terminal(pid: int, stop):  # type: ignore[no-untyped-def]
    """Run ``memscan watch PID`` on a pseudo-terminal of 120x40 for ~1.5 s,
    then call ``stop(proc)``; return (exit status, terminal output, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = dict(os.environ, TERM="xterm-256color")
    env.pop("COLUMNS", None)
    proc = subprocess.Popen([sys.executable, "-m", "memscan", "watch", str(pid), "--interval", "0.05"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    out = bytearray()
    stopped = False
    start = time.monotonic()
    try:
        while True:
            if not stopped and time.monotonic() - start > 1.5:
                stop(proc)
                stopped = True
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's last writer closed it
                    break
                if not chunk:
                    break
                out += chunk
            assert time.monotonic() - start < 30, out[-2000:]
        code = proc.wait(timeout=30)
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
        os.close(master)
    return code, out.decode("utf-8", "replace"), err


@pytest.mark.slow
def test_cli_ends_when_the_target_exits(go_program):
    prog = go_program(args=("-heap", 16))
    code, out, err = watch_in_a_terminal(prog.pid, lambda proc: prog.stop())
    assert code == 0 and err == "", err
    assert out.count("go_heap") >= 3, out  # redrawn several times
    assert "\x1b[2K" in out  # rich erases the previous table: a live view
    last_line = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).strip().splitlines()[-1]
    assert last_line.startswith(f"pid {prog.pid} exited:") and "samples watched" in last_line, out[-500:]


@pytest.mark.slow
def test_cli_ctrl_c(go_program):
    prog = go_program(args=("-heap", 16))
    code, out, err = watch_in_a_terminal(prog.pid, lambda proc: proc.send_signal(signal.SIGINT))
    assert code == 130 and err == "memscan: interrupted\n", err
    assert "go_heap" in out and prog.proc.poll() is None


def test_view_marks_old_states():
    """Owners and Go heap states older than STALE_AFTER are said to be, with their age."""
    from rich.console import Console

    from memscan._types import CATEGORIES
    from memscan.core.exact import DETAIL
    from memscan.core.sampler import Sample
    from memscan.record import STALE_AFTER

    def text(age):  # type: ignore[no-untyped-def]
        cats = dict.fromkeys(CATEGORIES, MIB)
        s = Sample(1, 0, 0.0, 0.0, "exact", 10 * MIB, cats, dict.fromkeys(DETAIL, 0), None, 0, age)
        console = Console(record=True, width=120, color_system=None)
        console.print(view([s], 10.0))
        return console.export_text()

    assert "stale" not in text(STALE_AFTER / 2) and "stale" not in text(None)
    assert f"stale: owners and Go heap states {STALE_AFTER + 2.25:.1f} s old" in text(STALE_AFTER + 2.25)
