"""``memscan cgroup``: the ledger of a memory cgroup's charge.

The kernel OOM-kills by the cgroup's charge, not by any process's RSS: the
charge also holds page cache, tmpfs, kernel memory and every process in the
group. The ledger sets the cgroup's own figures beside a scan of each of its
processes, and shows the remainder between the two sides explicitly.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ._errors import AccessDenied, NoSuchProcess
from .core import fallback
from .core.scanner import scan
from .core.snapshot import Snapshot
from .format import mib, show, warn
from .kernel import cgroup as kcgroup

__all__ = ["target", "ledger", "render"]


def target(path: Optional[str], pid: Optional[int]) -> kcgroup.Cgroup:
    """The cgroup a command names: a path, or the memory cgroup of ``pid``."""
    return kcgroup.of_pid(pid) if pid is not None else kcgroup.at(path or "/")


def ledger(cg: kcgroup.Cgroup, tier: str = "auto", scanned: Optional[Snapshot] = None) -> Dict[str, Any]:
    """The cgroup's charge and a scan of each of its processes, as JSON;
    ``scanned``: a snapshot of one of them just taken, used as its scan.

    ``remainder`` = usage - the processes' summed PSS: what is charged but
    in no process's proportional share (unmapped page cache, tmpfs files,
    kernel memory, charges left by exited processes), plus, on v1, the
    per-CPU charge batches the page counter holds in advance.
    """
    charge = kcgroup.read(cg)
    processes: List[Dict[str, Any]] = []
    warnings: List[str] = []
    for pid in charge.pids:
        try:
            snap = scanned if scanned is not None and scanned.pid == pid else scan(pid, tier=tier)
            processes.append(snap.to_dict())
        except (NoSuchProcess, AccessDenied) as err:
            # A process may leave or exit between cgroup.procs and its scan.
            warnings.append(f"pid {pid} not scanned: {err}")
    pss = sum(p["total"]["pss"] for p in processes)
    doc = charge.to_dict()
    doc["directory"] = cg.directory
    doc["processes"] = processes
    doc["process_rss"] = sum(p["total"]["rss"] for p in processes)
    doc["process_pss"] = pss
    doc["remainder"] = charge.usage - pss
    doc["warnings"] = warnings
    return doc


def _bytes(value: Optional[int]) -> str:
    return "n/a" if value is None else mib(value, unit=False)


def render(doc: Dict[str, Any], console: Any = None) -> None:
    """Print a ledger: the cgroup side, then the processes, each a table
    under a heading line, whole whatever the width of the output
    (``format.show``); warnings on stderr, each process's named by its pid."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from ._types import CATEGORIES

    title = f"cgroup v{doc['version']} {doc['path']}"
    for key in ("runtime", "container_id", "pod_uid"):
        if key in doc["container"]:
            title += f" · {key} {doc['container'][key][:12] if key == 'container_id' else doc['container'][key]}"
    side = Table()
    side.add_column("cgroup side")
    side.add_column("MiB", justify="right")
    rows = [
        ("limit", doc["limit"]), ("high", doc["high"]), ("usage", doc["usage"]), ("peak", doc["peak"]),
        ("headroom", doc["headroom"]), ("working set (usage - inactive_file)", doc["working_set"]), None,
        ("anon", doc["anon"]), ("file (page cache, tmpfs included)", doc["file"]),
        ("  active_file", doc["file_active"]), ("  inactive_file", doc["file_inactive"]),
        ("  dirty", doc["file_dirty"]), ("shmem / tmpfs", doc["shmem"]), ("kernel", doc["kernel"]),
        ("  slab", doc["slab"]), ("  kernel stacks", doc["kernel_stack"]), ("  page tables", doc["pagetables"]),
        ("sockets", doc["sock"]), ("swap", doc["swap"]),
    ]
    for row in rows:
        if row is None:
            side.add_section()
        elif row[1] is not None or row[0] in ("limit",):
            side.add_row(row[0], "no limit" if row[0] == "limit" and row[1] is None else _bytes(row[1]))
    lines: List[Any] = [Text(title), side, Text("events: " + ", ".join(f"{k} {v}" for k, v in doc["events"].items()))]
    if doc["pressure"]:
        lines.append(Text("pressure: " + ", ".join(
            f"{kind} avg10 {v['avg10']:.2f}% avg60 {v['avg60']:.2f}%" for kind, v in doc["pressure"].items())))
    procs = Table()
    procs.add_column("category")
    for p in doc["processes"]:
        procs.add_column(str(p["pid"]), justify="right")
    for name in CATEGORIES:
        cells = ["n/a" if p["categories"] is None else _bytes(p["categories"][name]["rss"]) for p in doc["processes"]]
        procs.add_row(name, *cells)
    procs.add_section()

    def total(p: Dict[str, Any], name: str) -> str:
        # Without smaps (the psutil tier) pss is unknown: not zero.
        return "n/a" if p["source"] == "psutil" and name in fallback.UNKNOWN else _bytes(p["total"][name])

    procs.add_row("rss", *(total(p, "rss") for p in doc["processes"]), style="bold")
    procs.add_row("pss", *(total(p, "pss") for p in doc["processes"]), style="bold")
    lines += [Text("process side (rss MiB by category)"), procs, Text(
        f"usage {mib(doc['usage'])} = processes' pss {mib(doc['process_pss'])} + remainder {mib(doc['remainder'])} "
        "(charged in no process's share: unmapped page cache, tmpfs, kernel memory, charges of exited processes; "
        "negative when the processes map pages charged to another cgroup, such as shared libraries first read "
        "elsewhere)")]
    show(Group(*lines), console)
    warn(doc["warnings"] + [f"pid {p['pid']}: {w}" for p in doc["processes"] for w in p["warnings"]])
