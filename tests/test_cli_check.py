"""memscan check: bounds held against a real cgo program whose C allocations
it counts itself, growth caught while it allocates, usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from helpers.cli import assert_one_line_error, dead_pid, run_cli

MIB = 1 << 20


def check(*args):
    proc = run_cli("check", *map(str, args))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.mark.slow
def test_bounds_on_a_c_program(go_program):
    prog = go_program(cgo=True, args=("-cmalloc", 48))
    big = prog.command("stats")["c_big"]
    assert big >= 48 * MIB
    pid = prog.pid

    # Room above the program's own figure: every bound holds.
    ok = check(pid, "--max", f"c_malloc={big + 64 * MIB}", "--max", f"rss={(big + 512 * MIB) // MIB}MiB",
               "--max", "go_heap.free=1GiB", "--tier", "exact")
    assert ok.returncode == 0, ok
    lines = ok.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", "c_malloc"], ["ok", "rss"], ["ok", "go_heap.free"]]
    assert lines[1].endswith(f"<= {(big + 512 * MIB) / MIB:,.1f} MiB")
    assert big - MIB <= float(lines[0].split()[2].replace(",", "")) * MIB <= big + 16 * MIB, lines

    # A bound below what the program holds in C: that one fails, the others hold.
    low = f"{big // 2 // MIB}MiB"
    failed = check(pid, "--max", f"c_malloc={low}", "--max", f"rss={big + 512 * MIB}", "--tier", "exact")
    assert failed.returncode == 1, failed
    lines = failed.stdout.splitlines()
    assert lines[0].startswith("FAIL c_malloc ") and lines[0].endswith(f"> {big // 2 // MIB:,.1f} MiB"), lines
    assert lines[1].startswith("ok rss ") and len(lines) == 2

    doc = json.loads(check(pid, "--max", f"c_malloc={low}", "--max", f"rss={low}", "--json", "--tier", "exact").stdout)
    assert doc["pid"] == pid and doc["ok"] is False and doc["tier"] == "exact"
    c, rss = doc["bounds"]
    assert (c["kind"], c["what"], c["limit"], c["ok"]) == ("max", "c_malloc", big // 2 // MIB * MIB, False)
    assert big - MIB <= c["value"] <= big + 16 * MIB and rss["value"] >= c["value"] and not rss["ok"]

    # The layout tier has no C allocator states: a bound on one fails.
    unmeasured = check(pid, "--max", "c_malloc.free=1GiB", "--tier", "layout")
    assert unmeasured.returncode == 1 and unmeasured.stdout.startswith("FAIL c_malloc.free not measured")


@pytest.mark.slow
def test_growth_caught_while_the_program_allocates(go_program):
    prog = go_program(cgo=True, args=("-cmalloc", 8))
    # Still: no growth beyond a page or two.
    flat = check(prog.pid, "--max-growth", "c_malloc=1MiB", "--for", "1s", "--tier", "exact")
    assert flat.returncode == 0 and flat.stdout.startswith("ok c_malloc grew ") and " in 1 s" in flat.stdout

    before = prog.command("stats")["c_big"]
    watcher = subprocess.Popen([sys.executable, "-m", "memscan", "check", str(prog.pid), "--max-growth",
                                "c_malloc=8MiB", "--max-growth", "go_heap=8MiB", "--max", "rss=64GiB", "--for", "2s",
                                "--json", "--tier", "exact"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while watcher.poll() is None:
        prog.command("cleak 4")
        time.sleep(0.25)
    out, err = watcher.communicate()
    leaked = prog.command("stats")["c_big"] - before
    assert watcher.returncode == 1 and "Traceback" not in err, err
    doc = json.loads(out)
    rss, c, go = doc["bounds"]
    assert rss["ok"] and rss["kind"] == "max"
    assert (c["kind"], c["what"], c["seconds"], c["ok"]) == ("growth", "c_malloc", 2.0, False)
    # About 2 s of 16 MiB/s, and at most what the program allocated while watched.
    assert 8 * MIB < c["value"] <= leaked + MIB, (c, leaked)
    assert go["ok"] and abs(go["value"]) < 8 * MIB


@pytest.mark.parametrize("args, words", [
    ((), "give at least one bound"),
    (("--max", "heap=1GiB"), "unknown figure 'heap'"),
    (("--max", "rss=12XB"), "not a size"),
    (("--max", "rss"), "not WHAT=SIZE"),
    (("--max", "go_heap.freed=1MiB"), "unknown figure"),
    (("--max-growth", "rss=1MiB"), "--max-growth needs --for"),
    (("--max", "rss=1GiB", "--for", "2s"), "--for is for --max-growth"),
    (("--max-growth", "rss=1MiB", "--for", "0s"), "invalid duration"),
    (("--max", "rss=1GiB", "--tier", "best"), "invalid choice"),
])
def test_usage_errors(args, words):
    proc = check(1, *args)
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert proc.stderr.splitlines()[-1].startswith("memscan check: error:") and words in proc.stderr, proc.stderr


def test_sizes_and_a_process_that_is_gone():
    here = subprocess.Popen(["sleep", "30"])
    try:
        # 100MB is SI (10^8 bytes), 100MiB IEC: a sleeping process holds far less than either.
        for amount, shown in (("100MB", "95.4 MiB"), ("100MiB", "100.0 MiB"), ("104857600", "100.0 MiB")):
            proc = check(here.pid, "--max", f"rss={amount}", "--tier", "layout")
            assert proc.returncode == 0 and proc.stdout.strip().endswith(f"<= {shown}"), proc
    finally:
        here.kill()
        here.wait()
    assert_one_line_error(check(dead_pid(), "--max", "rss=1GiB"), "no")
