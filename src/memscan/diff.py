"""``memscan diff A B``: how a process's memory moved between two looks.

Each side is a scan (``memscan scan PID --json``) or a row of a recording
(``memscan record``), named ``FILE@T`` (the first sample at or after T
seconds from the recording's start), ``FILE@first`` or ``FILE@last``; a
recording named without a position is its first row as A and its last as B,
and ``memscan diff FILE`` alone compares those two. Both sides are reduced to
the same figures, named as a recording's columns are: ``rss`` (the total),
each category, and the states of the Go heap (``go_heap.free``...) and of
the C allocator (``c_malloc.in_use``...). Resident bytes are compared always,
mapped sizes where both sides are scans (a recording holds no sizes). A
figure one side did not measure (the psutil tier has no categories, a row
between full scans no C allocator states) has no change, not a guessed one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ._errors import Error
from ._types import CATEGORIES
from .format import mib, show
from .record import C_DETAIL_COLUMNS, DETAIL_COLUMNS, Recording, read

__all__ = ["FIGURES", "Side", "compare", "figures", "load", "render", "run"]

#: Every figure compared or checked, in the order of a recording's columns.
FIGURES: Tuple[str, ...] = ("rss", *CATEGORIES, *DETAIL_COLUMNS, *C_DETAIL_COLUMNS)

Figures = Dict[str, Optional[int]]

# FILE@first, FILE@last, FILE@12.5: a position in a recording.
_POSITION = re.compile(r"(?s)(.+)@(first|last|\d+(?:\.\d*)?|\.\d+)")


def figures(doc: Dict[str, Any], counter: str = "rss") -> Figures:
    """One counter (``rss`` or ``size``) of every figure of a snapshot's
    JSON form (``Snapshot.to_dict()``); None where the scan has no such figure."""
    cats = doc["categories"]
    out: Figures = {"rss": doc["total"][counter]}
    out.update({c: None if cats is None else cats[c][counter] for c in CATEGORIES})
    for name in DETAIL_COLUMNS + C_DETAIL_COLUMNS:
        category, _, state = name.partition(".")
        detail = doc.get(f"{category}_detail") or {}
        out[name] = detail[state][counter] if state in detail else None
    return out


@dataclass
class Side:
    """One side of a diff: what the user named, and its figures."""

    name: str
    pid: Optional[int]
    tier: Optional[str]
    wall: Optional[float]
    #: Seconds from the recording's start; None for a scan.
    mono: Optional[float]
    rss: Figures
    #: Mapped sizes (scans only).
    size: Optional[Figures]

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "tier": self.tier, "time": self.wall, "seconds": self.mono}


def _scan_side(name: str, doc: Dict[str, Any]) -> Side:
    try:
        return Side(name, doc.get("pid"), doc.get("tier"), doc.get("time"), None, figures(doc), figures(doc, "size"))
    except (KeyError, TypeError):
        raise Error(f"{name}: not a scan of memscan's (memscan scan PID --json)") from None


def _row(rec: Recording, position: str) -> Dict[str, Any]:
    rows = rec.rows
    if not rows:
        raise Error(f"{rec.path}: the recording holds no samples")
    if position in ("first", "last"):
        return rows[0 if position == "first" else -1]
    at = float(position)
    for row in rows:
        if row["mono"] >= at:
            return row
    raise Error(f"{rec.path}@{position}: past the end of the recording (its last sample is at "
                f"{rows[-1]['mono']:.3f} s)")


def _recording_side(rec: Recording, position: str) -> Side:
    row = _row(rec, position)
    return Side(f"{rec.path}@{position}", rec.meta.get("pid"), row.get("tier"), row.get("wall"), row["mono"],
                {name: row.get(name) for name in FIGURES}, None)


def _split(text: str) -> Tuple[str, Optional[str]]:
    """A side's file and position (None without one)."""
    m = _POSITION.fullmatch(text)
    return (m.group(1), m.group(2)) if m else (text, None)


def load(text: str, default: str = "first") -> Side:
    """The side named ``text``: a scan's JSON file, ``FILE@POSITION`` of a
    recording, or a recording's ``default`` row ("first" or "last")."""
    path, position = _split(text)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise Error(f"cannot read {path}: {err.strerror}") from None
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None  # a CSV recording, a JSON Lines one of more than one line, or neither
    if isinstance(doc, dict) and "memscan" not in doc:
        if position is not None:
            raise Error(f"{text}: a position is for a recording, {path} is a scan")
        return _scan_side(path, doc)
    return _recording_side(read(path), position or default)


def _change(a: Optional[int], b: Optional[int]) -> Dict[str, Any]:
    change = None if a is None or b is None else b - a
    percent = None if change is None or not a else round(100.0 * change / a, 2)
    return {"a": a, "b": b, "change": change, "percent": percent}


def compare(a: Side, b: Side) -> Dict[str, Any]:
    """The JSON-ready diff of two sides: the totals, then every other figure
    (``rows``), the biggest change in resident bytes first."""
    def entry(name: str) -> Dict[str, Any]:
        size = _change(a.size[name], b.size[name]) if a.size is not None and b.size is not None else None
        return {"name": name, "rss": _change(a.rss[name], b.rss[name]), "size": size}

    rows = [entry(name) for name in FIGURES[1:]]
    rows.sort(key=lambda r: -1 if r["rss"]["change"] is None else abs(r["rss"]["change"]), reverse=True)
    total = entry("rss")
    seconds = None if a.wall is None or b.wall is None else round(b.wall - a.wall, 6)
    return {"a": a.describe(), "b": b.describe(), "seconds": seconds, "rss": total["rss"], "size": total["size"],
            "rows": rows}


def _line(label: str, c: Dict[str, Any]) -> str:
    if c["change"] is None:
        return f"{label} not known on both sides"
    percent = "" if c["percent"] is None else f" ({c['percent']:+.1f}%)"
    return f"{label} {mib(c['a'])} -> {mib(c['b'])}: {mib(c['change'], sign=True)}{percent}"


def _percent(c: Dict[str, Any]) -> str:
    return "new" if c["percent"] is None else f"{c['percent']:+.1f}"


def render(doc: Dict[str, Any], console: Any = None) -> None:
    """Print a diff (:func:`compare`): the sides and the totals as lines,
    then a table of the figures that changed."""
    from rich.table import Table

    for key in ("a", "b"):
        s = doc[key]
        where = f"{s['seconds']:.3f} s into the recording" if s["seconds"] is not None else "scan"
        print(f"{key.upper()}: {s['name']} (pid {s['pid']}, {where}, tier {s['tier']})")
    later = "" if doc["seconds"] is None else f", {doc['seconds']:.1f} s later"
    print(_line("rss", doc["rss"]) + later)
    if doc["size"] is not None:
        print(_line("size", doc["size"]))
    changed = [r for r in doc["rows"] if r["rss"]["change"] or (r["size"] or {}).get("change")]
    if not changed:
        print("no other figure changed")
        return
    table = Table(title_justify="left")
    columns = ["", "A MiB", "B MiB", "change MiB", "%"] + (["size change MiB"] if doc["size"] is not None else [])
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if i else "left")
    for r in changed:
        rss, size = r["rss"], r["size"]
        cells = [r["name"], mib(rss["a"], unit=False), mib(rss["b"], unit=False),
                 mib(rss["change"], unit=False, sign=True), _percent(rss)]
        if doc["size"] is not None:
            cells.append("" if size["change"] is None else mib(size["change"], unit=False, sign=True))
        table.add_row(*cells)
    show(table, console)


def sides(a: str, b: Optional[str]) -> Tuple[Side, Side]:
    """The two sides ``memscan diff A [B]`` names: B missing, A's recording
    from its first row (or A's position) to its last."""
    first = load(a)
    if b is not None:
        return first, load(b, default="last")
    if first.mono is None:
        raise Error(f"{a} is a scan: give a second one to compare it with")
    return first, load(_split(a)[0] + "@last")


def run(a: str, b: Optional[str], as_json: bool) -> int:
    """``memscan diff``: print the diff of the sides named; 0."""
    doc = compare(*sides(a, b))
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        render(doc)
    return 0

