"""memscan explain: its findings on real Go programs put in each situation,
with numbers checked against the scan and the programs' own accounting."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time

import pytest

import memscan
from memscan import Error, explain, explain_c, findings

from helpers.cli import assert_one_line_error, dead_pid, run_cli

pytestmark = pytest.mark.slow

MIB = 1 << 20
KEYS = {"pid", "time", "tier", "go", "rss", "size", "categories", "watch", "memstats", "findings", "warnings"}


def by_id(made):
    found = {f.id if isinstance(f, findings.Finding) else f["id"]: f for f in made}
    assert len(found) == len(made), "a finding made twice"
    return found


def close(value, want, rel, floor):
    return abs(value - want) <= max(rel * want, floor)


def test_freed_heap_kept(go_program):
    prog = go_program(args=("-heap", 16, "-garbage", 64))
    ms = prog.command("stats")["memstats"]
    snap = memscan.scan(prog.pid, tier="exact")
    found = by_id(explain.explain(snap, ms))

    kept = found["freed_heap_kept"]
    assert kept.severity == "notice"
    assert kept.numbers["free_bytes"] == snap.go_heap_detail["free"].rss
    assert kept.numbers["heap_idle_minus_released_bytes"] == ms["HeapIdle"] - ms["HeapReleased"]
    assert close(kept.numbers["free_bytes"], ms["HeapIdle"] - ms["HeapReleased"], 0.02, MIB)
    assert kept.numbers["free_bytes"] >= 60 * MIB
    assert kept.numbers["rss_bytes"] == snap.total.rss
    assert "debug.FreeOSMemory()" in kept.text and "GOMEMLIMIT" in kept.text
    # The Go program reserves far more address space than it touches.
    virt = found["virt_reservations"]
    assert virt.numbers["size_bytes"] == snap.total.size and virt.numbers["rss_bytes"] == snap.total.rss
    assert virt.numbers["go_runtime_untouched_bytes"] >= 1 << 30
    # Nothing else passes its threshold in this program: no C memory, no
    # MADV_FREE, little runtime metadata and stack.
    assert set(found) == {"freed_heap_kept", "virt_reservations", "go_vs_os"}
    assert list(found) == ["freed_heap_kept", "virt_reservations", "go_vs_os"]  # most urgent first

    # Freed and returned to the OS (MADV_DONTNEED): nothing is kept.
    prog.command("free")
    after = by_id(explain.explain(memscan.scan(prog.pid, tier="exact")))
    assert "freed_heap_kept" not in after and "released_lazyfree" not in after


def test_madv_free_pages_still_in_rss(go_program):
    prog = go_program(args=("-heap", 64), env={"GODEBUG": "madvdontneed=0"})
    ms = prog.command("free")["memstats"]
    snap = memscan.scan(prog.pid, tier="exact")
    found = by_id(explain.explain(snap))
    lazy = found["released_lazyfree"]
    assert lazy.numbers["lazyfree_bytes"] == snap.categories["go_heap"].lazyfree >= 60 * MIB
    assert lazy.numbers["released_rss_bytes"] == snap.go_heap_detail["released"].rss
    assert lazy.numbers["released_rss_bytes"] <= ms["HeapReleased"]
    assert "GODEBUG=madvdontneed=1" in lazy.text
    assert "freed_heap_kept" not in found
    # The layout tier sees it too: LazyFree is in smaps.
    layout = by_id(explain.explain(memscan.scan(prog.pid, tier="layout")))
    assert close(layout["released_lazyfree"].numbers["lazyfree_bytes"], lazy.numbers["lazyfree_bytes"], 0.01, MIB)


def test_cgo_leak_while_the_go_heap_is_flat(go_program):
    prog = go_program(cgo=True, args=("-cmalloc", 64))
    first = memscan.scan(prog.pid, tier="exact")
    big = prog.command("stats")["c_big"]
    c = by_id(explain.explain(first))["c_memory"]
    assert c.numbers["c_malloc_bytes"] >= big - MIB
    assert c.numbers["c_bytes"] == first.categories["c_malloc"].rss + first.categories["anon_other"].rss

    # Two scans around a leak of the program's: the rule on real snapshots.
    leaked = prog.command("cleak 48")["c_big"] - big
    second = memscan.scan(prog.pid, tier="exact")
    growing = by_id(explain.trends([first, second]))["c_memory_growing"]
    assert growing.severity == "warning"
    assert close(growing.numbers["c_growth_bytes"], leaked, 0.01, MIB)
    assert abs(growing.numbers["go_heap_growth_bytes"]) < 4 * MIB
    assert explain.trends([first, first]) == []

    # The CLI watching while the program leaks 4 MiB every quarter second.
    before = prog.command("stats")["c_big"]
    watcher = subprocess.Popen([sys.executable, "-m", "memscan", "explain", str(prog.pid), "--for", "3s", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while watcher.poll() is None:
        prog.command("cleak 4")
        time.sleep(0.25)
    out, err = watcher.communicate()
    assert watcher.returncode == 0 and "Traceback" not in err, err
    leaked = prog.command("stats")["c_big"] - before
    doc = json.loads(out)
    assert set(doc) == KEYS
    assert doc["watch"]["scans"] == 4 and 2.5 < doc["watch"]["seconds"] < 6
    growth = doc["watch"]["growth"]
    assert set(growth) == set(memscan.CATEGORIES) | {"total"}
    top = doc["findings"][0]
    assert top["id"] == "c_memory_growing" and top["severity"] == "warning"
    n = top["numbers"]
    assert n["c_growth_bytes"] == growth["c_malloc"] + growth["anon_other"]
    assert n["go_heap_growth_bytes"] == growth["go_heap"] and abs(growth["go_heap"]) < 4 * MIB
    # About 3 s of 16 MiB/s (less on a loaded machine), and at most what the
    # program leaked while the watcher ran.
    assert 16 * MIB <= n["c_growth_bytes"] <= leaked + MIB, (n, leaked)


class _Json(http.server.BaseHTTPRequestHandler):
    """Serves a JSON object that is no MemStats."""

    def do_GET(self):  # noqa: N802 - the base class's name
        body = b'{"cmdline": ["x"], "other": 1}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_memstats_from_expvar(go_program):
    prog = go_program(args=("-heap", 16, "-garbage", 32, "-http", "127.0.0.1:0"))
    url = f"http://{prog.report['http']}/debug/vars"
    ms = explain.read_memstats(url, prog.pid)
    own = prog.command("stats")["memstats"]
    assert set(ms) == set(explain.MEMSTATS)
    for name in ("HeapInuse", "HeapIdle", "Sys", "HeapAlloc"):
        assert close(ms[name], own[name], 0.02, MIB), (name, ms[name], own[name])

    proc = run_cli("explain", str(prog.pid), "--memstats", url, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc["memstats"]) == set(explain.MEMSTATS)
    found = by_id(doc["findings"])
    side = found["go_vs_os"]["numbers"]
    assert side["alloc_bytes"] == doc["memstats"]["Alloc"] and side["rss_bytes"] == doc["rss"]
    assert side["go_heap_bytes"] == doc["categories"]["go_heap"]
    assert side["rss_minus_alloc_bytes"] == doc["rss"] - doc["memstats"]["Alloc"]
    kept = found["freed_heap_kept"]["numbers"]
    assert kept["heap_idle_minus_released_bytes"] == doc["memstats"]["HeapIdle"] - doc["memstats"]["HeapReleased"]
    assert close(kept["free_bytes"], kept["heap_idle_minus_released_bytes"], 0.02, MIB)

    text = run_cli("explain", str(prog.pid), "--memstats", url)
    assert text.returncode == 0, text.stderr
    assert "Go says Alloc" in text.stdout and "the OS sees" in text.stdout

    # Bad endpoints: one line each.
    other = go_program(args=("-heap", 1))
    assert_one_line_error(run_cli("explain", str(other.pid), "--memstats", url), "not pid")
    assert_one_line_error(run_cli("explain", str(prog.pid), "--memstats", "localhost:6060"), "not an http")
    assert_one_line_error(run_cli("explain", str(prog.pid), "--memstats", f"http://{prog.report['http']}/nothing"),
                          "HTTP 404")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Json)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    not_memstats = f"http://127.0.0.1:{server.server_address[1]}/debug/vars"
    try:
        with pytest.raises(Error, match="no runtime.MemStats"):
            explain.read_memstats(not_memstats)
    finally:
        server.shutdown()
        server.server_close()
    assert_one_line_error(run_cli("explain", str(prog.pid), "--memstats", not_memstats), "refused")


def test_cli(go_program):
    prog = go_program(args=("-heap", 8))
    text = run_cli("explain", str(prog.pid))
    assert text.returncode == 0 and text.stderr == "", text
    assert f"pid {prog.pid} · {prog.report['go_version']} · tier exact" in text.stdout
    assert "mostly reserved address space" in text.stdout
    # Piped: each finding's text whole on one line, no trailing spaces.
    lines = text.stdout.splitlines()
    assert not [line for line in lines if line.endswith(" ")]
    assert any(len(line) > 80 for line in lines), lines  # rich would have wrapped at 80 columns
    doc = json.loads(run_cli("explain", str(prog.pid), "--json", "--tier", "layout").stdout)
    assert set(doc) == KEYS and doc["tier"] == "layout" and doc["watch"] is None and doc["memstats"] is None
    for f in doc["findings"]:
        assert set(f) == {"id", "severity", "title", "text", "numbers"} and f["severity"] in findings.SEVERITIES
    assert sum(doc["categories"].values()) == doc["rss"]

    # The psutil tier's warning on stderr: stdout is the report alone.
    totals = run_cli("explain", str(prog.pid), "--tier", "psutil")
    assert totals.returncode == 0 and "tier psutil" in totals.stdout and "warning" not in totals.stdout, totals
    [warning] = totals.stderr.splitlines()
    assert warning.startswith("memscan: warning: psutil tier requested") and "n/a in the table" in warning

    assert_one_line_error(run_cli("explain", str(dead_pid())), "no longer exists")
    bad = run_cli("explain", str(prog.pid), "--for", "soon")
    assert bad.returncode == 2 and "--for" in bad.stderr and "Traceback" not in bad.stderr
    assert explain.duration("30s") == 30 and explain.duration("2m") == 120 and explain.duration("500ms") == 0.5


def test_c_fragmentation_by_allocator():
    """Freed C memory by the allocator's name: a "+pymalloc" suffix keeps
    the C allocator's remedies; under jemalloc or tcmalloc, whose memory
    memscan cannot split, a large unassigned share is said as possibly
    freed (info), with the allocator's own figures that tell."""
    MiB = 1 << 20
    f = explain_c.c_fragmentation_finding(40 * MiB, 50 * MiB, 100 * MiB, "glibc+pymalloc")
    assert f.severity == "notice" and "(glibc)" in f.text and "malloc_trim(0)" in f.text
    assert explain_c.c_fragmentation_finding(0, 0, 100 * MiB, "glibc", unknown=90 * MiB) is None
    for name, figure in [("jemalloc", "stats.allocated"), ("tcmalloc", "current_allocated_bytes")]:
        f = explain_c.c_fragmentation_finding(0, 0, 100 * MiB, name, unknown=90 * MiB)
        assert f.severity == "info" and f.numbers["unknown_rss_bytes"] == 90 * MiB
        assert figure in f.text and explain_c.C_REMEDIES[name] in f.text
        assert explain_c.c_fragmentation_finding(0, 0, 100 * MiB, name, unknown=4 * MiB) is None
