"""Naming processes by what they run (``--match``), listing them (``ps``),
and the mappings behind a scan's figures (``scan --mappings``), on real
processes."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import uuid

import pytest

from memscan.core.exact import C_DETAIL, DETAIL

from helpers.cli import assert_one_line_error, run_cli
from helpers.processes import stop

ONE_PID_COMMANDS = (("watch",), ("record", "-o", "x.csv"), ("explain",), ("check", "--max", "rss=1GiB"))


@pytest.fixture
def sleeper(tmp_path):
    """Factory: ``sleeper(argv0, name="sleep")``: a sleep(1) whose command
    line is ``argv0 600`` and whose command name (comm) is ``name``."""
    started = []

    def start(argv0: str, name: str = "sleep") -> subprocess.Popen:
        exe = shutil.which("sleep")
        if name != "sleep":
            exe = shutil.copy(exe, tmp_path / name)
        proc = subprocess.Popen([argv0, "600"], executable=exe)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop(proc)


def token() -> str:
    return f"ms{uuid.uuid4().hex[:12]}"


def test_match_scans_what_a_pid_scan_does(cprog):
    seed = random.randrange(10**9, 2**32)
    prog = cprog("mallocs", seed)
    docs = json.loads(run_cli("scan", "--match", rf"mallocs {seed}$", "--tier", "layout", "--json").stdout)
    by_pid = json.loads(run_cli("scan", str(prog.pid), "--tier", "layout", "--json").stdout)
    assert [doc["pid"] for doc in docs] == [prog.pid]
    # The program sleeps: its resident memory stands still between the scans.
    for cat, c in by_pid["categories"].items():
        assert (docs[0]["categories"][cat]["rss"], docs[0]["categories"][cat]["size"]) == (c["rss"], c["size"]), cat
    assert docs[0]["command"] == by_pid["command"] == "mallocs"


def test_match_finds_the_command_name_too(sleeper):
    name = token()
    proc = sleeper("renamed", name)
    docs = json.loads(run_cli("scan", "--match", f"^{name}$", "--tier", "layout", "--json").stdout)
    assert [(doc["pid"], doc["command"]) for doc in docs] == [(proc.pid, name)]


def test_match_scans_every_match(sleeper):
    word = token()
    procs = [sleeper(word), sleeper(word)]
    docs = json.loads(run_cli("scan", "--match", word, "--tier", "layout", "--json").stdout)
    assert sorted(doc["pid"] for doc in docs) == sorted(p.pid for p in procs)
    table = run_cli("scan", "--match", word, "--tier", "layout")
    assert table.returncode == 0, table
    headers = [line for line in table.stdout.splitlines() if line.startswith("pid ") and ":" in line]
    assert headers == [f"pid {p.pid}: {word} 600" for p in sorted(procs, key=lambda p: p.pid)]
    assert table.stdout.count("% rss") == 2


def test_match_without_a_match():
    word = token()
    assert_one_line_error(run_cli("scan", "--match", word), f"no process matches {word}")


@pytest.mark.parametrize("command", [("scan",), *ONE_PID_COMMANDS])
def test_a_pid_or_match_not_both(command):
    both = run_cli(command[0], str(os.getpid()), "--match", "x", *command[1:])
    assert both.returncode == 2 and "give a PID or --match REGEX, not both" in both.stderr, both
    neither = run_cli(command[0], *command[1:])
    assert neither.returncode == 2 and "give a PID or --match REGEX" in neither.stderr, neither


@pytest.mark.parametrize("command", ONE_PID_COMMANDS)
def test_one_process_commands_list_several_matches(sleeper, command, tmp_path):
    word = token()
    procs = [sleeper(word), sleeper(word)]
    proc = run_cli(command[0], "--match", word, *command[1:])
    listed = ", ".join(f"{p.pid} ({word} 600)" for p in sorted(procs, key=lambda p: p.pid))
    assert_one_line_error(proc, f"2 processes match {word}: {listed}; give one pid, or a narrower REGEX")


def test_ps_lists_processes_without_go(sleeper):
    proc = sleeper(token())
    found = {p["pid"]: p for p in json.loads(run_cli("ps", "--json").stdout)}
    me = found[os.getpid()]
    assert me["go"] is None and me["path"] == os.readlink("/proc/self/exe") and me["rss"] > 0
    assert found[proc.pid]["command"].endswith(" 600") and found[proc.pid]["name"] == "sleep"
    table = run_cli("ps")
    assert [line for line in table.stdout.splitlines() if f" {proc.pid} " in line and " - " in line], table.stdout
    assert proc.pid not in {p["pid"] for p in json.loads(run_cli("ps", "--go", "--json").stdout)}


@pytest.mark.slow
def test_ps_go_filters(go_program):
    prog = go_program()
    every = {p["pid"]: p for p in json.loads(run_cli("ps", "--json").stdout)}
    go = {p["pid"]: p for p in json.loads(run_cli("ps", "--go", "--json").stdout)}
    assert every[prog.pid] == go[prog.pid]
    assert go[prog.pid]["go"] == {"version": f"go{prog.version}", "path": prog.binary, "cgo": prog.cgo}
    assert os.getpid() in every and os.getpid() not in go
    assert all(p["go"] is not None for p in go.values())


def mappings(*args: str) -> dict:
    proc = run_cli("scan", *args, "--json")
    assert proc.returncode == 0, proc
    return json.loads(proc.stdout)


def test_mappings_show_a_big_malloc(cprog):
    # Three chunks by plain malloc (memalign's would leave unwritten slack in their mappings).
    prog = cprog("mallocs", 5, "chunks=3")
    doc = mappings(str(prog.pid), "--tier", "exact", "--mappings", "c_malloc")
    top = doc["mappings"]
    assert 0 < len(top) <= 20 and {p["category"] for p in top} == {"c_malloc"}
    assert [p["rss"] for p in top] == sorted((p["rss"] for p in top), reverse=True)
    # The biggest mmapped chunk malloc made lies in one piece in use,
    # resident with every chunk beside it in that piece (every byte of them
    # was written; the threads' own chunks, not listed, may lie there too).
    addr, length = max(prog.report["chunks"], key=lambda c: c[1])[:2]
    held = [p for p in top if p["start"] <= addr and addr + length <= p["end"]]
    assert len(held) == 1 and held[0]["state"] == "in_use", top
    inside = [c[1] for c in prog.report["chunks"] if held[0]["start"] <= c[0] < held[0]["end"]]
    assert sum(inside) - 8192 * len(inside) <= held[0]["rss"] <= held[0]["size"], (held[0], inside)


def test_mappings_add_up_to_the_categories(cprog):
    prog = cprog("mallocs", 6)
    doc = mappings(str(prog.pid), "--tier", "exact", "--mappings", "--top", "100000")
    sums: dict = {}
    for p in doc["mappings"]:
        sums[p["category"]] = sums.get(p["category"], 0) + p["rss"]
        assert p["state"] in (None, *C_DETAIL)
    assert {cat: n for cat, n in sums.items() if n} == {cat: c["rss"] for cat, c in doc["categories"].items() if c["rss"]}


@pytest.mark.slow
def test_mappings_of_the_go_heap(go_program):
    prog = go_program()
    doc = mappings(str(prog.pid), "--tier", "exact", "--mappings", "go_heap", "--top", "100000")
    states: dict = {}
    for p in doc["mappings"]:
        assert p["category"] == "go_heap" and p["state"] in DETAIL, p
        states[p["state"]] = states.get(p["state"], 0) + p["rss"]
    assert states["objects"] > 0
    assert {s: n for s, n in states.items() if n} == {s: c["rss"] for s, c in doc["go_heap_detail"].items() if c["rss"]}
    table = run_cli("scan", str(prog.pid), "--mappings", "go_heap", "--top", "3")
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.stdout.splitlines() if "│" in line]
    assert table.returncode == 0 and ["go_heap", "objects"] in [row[1:3] for row in rows], table


def test_mappings_usage(cprog):
    prog = cprog("exits", 4, 60_000_000)
    for args in (("--mappings", "nothing"), ("--top", "3"), ("--mappings", "--top", "0")):
        proc = run_cli("scan", str(prog.pid), *args)
        assert proc.returncode == 2, (args, proc)
    assert_one_line_error(run_cli("scan", str(prog.pid), "--tier", "psutil", "--mappings"), "--mappings needs smaps")


def test_check_by_match(sleeper):
    """check --match: the bound applies to the one process matched."""
    word = token()
    proc = sleeper(word)
    ok = run_cli("check", "--match", word, "--max", "rss=1GiB", "--tier", "layout")
    assert ok.returncode == 0 and ok.stdout.startswith("ok rss "), ok
    failed = run_cli("check", "--match", word, "--max", "rss=4KiB", "--tier", "layout")
    assert failed.returncode == 1 and failed.stdout.startswith("FAIL rss "), failed
    assert proc.poll() is None
