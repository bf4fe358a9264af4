"""``memscan export --cgroup``: Prometheus series of memory cgroups.

Per cgroup (labels ``cgroup``, ``container_id``, ``pod_uid``; empty where the
path names none): usage, limit, working set, peak, the charge by kind, the
memory events as counters and the number of processes. Per exported
process, ``memscan_process_cgroup_info{pid,comm,cgroup,container_id,pod_uid}
1``, to join its series with its container's (``* on(pid) group_left``). The
cgroups are those named, or those of the exported processes: the series stay
bounded by the targets.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._errors import Error
from .kernel import cgroup, procfs

__all__ = ["CgroupCollector", "KINDS", "LABELS"]

LABELS = ["cgroup", "container_id", "pod_uid"]
#: The charge by kind, as (memscan_cgroup_memory_bytes kind, Charge field).
KINDS = (("anon", "anon"), ("file_active", "file_active"), ("file_inactive", "file_inactive"),
         ("shmem", "shmem"), ("kernel", "kernel"), ("sock", "sock"), ("swap", "swap"))
# Event counters exported: v2 memory.events keys and v1's failcnt. v1's
# under_oom is a state, not a count.
EVENTS = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill", "sock_throttled", "failcnt")


class CgroupCollector(Collector):
    """The cgroups at ``paths`` (an empty list: those of the processes of
    ``targets``, an ``export.Targets``: the ones its process series were
    last collected for).
    A path that names no memory cgroup is an error at start (NoSuchCgroup),
    not a series that never appears."""

    def __init__(self, paths: Sequence[str], targets: Any = None) -> None:
        self.named = [cgroup.at(p) for p in paths]
        self.targets = targets

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("memscan_process_cgroup_info", "The memory cgroup of an exported process, and "
                                 "the container and pod its path names.", labels=["pid", "comm", *LABELS])
        found: Dict[str, cgroup.Cgroup] = {}
        for pid in self.targets.last() if self.targets is not None else ():
            try:
                cg = cgroup.of_pid(pid)
                comm = procfs.comm(pid)
            except Error:
                continue  # gone, or in no memory cgroup: no series
            found.setdefault(cg.directory, cg)
            info.add_metric([str(pid), comm, *_labels(cg.path)], 1)
        for cg in self.named:
            found.setdefault(cg.directory, cg)
        charges: List[cgroup.Charge] = []
        for cg in found.values():
            try:
                charges.append(cgroup.read(cg))
            except Error:
                continue  # removed since: its series end
        return [*_families(charges), info]


def _labels(path: str) -> List[str]:
    ids = cgroup.container(path)
    return [path, ids.get("container_id", ""), ids.get("pod_uid", "")]


def _families(charges: Sequence[cgroup.Charge]) -> List[Metric]:
    def gauge(name: str, doc: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=[*LABELS, *extra])

    usage = gauge("memscan_cgroup_usage_bytes", "Bytes charged to the cgroup and its descendants (memory.current, "
                  "memory.usage_in_bytes): what the limit is enforced on.")
    limit = gauge("memscan_cgroup_limit_bytes", "The cgroup's hard limit (memory.max, memory.limit_in_bytes); "
                  "no series without one.")
    working = gauge("memscan_cgroup_working_set_bytes", "usage - inactive_file, as the kubelet and cAdvisor "
                    "compute it.")
    peak = gauge("memscan_cgroup_peak_bytes", "High-water mark of usage (memory.peak, max_usage_in_bytes).")
    memory = gauge("memscan_cgroup_memory_bytes", "The charge by kind: anon, file_active, file_inactive, shmem, "
                   "kernel, sock, swap (where the kernel gives it).", ["kind"])
    procs = gauge("memscan_cgroup_processes", "Processes in the cgroup and its descendants.")
    events = CounterMetricFamily("memscan_cgroup_events", "Memory events of the cgroup: v2 memory.events "
                                 "(high, max, oom, oom_kill...), v1 failcnt and oom_kill.", labels=[*LABELS, "event"])
    for c in charges:
        labels = _labels(c.path)
        usage.add_metric(labels, c.usage)
        working.add_metric(labels, c.working_set)
        procs.add_metric(labels, len(c.pids))
        if c.limit is not None:
            limit.add_metric(labels, c.limit)
        if c.peak is not None:
            peak.add_metric(labels, c.peak)
        for kind, field in KINDS:
            value = getattr(c, field)
            if value is not None:
                memory.add_metric([*labels, kind], value)
        for event in EVENTS:
            if event in c.events:
                events.add_metric([*labels, event], c.events[event])
    return [usage, limit, working, peak, memory, procs, events]
