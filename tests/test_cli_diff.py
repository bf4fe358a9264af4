"""memscan diff: two scans of a real program around an allocation of a
known size, two positions of a real recording of it, and bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from memscan import CATEGORIES, record
from memscan.diff import FIGURES

from helpers.cli import assert_one_line_error, run_cli

MIB = 1 << 20


def scan_to(path, pid):
    proc = run_cli("scan", str(pid), "--json", "--tier", "exact")
    assert proc.returncode == 0, proc.stderr
    path.write_text(proc.stdout)
    return str(path)


def diff(*args):
    proc = run_cli("diff", *args)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc
    return proc.stdout


def rows(doc):
    return {r["name"]: r for r in doc["rows"]}


@pytest.mark.slow
def test_two_scans_around_a_c_allocation(go_program, tmp_path):
    prog = go_program(cgo=True, args=("-cmalloc", 8))
    before = prog.command("stats")["c_big"]
    a = scan_to(tmp_path / "a.json", prog.pid)
    leaked = prog.command("cleak 40")["c_big"] - before
    assert leaked == 40 * MIB
    b = scan_to(tmp_path / "b.json", prog.pid)

    doc = json.loads(diff(a, b, "--json"))
    first = doc["rows"][0]
    assert first["name"] == "c_malloc"
    assert abs(first["rss"]["change"] - leaked) <= MIB, first
    assert first["rss"]["change"] == first["rss"]["b"] - first["rss"]["a"]
    # A's and B's own figures, as the scans wrote them.
    scans = [json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json")]
    assert [first["rss"]["a"], first["rss"]["b"]] == [s["categories"]["c_malloc"]["rss"] for s in scans]
    assert doc["rss"]["change"] == scans[1]["total"]["rss"] - scans[0]["total"]["rss"]
    assert doc["size"]["change"] == scans[1]["total"]["size"] - scans[0]["total"]["size"]
    # The allocation is one malloc'd chunk in use: the states say where it went.
    by = rows(doc)
    assert abs(by["c_malloc.in_use"]["rss"]["change"] - leaked) <= MIB
    assert sum(by[f"c_malloc.{s}"]["rss"]["change"] for s in ("in_use", "free", "reserved", "unassigned")) \
        == first["rss"]["change"]
    # Every figure is in the JSON, changed or not; biggest movers first.
    assert [r["name"] for r in doc["rows"]] != list(FIGURES[1:])  # sorted, not in the columns' order
    assert sorted(r["name"] for r in doc["rows"]) == sorted(CATEGORIES + record.DETAIL_COLUMNS + record.C_DETAIL_COLUMNS)
    changes = [abs(r["rss"]["change"]) for r in doc["rows"] if r["rss"]["change"] is not None]
    assert changes == sorted(changes, reverse=True)

    text = diff(a, b).splitlines()
    assert text[2].startswith("rss ")
    table = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text if line.startswith("│")]
    assert table[0][0] == "c_malloc" and abs(float(table[0][3]) * MIB - leaked) <= MIB
    shown = {r[0] for r in table}
    assert shown == {r["name"] for r in doc["rows"] if r["rss"]["change"] or r["size"]["change"]}


def wait_for_samples(path, n, proc):
    """Until the recording at ``path`` holds ``n`` samples."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(path):
            with open(path) as f:
                if sum(1 for line in f if line.startswith('{"seq"')) >= n:
                    return
        time.sleep(0.05)
    raise AssertionError(f"{path}: no {n} samples")


@pytest.mark.slow
def test_positions_of_a_recording(go_program, tmp_path):
    prog = go_program(cgo=True, args=("-cmalloc", 8))
    path = str(tmp_path / "run.jsonl")
    before = prog.command("stats")["c_big"]
    rec = subprocess.Popen([sys.executable, "-m", "memscan", "record", str(prog.pid), "-o", path, "--hz", "10",
                            "--duration", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_samples(path, 3, rec)
    leaked = prog.command("cleak 32")["c_big"] - before
    _, err = rec.communicate(timeout=60)
    assert rec.returncode == 0 and "Traceback" not in err, err
    r = record.read(path)
    first, last = r.rows[0], r.rows[-1]
    assert first["c_malloc"] < last["c_malloc"]

    whole = json.loads(diff(path, "--json"))
    assert whole == json.loads(diff(f"{path}@first", f"{path}@last", "--json"))
    assert whole == json.loads(diff(path, path, "--json"))
    top = whole["rows"][0]
    assert top["name"] == "c_malloc" and abs(top["rss"]["change"] - leaked) <= MIB, top
    assert top["rss"]["change"] == last["c_malloc"] - first["c_malloc"]
    assert whole["rss"]["change"] == last["rss"] - first["rss"]
    assert whole["size"] is None and top["size"] is None  # a recording holds no sizes
    assert whole["a"]["seconds"] == 0 and whole["b"]["seconds"] == last["mono"]

    # FILE@T: the first sample at or after T seconds.
    t = r.rows[2]["mono"]
    doc = json.loads(diff(f"{path}@{t - 0.01:.3f}", f"{path}@{last['mono']}", "--json"))
    assert doc["a"]["seconds"] == t and doc["b"]["seconds"] == last["mono"]
    # The same sample on both sides: nothing changed.
    same = json.loads(diff(f"{path}@0", f"{path}@first", "--json"))
    assert all(row["rss"]["change"] in (0, None) for row in same["rows"]) and same["rss"]["change"] == 0
    assert diff(f"{path}@0", f"{path}@first").splitlines()[-1] == "no other figure changed"

    past = run_cli("diff", f"{path}@{last['mono'] + 1}")
    assert_one_line_error(past, "past the end of the recording")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A scan and a short recording of a sleeping process; text files that are neither."""
    d = tmp_path_factory.mktemp("diff")
    target = subprocess.Popen(["sleep", "60"])
    try:
        scan = scan_to(d / "scan.json", target.pid)
        proc = run_cli("record", str(target.pid), "-o", str(d / "run.csv"), "--duration", "0.5", "--hz", "10")
        assert proc.returncode == 0, proc.stderr
    finally:
        target.kill()
        target.wait()
    (d / "text.txt").write_text("just some text\n")
    (d / "other.json").write_text('{"total": 1}\n')
    (d / "list.json").write_text("[1, 2]\n")
    (d / "empty.csv").write_text("")
    return {"scan": scan, "run": str(d / "run.csv"), "text": str(d / "text.txt"),
            "other": str(d / "other.json"), "list": str(d / "list.json"), "empty": str(d / "empty.csv"),
            "missing": str(d / "missing.json")}


@pytest.mark.parametrize("args, words", [
    (("text", "scan"), "not a memscan recording"),
    (("scan", "other"), "not a scan"),
    (("list", "scan"), "not a memscan recording"),
    (("empty",), "not a memscan recording"),
    (("missing", "scan"), "cannot read"),
    (("scan",), "give a second one"),
    (("scan@1", "scan"), "a position is for a recording"),
    (("run@60",), "past the end"),
    (("run@first", "run@30.5"), "past the end"),
])
def test_bad_inputs(files, args, words):
    named = [files[a.partition("@")[0]] + a[len(a.partition("@")[0]):] for a in args]
    assert_one_line_error(run_cli("diff", *named), words)


def test_scan_and_recording_compared(files):
    doc = json.loads(diff(files["scan"], files["run"], "--json"))
    assert doc["b"]["name"] == files["run"] + "@last" and doc["size"] is None
    assert doc["a"]["pid"] == doc["b"]["pid"]


def test_usage_errors():
    proc = run_cli("diff")
    assert proc.returncode == 2 and "usage:" in proc.stderr and "Traceback" not in proc.stderr
