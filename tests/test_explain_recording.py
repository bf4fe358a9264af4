"""memscan explain FILE: the findings of recordings that ``memscan record``
made of real programs, checked against the recordings' own rows."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from memscan import CATEGORIES, record

from helpers.cli import assert_one_line_error, run_cli
from helpers.processes import stop

pytestmark = pytest.mark.slow

MIB = 1 << 20
#: The keys of ``memscan explain PID --json``, and the recording's own.
KEYS = {"pid", "time", "tier", "go", "rss", "size", "categories", "watch", "memstats", "findings", "warnings",
        "recording"}


def memscan_cli(*args: str) -> "subprocess.Popen[str]":
    return subprocess.Popen([sys.executable, "-m", "memscan", *args], stderr=subprocess.PIPE, text=True)


def finish(proc: "subprocess.Popen[str]", timeout: float = 60) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and "Traceback" not in err, err


def explained(path: str) -> dict:
    out = run_cli("explain", path, "--json")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == KEYS and len(doc["findings"]) == len({f["id"] for f in doc["findings"]})
    return doc


def by_id(doc: dict) -> dict:
    return {f["id"]: f for f in doc["findings"]}


def with_(rows, column):
    return [r for r in rows if r[column] is not None]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_c_leak_recorded(cprog, tmp_path, suffix):
    # fragments leaks 1 MiB of in-use C memory every 100 ms, beside freed
    # chunks glibc keeps.
    prog = cprog("fragments", 1, "threads=1", "blocks=20000", "leak")
    out = str(tmp_path / ("leak" + suffix))
    finish(memscan_cli("record", str(prog.pid), "-o", out, "--duration", "4", "--hz", "5", "--full-every", "1"))
    rec = record.read(out)
    doc = explained(out)
    found = by_id(doc)

    full = with_(rec.rows, "c_malloc.in_use")
    assert len(full) >= 2
    grew = found["c_in_use_growing"]
    assert grew["severity"] == "warning"
    assert grew["numbers"]["in_use_growth_bytes"] == full[-1]["c_malloc.in_use"] - full[0]["c_malloc.in_use"]
    assert grew["numbers"]["in_use_growth_bytes"] >= 8 * MIB
    assert grew["numbers"]["seconds"] == pytest.approx(full[-1]["mono"] - full[0]["mono"])
    frag = found["c_fragmentation"]["numbers"]
    assert (frag["free_rss_bytes"], frag["rss_bytes"]) == (full[-1]["c_malloc.free"], full[-1]["rss"])

    # The growth is the recording's, first row to last; the figures a
    # recording does not hold are not made up.
    g = doc["watch"]["growth"]
    assert set(g) == set(CATEGORIES) | {"total"}
    assert g["c_malloc"] == rec.rows[-1]["c_malloc"] - rec.rows[0]["c_malloc"] > 0
    assert g["total"] == rec.rows[-1]["rss"] - rec.rows[0]["rss"] >= 20 * MIB
    assert doc["watch"]["scans"] == len(rec.rows) and doc["rss"] == rec.rows[-1]["rss"]
    assert doc["size"] is None and doc["memstats"] is None and doc["go"] is None
    assert not {"virt_reservations", "thread_stacks", "go_vs_os", "target_exited"} & set(found)
    assert doc["recording"]["end"]["reason"] == "duration"

    text = run_cli("explain", out)
    assert text.returncode == 0 and out in text.stdout.replace("\n", "") and "C memory in use grew" in text.stdout

    # Cut short: the same rows without the end event.
    lines = (tmp_path / ("leak" + suffix)).read_text().splitlines(keepends=True)
    cut = str(tmp_path / ("cut" + suffix))
    with open(cut, "w") as f:
        f.writelines(x for x in lines if '"event": "stop"' not in x)
    assert by_id(explained(cut))["recording_cut_short"]["numbers"]["samples"] == len(rec.rows)


def test_ring_recording_of_a_killed_process(cprog, tmp_path):
    prog = cprog("fragments", 1, "threads=1", "blocks=2000", "leak")
    out = str(tmp_path / "ring.jsonl")
    rec_proc = memscan_cli("record", str(prog.pid), "--ring", "4", "--hz", "10", "-o", out)
    time.sleep(5)
    prog.proc.send_signal(signal.SIGKILL)
    finish(rec_proc)
    rec = record.read(out)
    assert rec.end["signal"] == "SIGKILL"
    doc = explained(out)
    found = by_id(doc)
    exited = found["target_exited"]
    assert exited["severity"] == "warning" and "killed by signal SIGKILL" in exited["title"]
    if rec.end["oom_kill"] is False:
        assert exited["numbers"]["oom_kill"] == 0 and "not the OOM killer" in exited["text"]
    assert "c_in_use_growing" in found
    assert doc["findings"][0]["severity"] == "warning"

    # The OOM killer's word is the exit event's: the same recording with
    # oom_kill set reads as an OOM kill.
    oom = str(tmp_path / "oom.jsonl")
    with open(oom, "w") as f:
        for line in (tmp_path / "ring.jsonl").read_text().splitlines(keepends=True):
            obj = json.loads(line)
            if obj.get("event") == "exit":
                line = json.dumps(dict(obj, oom_kill=True)) + "\n"
            f.write(line)
    exited = by_id(explained(oom))["target_exited"]
    assert exited["numbers"]["oom_kill"] == 1 and "OOM-killed" in exited["title"] and "OOM killer" in exited["text"]


def test_trigger_and_psutil_tier(tmp_path):
    target = subprocess.Popen(["sleep", "30"])
    try:
        out = str(tmp_path / "trig.csv")
        finish(memscan_cli("record", str(target.pid), "--ring", "5", "--hz", "20", "--tier", "psutil", "-o", out,
                           "--trigger", "rss>1KiB"))
        doc = explained(out)
        fired = by_id(doc)["trigger_fired"]
        assert fired["severity"] == "info" and "rss>1KiB" in fired["title"]
        # The psutil tier records no categories: no growth by category, no
        # finding that needs them.
        assert doc["categories"] is None and [f["id"] for f in doc["findings"]] == ["trigger_fired"]
        assert doc["watch"] is None or set(doc["watch"]["growth"]) == {"total"}
    finally:
        stop(target)


def test_bad_input(tmp_path):
    assert_one_line_error(run_cli("explain", "/etc/passwd"), "not a memscan recording")
    assert_one_line_error(run_cli("explain", str(tmp_path / "none.csv")), "No such file")
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"a": 1}\n[1, 2]\n')
    assert_one_line_error(run_cli("explain", str(junk)), "not a memscan recording")
    empty = tmp_path / "empty.csv"
    empty.write_text('# memscan: "1"\nseq,wall,mono,rss\n')
    assert_one_line_error(run_cli("explain", str(empty)), "no samples")
    proc = run_cli("explain", str(empty), "--for", "3s")
    assert proc.returncode == 2 and "not a recording" in proc.stderr and "Traceback" not in proc.stderr


def test_cgo_leak_recorded(go_program, tmp_path):
    prog = go_program(cgo=True, args=("-cmalloc", 64))
    out = str(tmp_path / "cgo.csv")
    rec_proc = memscan_cli("record", str(prog.pid), "-o", out, "--duration", "3", "--hz", "5")
    while rec_proc.poll() is None:
        prog.command("cleak 4")
        time.sleep(0.25)
    finish(rec_proc)
    rec = record.read(out)
    doc = explained(out)
    g = doc["watch"]["growth"]
    top = doc["findings"][0]
    assert top["id"] == "c_memory_growing" and top["severity"] == "warning"
    n = top["numbers"]
    assert n["c_growth_bytes"] == g["c_malloc"] + g["anon_other"] >= 16 * MIB
    assert n["go_heap_growth_bytes"] == g["go_heap"] == rec.rows[-1]["go_heap"] - rec.rows[0]["go_heap"]
    assert doc["go"]["version"] == rec.meta["go"]
    # The rules of one scan, on the last row: its figures, not the live process's.
    c = by_id(doc)["c_memory"]["numbers"]
    last = rec.rows[-1]
    assert (c["c_malloc_bytes"], c["go_heap_bytes"], c["rss_bytes"]) == (last["c_malloc"], last["go_heap"], last["rss"])
    assert doc["categories"] == {k: last[k] for k in CATEGORIES}
