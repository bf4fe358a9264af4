"""``memscan export``: Prometheus metrics of the processes memscan scans.

A collector that scans at scrape time, served over HTTP (``/metrics`` only)
or written for node_exporter's textfile collector. Series per process and
category (``memscan_rss_bytes{pid,comm,category}``, pss, uss, swap), the Go
heap by page state (``memscan_go_heap_detail_rss_bytes{pid,comm,state}``,
exact tier), the time each scan took, and a counter of failed scans by
reason. Only running targets have series: a process that exits drops out of
the next scrape, so the number of series stays bounded by the targets.

prometheus-client is an optional dependency (``memscan[prometheus]``); this
module is imported only by ``memscan export`` and says how to install it.
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading
import time
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ._errors import AccessDenied, Error, NoSuchProcess
from ._types import CATEGORIES
from .core.scanner import scan
from .core.snapshot import Snapshot
from .kernel import procfs
from .processes import matching, processes

try:
    from prometheus_client import CollectorRegistry, make_wsgi_app, write_to_textfile
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as err:  # pragma: no cover - exercised in a subprocess by the tests
    raise Error("memscan export needs prometheus-client: pip install 'memscan[prometheus]'") from err

__all__ = ["DEFAULT_LISTEN", "CACHE_SECONDS", "FAILURE_REASONS", "GAUGES", "Scanned", "Targets", "MemscanCollector",
           "families", "registry", "listen_address", "start_server", "write_textfile", "run"]

#: Loopback unless told otherwise: the metrics name every process and its
#: command, which is not for the whole network to read.
DEFAULT_LISTEN = "127.0.0.1:9573"

#: A scan result is served again to scrapes within this many seconds of it:
#: two Prometheus servers (an HA pair) or a scrape retried after a timeout
#: then cost one scan, not one each. One second keeps the figures fresh for
#: the usual 15 s scrape interval and still a 1 s one.
CACHE_SECONDS = 1.0

#: Labels of memscan_scan_failures_total: a fixed set, so the counter never
#: grows with the processes that come and go. "exited" counts scans of
#: pids given explicitly only: a process found by match or go that exits
#: before its scan has just left.
FAILURE_REASONS = ("exited", "access_denied", "error")

#: The counters of each category exported, as (snapshot field, metric name, help).
GAUGES = (
    ("rss", "memscan_rss_bytes", "Resident bytes by category (smaps Rss)."),
    ("pss", "memscan_pss_bytes", "Proportional set size by category: shared pages divided among their sharers."),
    ("uss", "memscan_uss_bytes", "Unique set size by category: private pages (Private_Clean + Private_Dirty)."),
    ("swap", "memscan_swap_bytes", "Swapped-out bytes by category."),
)


class Scanned(NamedTuple):
    """One target's scan: its command name, the snapshot, and seconds taken."""

    pid: int
    comm: str
    snapshot: Snapshot
    seconds: float


class Targets:
    """Which processes to scan: explicit pids, a regular expression matched
    against the command line or name (processes.matching), and/or every Go process memscan can see.

    Explicit pids are pinned to the process that has them now (its start
    time): once it exits, a new process given the same pid is not scanned in
    its place, and the scans count as failed. Processes found by ``match``
    or ``go`` are looked for again at every scan: they come and go.
    """

    def __init__(self, pids: Sequence[int] = (), match: Optional[str] = None, go: bool = False) -> None:
        if not pids and match is None and not go:
            raise ValueError("no processes to export: give pids, match or go")
        self.match = re.compile(match) if match is not None else None
        self.go = go
        # Raises NoSuchProcess for a pid that does not exist: a typo is an
        # error at start, not a failure counter that rises forever.
        self._pinned = {pid: procfs.stat(pid).starttime for pid in dict.fromkeys(pids)}
        self._last: Optional[List[int]] = None

    def pids(self) -> List[int]:
        """The pids to scan now, sorted."""
        found = set(self._pinned)
        if self.match is not None:
            found.update(pid for pid, _ in matching(self.match))
        if self.go:
            found.update(p.pid for p in processes(go_only=True))
        self._last = sorted(found)
        return self._last

    def last(self) -> List[int]:
        """The pids :meth:`pids` gave last (found now if it was not asked
        yet): the processes whose series are served, without walking /proc
        (and, for ``go``, reading every executable) a second time."""
        return self.pids() if self._last is None else self._last

    def pinned(self, pid: int) -> bool:
        return pid in self._pinned

    def check(self, pid: int) -> None:
        """Raise NoSuchProcess if ``pid`` is pinned and no longer its process."""
        started = self._pinned.get(pid)
        if started is not None and procfs.stat(pid).starttime != started:
            raise NoSuchProcess(pid, "process exited (its pid now belongs to another process)")


def families(scanned: Iterable[Scanned], failures: Dict[str, int]) -> List[Metric]:
    """The metric families of a round of scans and the failure counts so far."""
    gauges = {field: GaugeMetricFamily(name, doc, labels=["pid", "comm", "category"]) for field, name, doc in GAUGES}
    detail = GaugeMetricFamily(
        "memscan_go_heap_detail_rss_bytes",
        "Resident bytes of the Go heap by the runtime's page state (exact tier): objects, stacks, free "
        "(HeapIdle - HeapReleased), released (resident only as LazyFree under GODEBUG=madvdontneed=0), reserved.",
        labels=["pid", "comm", "state"])
    c_detail = GaugeMetricFamily(
        "memscan_c_malloc_detail_rss_bytes",
        "Resident bytes of C allocator memory by state (exact tier): in_use, free (freed chunks the allocator "
        "keeps: fragmentation), reserved, unassigned.",
        labels=["pid", "comm", "state"])
    duration = GaugeMetricFamily("memscan_scan_duration_seconds", "Seconds the last scan of the process took.",
                                 labels=["pid", "comm"])
    for s in scanned:
        pid = str(s.pid)
        duration.add_metric([pid, s.comm], s.seconds)
        cats = s.snapshot.categories
        if cats is None:
            # The psutil tier has totals only: no category to put them in.
            continue
        for field, family in gauges.items():
            for cat in CATEGORIES:
                family.add_metric([pid, s.comm, cat], getattr(cats[cat], field))
        for family, states in ((detail, s.snapshot.go_heap_detail), (c_detail, s.snapshot.c_malloc_detail)):
            for state, counters in (states or {}).items():
                family.add_metric([pid, s.comm, state], counters.rss)
    failed = CounterMetricFamily("memscan_scan_failures", "Scans that failed, by reason: a process given by pid "
                                 "exited, access was denied, or another error.", labels=["reason"])
    for reason in FAILURE_REASONS:
        failed.add_metric([reason], failures.get(reason, 0))
    return [*gauges.values(), detail, c_detail, duration, failed]


class MemscanCollector(Collector):
    """Scans the targets when collected; a result younger than ``max_age``
    seconds is served again, and scrapes that arrive during a scan wait for
    it rather than start their own."""

    def __init__(self, targets: Targets, tier: str = "auto", max_age: float = CACHE_SECONDS) -> None:
        self.targets = targets
        self.tier = tier
        self.max_age = max_age
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)
        self._lock = threading.Lock()
        self._result: List[Metric] = []
        self._at = -float("inf")

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._at >= self.max_age:
                self._result = families(self._scan_all(), self.failures)
                self._at = time.monotonic()
            return self._result

    def _scan_all(self) -> List[Scanned]:
        out = []
        for pid in self.targets.pids():
            start = time.perf_counter()
            try:
                self.targets.check(pid)
                comm = procfs.comm(pid)
                snap = scan(pid, tier=self.tier)
            except NoSuchProcess:
                # A process found by match or go that exits before its scan
                # just left; a pinned one is asked for, and failed.
                if self.targets.pinned(pid):
                    self.failures["exited"] += 1
                continue
            except Error as err:
                self.failures["access_denied" if isinstance(err, AccessDenied) else "error"] += 1
                continue
            out.append(Scanned(pid, comm, snap, time.perf_counter() - start))
        return out


def registry(collector: MemscanCollector) -> CollectorRegistry:
    """A registry with memscan's collector alone: no metrics of the exporter's
    own Python process (those of prometheus_client's default registry)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def listen_address(text: str) -> Tuple[str, int]:
    """``"HOST:PORT"``, ``"[IPv6]:PORT"`` or ``"PORT"`` (loopback) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = DEFAULT_LISTEN.rpartition(":")[0]
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN}, or 0.0.0.0:9573 for every interface)")
    return host, int(port)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """No line per scrape on stderr."""


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    # A slow client must not hold up the next scrape; threads die with the exporter.
    daemon_threads = True


def start_server(reg: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serve ``reg`` at /metrics on (host, port), from a daemon thread; any
    other path is 404. ``server.server_address`` is the bound address (port
    0 picks a free one); ``server.shutdown()`` stops it."""
    metrics = make_wsgi_app(reg)

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        if environ.get("PATH_INFO") == "/metrics":
            return metrics(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"memscan export serves /metrics only\n"]

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("Server", (_ThreadingServer,), {"address_family": family})
        server: WSGIServer = make_server(host, port, app, server_class, _Quiet)
    except OSError as err:
        raise Error(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    threading.Thread(target=server.serve_forever, name="memscan-export", daemon=True).start()
    return server


def write_textfile(reg: CollectorRegistry, path: str, interval: float, once: bool = False) -> None:
    """Write the metrics to ``path`` every ``interval`` seconds (once with
    ``once``), atomically: into a temporary file beside it, then renamed
    over it, so node_exporter never reads half a file."""
    while True:
        started = time.monotonic()
        try:
            write_to_textfile(path, reg)
        except OSError as err:
            raise Error(f"cannot write {path}: {err.strerror or err}") from None
        if once:
            return
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def run(targets: Optional[Targets], tier: str = "auto", listen: Optional[str] = None,
        textfile: Optional[str] = None, interval: float = 15.0, once: bool = False,
        cgroups: Optional[Sequence[str]] = None) -> int:
    """``memscan export``: write the textfile (every ``interval`` seconds, or
    ``once``), or serve /metrics on ``listen`` (DEFAULT_LISTEN if None)
    until interrupted, printing the bound address first. ``cgroups``: also
    the series of these memory cgroups (an empty list: the targets')."""
    reg = registry(MemscanCollector(targets, tier)) if targets is not None else CollectorRegistry(auto_describe=False)
    if cgroups is not None:
        from .cgroup_export import CgroupCollector

        reg.register(CgroupCollector(cgroups, targets))
    if textfile is not None:
        write_textfile(reg, textfile, interval, once)
        return 0
    try:
        host, port = listen_address(listen or DEFAULT_LISTEN)
    except ValueError as err:
        raise Error(f"--listen: {err}") from None
    server = start_server(reg, host, port)
    bound, port = str(server.server_address[0]), server.server_address[1]
    print(f"memscan: serving metrics on http://{f'[{bound}]' if ':' in bound else bound}:{port}/metrics", flush=True)
    while True:
        time.sleep(3600)  # the server thread does the work; Ctrl-C or SIGTERM ends it
