"""Recordings of real Go programs (``memscan record``): the file's header and
units, its figures against scan() and the program's own accounting, and what
is left in the file when the target dies, on Ctrl-C, and when memscan is
killed."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import memscan
from memscan import plot, record
from memscan._types import CATEGORIES
from memscan.core.sampler import Sampler
from memscan.record import C_DETAIL_COLUMNS, COLUMNS, DETAIL_COLUMNS, UNITS

from helpers.cli import run_cli
from helpers.processes import stop

pytestmark = pytest.mark.slow

MIB = 1 << 20
ARGS = ("-heap", 32, "-garbage", 16, "-goroutines", 20)
# A quiet program's categories between two scans: the runtime's background
# work (sysmon, the scavenger) touches a few pages now and then.
QUIET = 512 * 1024
VMRSS_LAG = 1 * MIB


def memscan_cli(*args: str, **kw) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "memscan", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_rows(path: str, n: int, proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """Wait until the recording at ``path`` holds ``n`` samples."""
    deadline = time.monotonic() + timeout
    while True:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            try:
                rows = len(record.read(path).rows)
            except memscan.Error:  # only the header so far
                rows = 0
            if rows >= n:
                return rows
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"fewer than {n} samples in {path} after {timeout} s"
        time.sleep(0.05)


def check_rows(rec: record.Recording) -> None:
    """What every recording must satisfy, whatever ended it."""
    assert rec.columns == COLUMNS
    assert set(rec.meta["units"]) == set(COLUMNS)
    rows = rec.rows
    assert rows, "no samples"
    assert rows[0]["mono"] == 0.0
    for a, b in zip(rows, rows[1:]):
        assert b["seq"] > a["seq"] and b["mono"] >= a["mono"], (a, b)
    for r in rows:
        assert set(r) == set(COLUMNS) and r["tier"] in ("exact", "layout", "psutil"), r
        # The wall clock and the monotonic one agree within a few ms.
        assert abs(r["wall"] - rec.meta["start_wall"] - r["mono"]) < 0.05, r
        full = r["pss"] is not None  # a full scan: the categories partition its total
        if r["tier"] != "psutil":
            cats = sum(r[c] for c in CATEGORIES)
            # Other ticks count pages in pagemap, and take rss from VmRSS: the
            # kernel's per-CPU batched counters, which may lag by some pages.
            assert cats == r["rss"] if full else abs(cats - r["rss"]) <= VMRSS_LAG, r
        # The age of the owners and Go heap states: 0 on a full scan, the exact tier's alone.
        if r["tier"] == "exact":
            assert r["states_age"] == 0 if full else r["states_age"] >= 0, r
        else:
            assert r["states_age"] is None, r
        if r["go_heap.objects"] is not None:
            heap = sum(r[c] for c in DETAIL_COLUMNS)
            assert heap == r["go_heap"] if full else heap <= r["go_heap"], r
    # The first tick is a full scan: it has the pss, swap and uss totals.
    assert rows[0]["pss"] is not None and rows[0]["uss"] is not None
    if rec.end is not None:
        assert rec.end["samples"] == len(rows)
        assert rec.end["missed"] == sum(r["missed"] for r in rows)
        assert rec.end["mono"] >= rows[-1]["mono"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_recording_of_a_quiet_go_program(go_program, tmp_path, suffix):
    prog = go_program(args=ARGS)
    ms = prog.command("stats")["memstats"]
    before = memscan.scan(prog.pid)
    path = str(tmp_path / f"run{suffix}")
    meta = record.header(prog.pid, tier="auto", hz=500, full_every=0.5)
    # Not polite: full scans every 0.5 s whatever they cost (see sampler.LOCK_SHARE).
    with Sampler(prog.pid, 1 / 500, "auto", full_every=0.5, polite=False) as sampler, \
            record.Writer(path, meta) as writer:
        end = record.record(sampler, writer, duration=1.0)
    after = memscan.scan(prog.pid)

    rec = record.read(path)
    check_rows(rec)
    assert rec.partial == "" and rec.end == rec.events[-1] and len(rec.events) == 1
    assert end["event"] == "stop" and end["reason"] == "duration" and rec.end["reason"] == "duration"
    m = rec.meta
    assert m["memscan"] == memscan.__version__ and m["pid"] == prog.pid
    assert m["command"].startswith(prog.binary) and "-heap 32" in m["command"]
    assert m["go"] == prog.report["go_version"] and m["units"] == UNITS
    rows = rec.rows
    # Time 0 is the first sample's: its wall time is the start, also in ISO 8601 (UTC).
    assert m["start_wall"] == rows[0]["wall"]
    assert abs(datetime.datetime.fromisoformat(m["start"]).timestamp() - m["start_wall"]) < 0.001
    assert rows[-1]["mono"] >= 1.0
    # Full scans every 0.5 s: at 0, 0.5 and perhaps 1 s.
    assert 2 <= sum(r["pss"] is not None for r in rows) <= 3
    assert len(rows) >= 20, f"{len(rows)} samples in 1 s at 500 Hz asked"

    # The figures are scan()'s of the same quiet program...
    assert all(r["tier"] == before.tier == "exact" for r in rows)
    for r in rows:
        for c in CATEGORIES:
            low = min(before.categories[c].rss, after.categories[c].rss) - QUIET
            high = max(before.categories[c].rss, after.categories[c].rss) + QUIET
            assert low <= r[c] <= high, (c, r)
    # ... and the program's own: its live heap, written to, is resident.
    assert all(r["go_heap.objects"] >= ms["HeapInuse"] - 4 * MIB for r in rows)
    assert all(r["go_heap.stacks"] >= 20 * 32 * 1024 for r in rows)  # 20 goroutines, ~48 KiB of stack each


def test_psutil_tier_leaves_unknowns_empty(go_program, tmp_path):
    """Totals only: categories, pss and uss are not measured, so empty, never 0."""
    prog = go_program(args=ARGS)
    path = str(tmp_path / "run.csv")
    with Sampler(prog.pid, 1 / 200, "psutil") as sampler, \
            record.Writer(path, record.header(prog.pid, tier="psutil", hz=200, full_every=1.0)) as writer:
        record.record(sampler, writer, duration=0.3)
    rows = record.read(path).rows
    snap = memscan.scan(prog.pid, tier="psutil")
    assert len(rows) > 5 and all(r["tier"] == "psutil" for r in rows)
    for r in rows:
        assert all(r[c] is None for c in (*CATEGORIES, *DETAIL_COLUMNS, "pss", "uss")), r
        assert abs(r["rss"] - snap.total.rss) <= QUIET
    assert rows[0]["swap"] == snap.total.swap == 0
    assert plot.figure(record.read(path)).axes[0].get_title() == "total only: the psutil tier has no categories"


def test_target_killed_mid_recording(go_program, tmp_path):
    """The file ends with the exit event, every sample before it complete."""
    prog = go_program(args=ARGS)
    path = str(tmp_path / "run.jsonl")
    proc = memscan_cli("record", str(prog.pid), "--hz", "500", "-o", path)
    try:
        wait_rows(path, 50, proc)
        prog.stop()  # SIGKILL, reaped: it never reaches a zombie state memscan could mistake for memory
        out, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"memscan: pid {prog.pid} exited:"), err
    rec = record.read(path)
    check_rows(rec)
    assert rec.partial == "" and rec.end is not None and rec.end["event"] == "exit"
    with open(path) as f:
        last = json.loads(f.read().splitlines()[-1])
    assert last == rec.end and rec.events == [last]
    assert f"{rec.end['samples']:,} samples" in lines[0]


def test_ctrl_c_finishes_the_row_and_closes(go_program, tmp_path):
    prog = go_program(args=ARGS)
    path = str(tmp_path / "run.csv")
    proc = memscan_cli("record", str(prog.pid), "--hz", "500", "--duration", "60", "-o", path)
    try:
        wait_rows(path, 50, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memscan: interrupted:") and "Traceback" not in err, err
    rec = record.read(path)
    check_rows(rec)
    assert rec.partial == "" and rec.end is not None and rec.end["reason"] == "interrupted"
    with open(path) as f:
        assert f.read().splitlines()[-1] == f"# event: {json.dumps(rec.end)}"
    assert prog.proc.poll() is None  # the target was never touched


def test_memscan_killed_mid_recording(go_program, tmp_path):
    """SIGKILL: every line that reached the file is complete but at most the
    last, which the reader sets aside instead of reading it as a sample."""
    prog = go_program(args=ARGS)
    path = str(tmp_path / "run.csv")
    proc = memscan_cli("record", str(prog.pid), "--hz", "1000", "-o", path)
    try:
        wait_rows(path, 100, proc)
    finally:
        proc.kill()
        proc.communicate()
    rec = record.read(path)
    check_rows(rec)
    assert rec.end is None  # cut short: no end event
    with open(path, "rb") as f:
        data = f.read()
    assert rec.partial == data[data.rfind(b"\n") + 1:].decode()

    # The file cut inside its last row, as a kill during write(2) would leave
    # it: in the middle, or just before the newline, where the truncated
    # figures would still parse.
    body = data[: len(data) - len(rec.partial)]
    head, last = body[:-1].rsplit(b"\n", 1)
    for kept in (len(last) // 2, len(last)):
        cut = tmp_path / "cut.csv"
        cut.write_bytes(head + b"\n" + last[:kept])
        cut_rec = record.read(str(cut))
        assert cut_rec.rows == rec.rows[:-1] and cut_rec.partial == last[:kept].decode()


def test_reader_rejects_damage_inside_the_file(tmp_path):
    """A bad line that is not the last is an error naming it, never a sample."""
    good = tmp_path / "good.csv"
    header = "".join(f"# {k}: {json.dumps(v)}\n" for k, v in {"memscan": "0.1.0", "pid": 1}.items())
    row = "1,1700000000.5,0.0,layout,0,4096" + ",0" * (len(COLUMNS) - 6) + "\n"
    good.write_text(header + ",".join(COLUMNS) + "\n" + row + row.replace("1,", "2,", 1))
    assert len(record.read(str(good)).rows) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text(header + ",".join(COLUMNS) + "\n" + row[:20] + "\n" + row)
    with pytest.raises(memscan.Error, match=rf"bad.csv, line 4: 4 fields, the header has {len(COLUMNS)}"):
        record.read(str(bad))
    bad.write_text(header + ",".join(COLUMNS) + "\n" + row.replace("4096", "4k") + row)
    with pytest.raises(memscan.Error, match=r"bad.csv, line 4: rss is not a number: '4k'"):
        record.read(str(bad))
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    with pytest.raises(memscan.Error, match="not a memscan recording"):
        record.read(str(notes))


def test_cli_errors_are_one_line(go_program, tmp_path):
    prog = go_program(args=ARGS)
    gone = subprocess.Popen(["true"])
    gone.wait()
    for args, code, words in [
        (("record", str(prog.pid), "-o", str(tmp_path / "run.txt")), 1, "must end in .csv or .jsonl"),
        (("record", str(gone.pid), "-o", str(tmp_path / "run.csv")), 1, "no longer exists"),
        (("record", str(prog.pid), "-o", str(tmp_path / "no" / "run.csv")), 1, "cannot write"),
        (("record", str(prog.pid), "--hz", "0", "-o", str(tmp_path / "run.csv")), 2, "positive"),
        (("plot", str(tmp_path / "absent.csv")), 1, "cannot read"),
    ]:
        done = run_cli(*args)
        assert done.returncode == code and "Traceback" not in done.stderr, (args, done)
        assert words in done.stderr.strip().splitlines()[-1], (args, done.stderr)
        if code == 1:
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "run.csv").exists()  # nothing is created for a process that is not there


@pytest.mark.parametrize("last", [(), ("stale",)])
def test_older_recordings_load(tmp_path, last):
    """Recordings from before "states_age" was a column read back with it
    None; those with a "stale" column instead (the age of states kept past a
    failed heap read) read it as seconds, and plot hatches what it marks."""
    before = [c for c in COLUMNS if c != "states_age" and c not in C_DETAIL_COLUMNS]
    old = [*before, *last]
    rows = [f"{seq},1700000000.5,{mono},exact,0,4096" + ",0" * (len(before) - 6) + "," * len(last) + age
            for seq, mono, age in ((0, "0.0", ""), (1, "0.5", "2.5" if last else ""), (2, "1.0", ""))]
    path = tmp_path / "old.csv"
    path.write_text('# memscan: "0.1.0"\n# format: 1\n' + "\n".join([",".join(old), *rows]) + "\n")
    rec = record.read(str(path))
    assert rec.columns == tuple(old) and rec.column("states_age") == [None] * 3
    assert rec.column("rss") == [4096] * 3
    if last:
        assert rec.column("stale") == [None, 2.5, None]
        assert plot.stale_stretches(rec) == [(0.5, 1.0)]
    else:
        assert plot.stale_stretches(rec) == []
