"""memscan export: the Prometheus collector on real processes, checked against
memscan.scan and the Go program's own accounting, scraped by a real
Prometheus server, served over HTTP and written as a textfile."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, Tuple

import psutil
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import memscan
from memscan import cli, export
from memscan._types import CATEGORIES
from memscan.cgroup_export import KINDS, CgroupCollector
from memscan.core.exact import DETAIL

from helpers.cgroups import memory_cgroup
from helpers.cli import assert_one_line_error, dead_pid, run_cli
from helpers.processes import free_port, stop

MIB = 1 << 20
HEAP_ARGS = ("-heap", 32, "-garbage", 32, "-goroutines", 20)
# A quiet program between two scans: the runtime's background work
# (sysmon, a scavenger step) touches a few pages at most.
QUIET = 256 * 1024
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
METRICS = {"memscan_rss_bytes", "memscan_pss_bytes", "memscan_uss_bytes", "memscan_swap_bytes",
           "memscan_go_heap_detail_rss_bytes", "memscan_scan_duration_seconds", "memscan_scan_failures_total"}

Samples = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Exposition text as {(sample name, labels): value}; duplicates fail."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def scrape(collector) -> Samples:
    return parse(generate_latest(export.registry(collector)).decode())


def series(samples: Samples, name: str, **labels: str) -> Dict[FrozenSet[Tuple[str, str]], float]:
    """The samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {lab: v for (n, lab), v in samples.items() if n == name and want <= lab}


def by(samples: Dict[FrozenSet[Tuple[str, str]], float], label: str) -> Dict[str, float]:
    return {dict(lab)[label]: v for lab, v in samples.items()}


def failures(samples: Samples) -> Dict[str, float]:
    return by(series(samples, "memscan_scan_failures_total"), "reason")


def sleeper(*argv: str) -> "subprocess.Popen[str]":
    """A quiet Python process, with ``argv`` on its command line; returned
    once it is set up (quiet from then on)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(120)", *argv],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def check_against_scan(values: Dict[str, Dict[str, float]], snap: memscan.Snapshot) -> None:
    """Per counter and category, the exported value is the scan's, within QUIET."""
    for field, cats in values.items():
        assert set(cats) == set(CATEGORIES), field
        for cat in CATEGORIES:
            want = getattr(snap.categories[cat], field)
            # Other processes that map the same files (more demo programs)
            # change this one's share of them between two scans.
            slack = MIB if field == "pss" and cat in ("binary", "shared_libs", "mapped_files") else QUIET
            assert abs(cats[cat] - want) <= slack, (field, cat, cats[cat], want)


@pytest.mark.slow
def test_metrics_of_a_go_program(go_program):
    prog = go_program(args=HEAP_ARGS)
    ms = prog.command("stats")["memstats"]
    collector = export.MemscanCollector(export.Targets([prog.pid]), tier="exact")
    samples = scrape(collector)
    snap = memscan.scan(prog.pid, tier="exact")

    assert {name for name, _ in samples} == METRICS
    labels = {"pid": str(prog.pid), "comm": "memscandemo"}
    values = {field: by(series(samples, name, **labels), "category") for field, name, _ in export.GAUGES}
    check_against_scan(values, snap)
    assert all(set(dict(lab)) == {"pid", "comm", "category"}
               for field, name, _ in export.GAUGES for lab in series(samples, name))
    assert abs(sum(values["rss"].values()) - snap.total.rss) <= QUIET

    # The Go heap by page state, against the program's own MemStats.
    detail = by(series(samples, "memscan_go_heap_detail_rss_bytes", **labels), "state")
    assert list(detail) == list(DETAIL)
    assert detail["objects"] >= ms["HeapInuse"] - 4 * MIB
    free = ms["HeapIdle"] - ms["HeapReleased"]
    assert abs(detail["free"] - free) <= max(0.01 * free, 512 * 1024), (detail["free"], free)
    assert detail["reserved"] == 0
    assert abs(sum(detail.values()) - values["rss"]["go_heap"]) <= QUIET

    assert 0 < series(samples, "memscan_scan_duration_seconds", **labels)[frozenset(labels.items())] < 10
    assert failures(samples) == {"exited": 0, "access_denied": 0, "error": 0}


def test_a_process_that_exits_disappears_and_counts_as_failed():
    token = f"memscan-export-{uuid.uuid4().hex}"
    pinned, matched = sleeper(), sleeper(token)
    try:
        collector = export.MemscanCollector(export.Targets([pinned.pid], match=token), tier="layout", max_age=0)
        samples = scrape(collector)
        pids = set(by(series(samples, "memscan_rss_bytes", category="binary"), "pid"))
        assert pids == {str(pinned.pid), str(matched.pid)}
        assert failures(samples)["exited"] == 0
        for proc in (pinned, matched):
            snap = memscan.scan(proc.pid, tier="layout")
            rss = by(series(samples, "memscan_rss_bytes", pid=str(proc.pid)), "category")
            assert abs(sum(rss.values()) - snap.total.rss) <= QUIET
    finally:
        for proc in (pinned, matched):
            stop(proc)
    samples = scrape(collector)
    # No series of either: only the counters are left.
    assert {name for name, _ in samples} == {"memscan_scan_failures_total"}
    # The pinned pid is still asked for, and fails; the matched one is no target any more.
    assert failures(samples) == {"exited": 1, "access_denied": 0, "error": 0}
    assert failures(scrape(collector))["exited"] == 2


def test_concurrent_scrapes_share_one_scan(monkeypatch):
    proc = sleeper()
    scans = []

    def counted(pid, tier="auto"):
        scans.append(pid)
        time.sleep(0.2)  # a scan that takes a while: scrapes arrive meanwhile
        return memscan.scan(pid, tier=tier)

    monkeypatch.setattr(export, "scan", counted)
    try:
        collector = export.MemscanCollector(export.Targets([proc.pid]), tier="layout", max_age=5)
        results = []
        threads = [threading.Thread(target=lambda: results.append(scrape(collector))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert scans == [proc.pid]
        assert len(results) == 4 and all(r == results[0] for r in results)
        # Once the result is older than max_age, the next scrape scans again.
        collector.max_age = 0
        scrape(collector)
        assert scans == [proc.pid, proc.pid]
    finally:
        stop(proc)


@pytest.mark.slow
def test_go_processes_are_found_as_they_come_and_go(go_program):
    first = go_program(args=("-heap", 8))
    collector = export.MemscanCollector(export.Targets(go=True), tier="layout", max_age=0)
    pids = set(by(series(scrape(collector), "memscan_rss_bytes", category="go_heap"), "pid"))
    assert str(first.pid) in pids
    second = go_program(args=("-heap", 8))
    pids = set(by(series(scrape(collector), "memscan_rss_bytes", category="go_heap"), "pid"))
    assert {str(first.pid), str(second.pid)} <= pids
    second.stop()
    samples = scrape(collector)
    pids = set(by(series(samples, "memscan_rss_bytes", category="go_heap"), "pid"))
    assert str(first.pid) in pids and str(second.pid) not in pids
    assert failures(samples) == {"exited": 0, "access_denied": 0, "error": 0}


def test_textfile_is_replaced_atomically(tmp_path):
    token = f"memscan-textfile-{uuid.uuid4().hex}"
    target = sleeper(token)
    path = tmp_path / "memscan.prom"
    # --match's expression is on the exporter's own command line too: it
    # must not export itself.
    exporter = subprocess.Popen([sys.executable, "-m", "memscan", "export", "--match", token, "--tier", "layout",
                                 "--textfile", str(path), "--interval", "0.2"], stderr=subprocess.PIPE, text=True)
    try:
        seen = set()
        deadline = time.monotonic() + 30
        while len(seen) < 3:
            assert exporter.poll() is None, exporter.stderr.read()
            assert time.monotonic() < deadline, f"the textfile was written {len(seen)} times in 30 s"
            try:
                with open(path) as f:
                    inode, text = os.fstat(f.fileno()).st_ino, f.read()
            except FileNotFoundError:
                continue
            # Whatever moment it is read at, the file is whole.
            samples = parse(text)
            assert set(by(series(samples, "memscan_rss_bytes", category="binary"), "pid")) == {str(target.pid)}
            assert len(series(samples, "memscan_rss_bytes")) == len(CATEGORIES)
            seen.add(inode)
    finally:
        stop(exporter)
        stop(target)


def test_textfile_once(tmp_path):
    target = sleeper()
    path = tmp_path / "once.prom"
    try:
        done = run_cli("export", "--pid", str(target.pid), "--textfile", str(path), "--once")
        assert done.returncode == 0 and done.stderr == "", done
        snap = memscan.scan(target.pid)
        with open(f"/proc/{target.pid}/comm") as f:
            comm = f.read().strip()
        rss = by(series(parse(path.read_text()), "memscan_rss_bytes", pid=str(target.pid), comm=comm), "category")
        assert abs(sum(rss.values()) - snap.total.rss) <= QUIET
        assert os.listdir(tmp_path) == ["once.prom"]
    finally:
        stop(target)


def _listening(pid: int) -> set:
    proc = psutil.Process(pid)
    conns = proc.net_connections("tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}


def test_serves_metrics_on_loopback_unless_told_otherwise():
    assert export.DEFAULT_LISTEN == "127.0.0.1:9573"
    assert cli.parser().parse_args(["export", "--go"]).listen is None  # run() then uses DEFAULT_LISTEN
    assert export.listen_address("9573") == ("127.0.0.1", 9573)
    assert export.listen_address("[::1]:9573") == ("::1", 9573)
    for bad in ("", ":9573", "host:port", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            export.listen_address(bad)

    target = sleeper()
    try:
        for listen, host in (("0", "127.0.0.1"), ("0.0.0.0:0", "0.0.0.0")):
            exporter = subprocess.Popen([sys.executable, "-m", "memscan", "export", "--pid", str(target.pid),
                                         "--listen", listen], stdout=subprocess.PIPE, text=True)
            try:
                line = exporter.stdout.readline()
                assert line.startswith(f"memscan: serving metrics on http://{host}:"), line
                url = line.split()[-1]
                port = int(urllib.parse.urlsplit(url).port)
                assert _listening(exporter.pid) == {(host, port)}
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
                    samples = parse(answer.read().decode())
                assert str(target.pid) in by(series(samples, "memscan_rss_bytes", category="binary"), "pid")
                # Only the metrics are served.
                with pytest.raises(urllib.error.HTTPError) as err:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
                assert err.value.code == 404
                err.value.close()  # the error is the response: it holds the connection
            finally:
                stop(exporter)
    finally:
        stop(target)


def test_bad_input_is_one_line():
    gone = dead_pid()
    assert_one_line_error(run_cli("export", "--pid", str(gone), "--textfile", "/tmp/x.prom", "--once"),
                          "no longer exists")
    sleep = sleeper()
    try:
        assert_one_line_error(run_cli("export", "--pid", str(sleep.pid), "--textfile",
                                      "/nonexistent-dir/memscan.prom", "--once"), "cannot write")
        assert_one_line_error(run_cli("export", "--pid", str(sleep.pid), "--listen", "localhost:http"),
                              "--listen")
    finally:
        stop(sleep)
    usage = run_cli("export")
    assert usage.returncode == 2 and "--pid PID, --match REGEX or --go" in usage.stderr
    bad = run_cli("export", "--match", "(")
    assert bad.returncode == 2 and "bad regular expression" in bad.stderr
    # Without prometheus-client, the way to install it.
    missing = subprocess.run([sys.executable, "-c", "import sys; sys.modules['prometheus_client'] = None; "
                              "from memscan.cli import main; sys.exit(main(['export', '--go']))"],
                             capture_output=True, text=True, timeout=60)
    assert_one_line_error(missing, "pip install 'memscan[prometheus]'")


def query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as answer:
        doc = json.load(answer)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


@contextlib.contextmanager
def prometheus(tmp_path, reg, ready: str, count: int) -> Iterator[int]:
    """A real Prometheus server scraping the registry ``reg`` every second,
    once the query ``ready`` has ``count`` series; yields its port."""
    server = export.start_server(reg, "127.0.0.1", 0)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: memscan\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{server.server_address[1]}']\n")
    port = free_port()
    log = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"no {ready} in Prometheus within 30 s"
            try:
                if len(query(port, ready)) == count:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass  # not listening yet
            time.sleep(0.25)
        yield port
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        log.close()
        server.shutdown()
        server.server_close()


needs_prometheus = pytest.mark.skipif(
    not os.access(PROMETHEUS, os.X_OK),
    reason="Debian's prometheus binary is absent (.ci/run installs it: apt-get install prometheus)")


@pytest.mark.slow
@needs_prometheus
def test_prometheus_scrapes_the_exporter(go_program, tmp_path):
    prog = go_program(args=HEAP_ARGS)
    ms = prog.command("stats")["memstats"]
    reg = export.registry(export.MemscanCollector(export.Targets([prog.pid]), "exact"))
    with prometheus(tmp_path, reg, f'memscan_rss_bytes{{pid="{prog.pid}"}}', len(CATEGORIES)) as port:
        snap = memscan.scan(prog.pid, tier="exact")
        values = {}
        for field, name, _ in export.GAUGES:
            result = query(port, f'{name}{{pid="{prog.pid}"}}')
            for r in result:
                assert set(r["metric"]) == {"__name__", "pid", "comm", "category", "job", "instance"}
                assert r["metric"]["comm"] == "memscandemo" and r["metric"]["job"] == "memscan"
            values[field] = {r["metric"]["category"]: float(r["value"][1]) for r in result}
        check_against_scan(values, snap)
        detail = {r["metric"]["state"]: float(r["value"][1])
                  for r in query(port, f'memscan_go_heap_detail_rss_bytes{{pid="{prog.pid}"}}')}
        assert list(sorted(detail)) == sorted(DETAIL)
        assert detail["objects"] >= ms["HeapInuse"] - 4 * MIB
        assert abs(detail["free"] - snap.go_heap_detail["free"].rss) <= QUIET
        assert {r["metric"]["reason"]: float(r["value"][1]) for r in query(port, "memscan_scan_failures_total")} \
            == {"exited": 0, "access_denied": 0, "error": 0}
        assert [float(r["value"][1]) for r in query(port, 'up{job="memscan"}')] == [1.0]


@pytest.mark.slow
@needs_prometheus
def test_prometheus_scrapes_cgroup_series(go_program, tmp_path):
    prog = go_program(cgo=True)
    with memory_cgroup(limit=256 * MIB) as cg:
        cg.add(prog.pid)
        prog.command("alloc 32")
        targets = export.Targets([prog.pid])
        reg = export.registry(export.MemscanCollector(targets, "layout"))
        reg.register(CgroupCollector([], targets))
        own = {"cgroup": cg.path, "container_id": "", "pod_uid": ""}
        # Directly: the series of the targets' cgroup, and its process.
        samples = parse(generate_latest(reg).decode())
        assert samples[("memscan_process_cgroup_info", frozenset({"pid": str(prog.pid), "comm": "memscandemo",
                                                                   **own}.items()))] == 1
        assert samples[("memscan_cgroup_limit_bytes", frozenset(own.items()))] == 256 * MIB
        assert samples[("memscan_cgroup_processes", frozenset(own.items()))] == 1
        assert samples[("memscan_cgroup_events_total", frozenset({**own, "event": "oom_kill"}.items()))] == 0
        kinds = {dict(k)["kind"] for (name, k) in samples if name == "memscan_cgroup_memory_bytes"}
        assert kinds == {kind for kind, _ in KINDS}
        ready = f'memscan_cgroup_usage_bytes{{cgroup="{cg.path}"}}'
        with prometheus(tmp_path, reg, ready, 1) as port:
            usage = float(query(port, ready)[0]["value"][1])
            assert abs(usage - cg.number("memory.usage_in_bytes")) < 4 * MIB and usage >= 32 * MIB
            ws = float(query(port, f'memscan_cgroup_working_set_bytes{{cgroup="{cg.path}"}}')[0]["value"][1])
            assert abs(ws - (cg.number("memory.usage_in_bytes") - cg.stat()["total_inactive_file"])) < 4 * MIB
            # A process's series joined with its cgroup's labels.
            joined = query(port, 'memscan_rss_bytes{category="go_heap"} * on(pid) group_left(cgroup) '
                                 'memscan_process_cgroup_info')
            assert [r["metric"]["cgroup"] for r in joined] == [cg.path]
            # Every query of the shipped Grafana dashboard runs, and those
            # without a rate have data already.
            dashboard = json.loads((Path(__file__).parents[1] / "deploy" / "grafana-dashboard.json").read_text())
            for panel in dashboard["panels"]:
                for target in panel["targets"]:
                    result = query(port, target["expr"].replace("$cgroup", ".*"))
                    assert result or "increase(" in target["expr"], (panel["title"], target["expr"])


def test_cgroup_export_bad_input(tmp_path):
    assert_one_line_error(run_cli("export", "--cgroup", "/no/such/memscan/cgroup", "--textfile",
                                  str(tmp_path / "x.prom"), "--once"), "no such cgroup")

