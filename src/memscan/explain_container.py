"""``memscan explain``'s findings on a process that runs under a memory limit.

The kernel enforces a container's limit on its memory cgroup's charge:
page cache and tmpfs, kernel memory and every process of the group count,
not the process's RSS alone. These findings say what of the charge can be
reclaimed before an OOM kill, which GOMEMLIMIT fits the limit, which process
holds the most, and the OOM kills recorded so far. Made only for a cgroup
with a limit.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, List, Optional

from ._errors import Error, NoSuchCgroup
from ._types import CATEGORIES
from .cgroups import ledger
from .core.snapshot import Snapshot
from .findings import MIN_BYTES, MIN_SHARE, Finding
from .format import mib
from .kernel import cgroup
from .owners.go.memlimit import RUNTIME, MemoryLimit, memory_limit

__all__ = ["container_findings", "add"]

#: GOMEMLIMIT is suggested this far below what the limit leaves the Go heap:
#: the runtime's limit is soft (it may overshoot while the GC catches up) and
#: the rest of the charge moves too. The Go team's guide to the GC suggests
#: leaving 5-10% headroom.
GOMEMLIMIT_HEADROOM = 0.10


def container_findings(doc: Dict[str, Any], pid: int, runtime_limit: Any = False) -> List[Finding]:
    """The findings of a :func:`cgroups.ledger` document for process ``pid``;
    ``runtime_limit``: the Go runtime's memory limit (a
    :class:`~memscan.owners.go.memlimit.MemoryLimit`; False: not read)."""
    limit, usage = doc["limit"], doc["usage"]
    out: List[Finding] = []
    file, shmem = doc["file"] or 0, doc["shmem"] or 0
    if file >= MIN_BYTES and file >= MIN_SHARE * usage:
        # Clean page cache outside tmpfs is what reclaim can drop before the
        # OOM killer runs; tmpfs (shmem) and dirty pages first need swap or writeback.
        reclaimable = max(0, file - shmem - (doc["file_dirty"] or 0))
        out.append(Finding(
            "cgroup_page_cache", "info", f"{mib(file)} of page cache counts toward the {mib(limit)} limit",
            f"The cgroup's charge of {mib(usage)} includes {mib(file)} of page cache (tmpfs and shared memory "
            f"{mib(shmem)} among it), which no process's RSS shows unless mapped. About {mib(reclaimable)} of it "
            "is clean file cache the kernel reclaims under pressure before it OOM-kills; the working set the "
            f"kubelet evicts on ({mib(doc['working_set'])}) leaves out only inactive_file "
            f"({mib(doc['file_inactive'] or 0)}).",
            {"file_bytes": file, "shmem_bytes": shmem, "reclaimable_bytes": reclaimable, "limit_bytes": limit,
             "usage_bytes": usage, "working_set_bytes": doc["working_set"]}))
    mine = next((p for p in doc["processes"] if p["pid"] == pid), None)
    if mine is not None and mine["runtime"]["go"] is not None and mine["categories"] is not None:
        heap = mine["categories"]["go_heap"]["rss"]
        detail = mine["go_heap_detail"] or {}
        free = sum(detail[s]["rss"] for s in ("free", "released") if s in detail)
        # What the rest of the charge takes stays; the Go heap gets what is left.
        others = max(0, usage - heap)
        suggest = int(limit * (1 - GOMEMLIMIT_HEADROOM)) - others
        held = f", and the Go heap keeps {mib(free)} of it free" if detail else ""
        text = (f"The limit is {mib(limit)}; the Go heap holds {mib(heap)} resident{held}, and the rest of the "
                f"charge (other memory of this and other processes, page cache, kernel) {mib(others)}. ")
        if suggest >= MIN_BYTES:
            text += (f"Set GOMEMLIMIT to about {suggest >> 20}MiB so that the runtime collects before the kernel "
                     "kills (10% below what the limit leaves the heap).")
        else:
            text += "The rest of the charge alone nearly fills the limit: a GOMEMLIMIT cannot make room."
        numbers = {"limit_bytes": limit, "go_heap_bytes": heap, "go_heap_free_bytes": free,
                   "other_charge_bytes": others, "suggested_gomemlimit_bytes": max(0, suggest)}
        if runtime_limit is not False:
            text += _runtime_limit_text(runtime_limit, limit, numbers)
        out.append(Finding("cgroup_gomemlimit", "notice", f"GOMEMLIMIT for a {mib(limit)} limit", text, numbers))
    procs = [p for p in doc["processes"] if p["categories"] is not None]
    if len(procs) > 1:
        top = max(procs, key=lambda p: p["total"]["pss"])
        cat = max(CATEGORIES, key=lambda c: top["categories"][c]["pss"])
        out.append(Finding(
            "cgroup_top_process", "info", f"pid {top['pid']} holds the most of the cgroup's processes",
            f"Of {len(procs)} processes in the cgroup, pid {top['pid']} holds the most: {mib(top['total']['pss'])} "
            f"PSS, most of it {cat} ({mib(top['categories'][cat]['pss'])}).",
            {"pid": top["pid"], "pss_bytes": top["total"]["pss"], f"{cat}_bytes": top["categories"][cat]["pss"]}))
    kills = doc["events"].get("oom_kill", 0)
    if kills:
        out.append(Finding(
            "cgroup_oom_kills", "warning", f"{kills} OOM kill{'s' if kills > 1 else ''} recorded in this cgroup",
            f"The kernel's OOM killer has killed {kills} process{'es' if kills > 1 else ''} of this cgroup since "
            f"it was created (its limit is {mib(limit)}, its peak {mib(doc['peak'] or usage)}). "
            "`memscan record PID --ring 60 -o last.jsonl` keeps the minute before the next one.",
            {"oom_kills": kills, "limit_bytes": limit, "peak_bytes": doc["peak"] or usage}))
    return out


def _runtime_limit_text(runtime_limit: MemoryLimit, limit: int, numbers: Dict[str, Any]) -> str:
    """What the finding says of the runtime's memory limit; its number goes
    into ``numbers``: runtime_memory_limit_bytes when read from the runtime,
    environment_memory_limit_bytes when it is the GOMEMLIMIT the process
    started with."""
    value = runtime_limit.value
    above = " (above the cgroup's limit: it cannot act before the kernel does)" \
        if value is not None and value >= limit else ""
    if runtime_limit.source == RUNTIME:
        if value is None:
            return " The runtime has no memory limit now (neither GOMEMLIMIT nor debug.SetMemoryLimit)."
        numbers["runtime_memory_limit_bytes"] = value
        return f" The runtime's memory limit is {mib(value)} now{above}."
    # The binary does not say where gcController is (no symbol table): the start value.
    unknown = "the binary does not say where the runtime keeps its own value"
    if value is None:
        return (" Its environment sets no GOMEMLIMIT, so the runtime started without a memory limit "
                f"(debug.SetMemoryLimit may have set one since; {unknown}).")
    numbers["environment_memory_limit_bytes"] = value
    return (f" GOMEMLIMIT in its environment is {mib(value)}{above}: the limit the runtime started with, "
            f"which debug.SetMemoryLimit may have changed since ({unknown}).")


def add(report: Dict[str, Any], pid: int, tier: str = "auto",
        snap: Optional[Snapshot] = None) -> Optional[Dict[str, Any]]:
    """Add the container findings and a ``cgroup`` summary to an explain
    report when the process's memory cgroup has a limit; the ledger or None.
    ``snap``: the report's last scan of ``pid``, which the ledger uses
    instead of scanning the process again."""
    try:
        cg = cgroup.of_pid(pid)
        if cgroup.usage_and_limit(cg)[1] is None:
            return None
        doc = ledger(cg, tier, snap)
    except NoSuchCgroup:
        return None
    runtime_limit: Any = False
    if tier in ("auto", "exact"):
        try:
            runtime_limit = memory_limit(pid)
        except Error:
            pass  # not Go 1.19+, or no ptrace rights: the finding goes without it
    found = container_findings(doc, pid, runtime_limit)
    report["cgroup"] = {k: doc[k] for k in ("version", "path", "container", "limit", "usage", "working_set",
                                            "file", "events")}
    report["findings"] = [asdict(f) for f in found if f.severity == "warning"] + report["findings"] + \
        [asdict(f) for f in found if f.severity != "warning"]
    return doc
