"""The ``memscan`` command as people meet it first, on real processes:
what it says of a pid or a file it cannot use, where warnings go, output
that is never cut, and help for every argument."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

import pytest

import memscan
from memscan import cli

from helpers.cli import assert_one_line_error, assert_whole, dead_pid, run_cli

PID_COMMANDS = (("scan",), ("record", "-o", "x.csv"), ("watch",), ("explain",))


def test_pid_that_never_existed():
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) + 1
    for command in PID_COMMANDS:
        assert_one_line_error(run_cli(command[0], str(pid), *command[1:]), f"no such process (pid {pid})")
    assert_one_line_error(run_cli("cgroup", "--pid", str(pid)), f"no such process (pid {pid})")


def test_pid_that_exited():
    assert_one_line_error(run_cli("scan", str(dead_pid())), "no longer exists")


@pytest.mark.parametrize("pid", ["0", "-5"])
def test_pid_not_positive_is_usage(pid):
    for command in PID_COMMANDS:
        proc = run_cli(command[0], pid, *command[1:])
        assert proc.returncode == 2 and "process id is 1 or more" in proc.stderr, proc
    for command in ("export", "cgroup"):
        proc = run_cli(command, "--pid", pid)
        assert proc.returncode == 2 and "process id is 1 or more" in proc.stderr, proc


def test_plot_not_a_recording(tmp_path):
    other_csv = tmp_path / "other.csv"
    other_csv.write_text("a,b\n1,2\n")
    other_jsonl = tmp_path / "other.jsonl"
    other_jsonl.write_text('{"a": 1}\n{"b": 2}\n')
    broken_jsonl = tmp_path / "broken.jsonl"
    broken_jsonl.write_text("{not json\n")
    for path in ("/etc/passwd", other_csv, other_jsonl, broken_jsonl):
        assert_one_line_error(run_cli("plot", str(path)), f"{path}: not a memscan recording")


def test_warnings_on_stderr(cprog):
    """The psutil tier's warning names what the table shows as n/a, on
    stderr: stdout is the table alone."""
    prog = cprog("exits", 4, 60_000_000)
    proc = run_cli("scan", str(prog.pid), "--tier", "psutil")
    assert proc.returncode == 0, proc
    assert "warning" not in proc.stdout and "n/a" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memscan: warning:"), proc.stderr
    assert "n/a in the table, 0 in JSON" in lines[0] and "given as 0" not in lines[0]


@pytest.mark.parametrize("columns", ["80", "40"])
def test_scan_table_whole_when_piped(cprog, columns):
    prog = cprog("exits", 4, 60_000_000)
    proc = subprocess.run([sys.executable, "-m", "memscan", "scan", str(prog.pid)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, COLUMNS=columns))
    assert proc.returncode == 0, proc
    assert_whole(proc.stdout)
    # Named by its command line, then the table.
    first, title = proc.stdout.splitlines()[:2]
    assert first == f"pid {prog.pid}: {shlex.join(prog.proc.args)}" and title.startswith(f"pid {prog.pid} ·"), proc.stdout
    assert "% rss" in proc.stdout


@pytest.mark.slow
def test_ps_shows_whole_paths(go_program):
    prog = go_program()
    path = os.readlink(f"/proc/{prog.pid}/exe")
    assert len(path) > 30  # a path rich would cut in an 80-column table
    proc = run_cli("ps")
    assert proc.returncode == 0, proc
    assert_whole(proc.stdout)
    assert [line for line in proc.stdout.splitlines() if f" {prog.pid} " in line and path in line], proc.stdout


def labels(table: str) -> list:
    """The first column of a scan table's rows."""
    return [line.split("│")[1].strip() for line in table.splitlines() if line.count("│") > 2]


def test_scan_without_go(cprog):
    """A C program: no Go rows in the table, every category in the JSON,
    with the command name and the executable."""
    prog = cprog("exits", 4, 60_000_000)
    table = run_cli("scan", str(prog.pid), "--tier", "exact")
    assert table.returncode == 0, table
    rows = labels(table.stdout)
    assert "go_heap" not in rows and "go_runtime" not in rows
    assert rows[:2] == ["c_malloc", "in_use"] and "total" in rows
    doc = json.loads(run_cli("scan", str(prog.pid), "--json").stdout)
    assert set(doc["categories"]) == set(memscan.CATEGORIES)
    assert doc["runtime"]["go"] is None
    with open(f"/proc/{prog.pid}/comm") as f:
        assert doc["command"] == f.read().strip()
    assert doc["executable"] == os.readlink(f"/proc/{prog.pid}/exe")


@pytest.mark.slow
def test_scan_of_go(go_program):
    """A Go program without cgo: its Go rows, no C allocator states."""
    prog = go_program()
    table = run_cli("scan", str(prog.pid), "--tier", "exact")
    rows = labels(table.stdout)
    assert rows[:2] == ["go_heap", "objects"] and "go_runtime" in rows
    assert rows[rows.index("c_malloc") + 1] == "thread_stacks"
    doc = json.loads(run_cli("scan", str(prog.pid), "--json").stdout)
    assert doc["command"] == "memscandemo" and doc["executable"] == doc["runtime"]["go"]["path"]


def test_every_argument_has_help():
    def walk(ap, where):
        for action in ap._actions:
            yield where, action
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{where} {name}")

    missing = [f"{where} {action.dest}" for where, action in walk(cli.parser(), "memscan") if not action.help]
    assert not missing


def test_record_says_a_rate_it_cannot_meet(cprog, tmp_path):
    prog = cprog("exits", 4, 60_000_000)
    out = str(tmp_path / "r.csv")
    fast = run_cli("record", str(prog.pid), "-o", out, "--hz", "100000", "--duration", "1")
    assert fast.returncode == 0, fast
    said = [line for line in fast.stderr.splitlines() if "cannot be met" in line]
    assert len(said) == 1 and said[0].startswith("memscan: warning: --hz 100000 cannot be met:"), fast.stderr
    assert fast.stderr.index("cannot be met") < fast.stderr.index("memscan: done")
    slow = run_cli("record", str(prog.pid), "-o", out, "--hz", "10", "--duration", "1")
    assert slow.returncode == 0 and "cannot be met" not in slow.stderr, slow
