"""``memscan explain FILE``: the findings of a saved recording.

The same rules as on a live process (:mod:`memscan.explain`), fed with the
figures a recording holds: growth by category from the first row with
categories to the last, the C allocator's states and the Go heap's from the
full-scan rows that carry them. A rule whose figures the recording lacks
(a size for VIRT, thread stacks' reservations, the runtime's MemStats, rows
of the psutil tier without categories) is not applied: no figure is guessed.
The recording's events add what a live scan cannot see: how the target
ended (its signal and whether the kernel's OOM killer chose it, from the
exit event of ``memscan record``), a ``--trigger`` that fired, and a
recording cut short.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, List, Optional, Sequence

from ._errors import Error
from ._types import CATEGORIES
from .explain import freed_heap_finding, most_memory_finding, ordered, runtime_metadata_finding
from .explain_c import c_fragmentation_finding, c_growth_finding, c_in_use_finding, c_memory_finding
from .findings import Finding
from .record import C_DETAIL_COLUMNS, Recording, read

__all__ = ["findings", "report", "run"]

Row = Dict[str, Any]

#: Signals that ask a process to stop (kill(1)'s default, Ctrl-C, a closed
#: terminal): a death by one of them is a shutdown, by any other (SIGKILL,
#: SIGSEGV, SIGABRT...) a crash or a kill worth a warning.
ASKED = ("SIGTERM", "SIGINT", "SIGHUP")


def _with(rows: Sequence[Row], columns: Sequence[str]) -> List[Row]:
    """The rows on which every one of ``columns`` was measured."""
    return [r for r in rows if all(r.get(c) is not None for c in columns)]


def _seconds(first: Row, last: Row) -> float:
    return float(last["mono"] - first["mono"])


def growth(rec: Recording) -> Dict[str, int]:
    """Each category's growth and the total's, as :func:`findings.growth`:
    from the first row with categories to the last (a row of the psutil tier
    has none), or of RSS alone over all rows when no row has them."""
    rows = _with(rec.rows, CATEGORIES) or rec.rows
    first, last = rows[0], rows[-1]
    out = {c: last[c] - first[c] for c in CATEGORIES if first.get(c) is not None and last.get(c) is not None}
    out["total"] = last["rss"] - first["rss"]
    return out


def _is_go(rec: Recording) -> Optional[bool]:
    """Whether the target ran Go, from the header (None: the header does not say)."""
    return None if "go" not in rec.meta else rec.meta["go"] is not None


def figure_findings(rec: Recording) -> List[Finding]:
    """The rules of :mod:`explain` that a recording's figures feed: the
    trends over its rows, then the rules of one scan on the last row that
    carries each one's figures."""
    trend: List[Optional[Finding]] = []
    go = _is_go(rec)
    cats = _with(rec.rows, CATEGORIES)
    if go and len(cats) >= 2:
        trend.append(c_growth_finding(growth(rec), _seconds(cats[0], cats[-1])))
    c_rows = _with(rec.rows, C_DETAIL_COLUMNS)
    if go is False and len(c_rows) >= 2:
        first, last = (_c_states(r) for r in (c_rows[0], c_rows[-1]))
        trend.append(c_in_use_finding(first, last, _seconds(c_rows[0], c_rows[-1])))
    one: List[Optional[Finding]] = []
    if c_rows:
        last = c_rows[-1]
        one.append(c_fragmentation_finding(last["c_malloc.free"], last["c_malloc.in_use"], last["rss"],
                                           rec.meta.get("allocator"), last["c_malloc.unassigned"]))
    heap = _with(rec.rows, ("go_heap.free",))
    if go and heap:
        one.append(freed_heap_finding(heap[-1]["go_heap.free"], heap[-1]["rss"]))
    if cats:
        row = cats[-1]
        figures = {c: row[c] for c in CATEGORIES}
        if go:
            one += [c_memory_finding(figures, row["rss"], rec.meta.get("allocator")),
                    runtime_metadata_finding(row["go_runtime"], row["rss"])]
        if not any(one):
            detail = _c_states(row) if row.get(C_DETAIL_COLUMNS[0]) is not None else None
            one.append(most_memory_finding(figures, row["rss"], detail))
    return [f for f in trend + one if f is not None]


def _c_states(row: Row) -> Dict[str, int]:
    """The C allocator's resident bytes by state on a full-scan row."""
    return {c.partition(".")[2]: row[c] for c in C_DETAIL_COLUMNS}


def event_findings(rec: Recording) -> List[Finding]:
    """What the recording's events say: how the target ended, a trigger
    that fired, a recording with no end."""
    end = rec.end
    pid = rec.meta.get("pid")
    if end is None:
        return [Finding(
            "recording_cut_short", "info", "The recording has no end event",
            f"{rec.path} ends without the event memscan writes when a recording ends: memscan was killed (or "
            "the machine stopped) while recording, so what happened to the target after the last sample is "
            "not known.", {"samples": len(rec.rows)})]
    if end["event"] == "exit":
        at = float(end["died"] if end.get("died") is not None else end["mono"])
        numbers: Dict[str, float] = {"at_seconds": at}
        sig, status, oom = end.get("signal"), end.get("status"), end.get("oom_kill")
        if sig:
            how = f"was killed by signal {sig}"
        elif status is not None:
            how = f"exited with status {status}"
            numbers["status"] = status
        else:
            how = "exited"
        said = "" if sig or status is not None else " Its exit status was not known to memscan."
        if oom:
            said += (" The kernel's OOM killer killed it: its memory cgroup's oom_kill count rose as it died, so "
                     "the cgroup's charge reached its limit (memory.max, or memory.limit_in_bytes in cgroup v1).")
        elif oom is False:
            said += " Its memory cgroup's oom_kill count did not rise: not the OOM killer."
        if oom is not None:
            numbers["oom_kill"] = int(bool(oom))
        after = f", {at - rec.rows[-1]['mono']:.2f} s after its last sample" if rec.rows else ""
        return [Finding(
            "target_exited", "warning" if oom or (sig and sig not in ASKED) else "info",
            f"pid {pid} was OOM-killed ({sig or 'signal unknown'})" if oom else f"pid {pid} {how}",
            f"The recorded process (pid {pid}) {how} at {at:.1f} s on the recording's clock{after}.{said}",
            numbers)]
    if end.get("reason") == "trigger":
        trigger = rec.meta.get("trigger", "the trigger")
        return [Finding(
            "trigger_fired", "info", f"The trigger {trigger} fired",
            f"memscan stopped recording when {trigger} held, at {end['mono']:.1f} s on the recording's clock; "
            "its last rows are the moment it fired.", {"at_seconds": end["mono"]})]
    return []


def findings(rec: Recording) -> List[Finding]:
    """All findings of a recording, most urgent first."""
    return ordered(event_findings(rec) + figure_findings(rec))


def report(rec: Recording) -> Dict[str, Any]:
    """The JSON-ready dict of ``memscan explain FILE``: the keys of
    :func:`explain.report`, from the recording's last row (``size`` and
    ``memstats`` are null: a recording holds neither), plus ``recording``."""
    last = rec.rows[-1]
    cats = _with(rec.rows, CATEGORIES)
    go = rec.meta.get("go")
    warnings = [ev["message"] for ev in rec.events if ev.get("event") == "warning" and "message" in ev]
    return {
        "pid": rec.meta.get("pid"),
        "time": last.get("wall"),
        "tier": last.get("tier"),
        "go": None if go is None else {"version": go, "cgo": None},
        "rss": last["rss"],
        "size": None,
        "categories": {c: cats[-1][c] for c in CATEGORIES} if cats else None,
        "watch": None if len(rec.rows) < 2 else {"seconds": _seconds(rec.rows[0], last), "scans": len(rec.rows),
                                                 "growth": growth(rec)},
        "memstats": None,
        "findings": [asdict(f) for f in findings(rec)],
        "warnings": warnings,
        "recording": {"path": rec.path, "command": rec.meta.get("command"), "start": rec.meta.get("start"),
                      "samples": len(rec.rows), "end": rec.end},
    }


def run(path: str) -> Dict[str, Any]:
    """Read the recording at ``path`` and return :func:`report`; an Error
    with one line for a file that is not one, or one without samples."""
    rec = read(path)
    if not rec.rows:
        raise Error(f"{path}: the recording holds no samples")
    return report(rec)
