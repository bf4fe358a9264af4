"""``memscan check PID --max WHAT=SIZE [--max-growth WHAT=SIZE --for DURATION]``:
bounds on a process's memory, for CI, cron and health checks.

WHAT is any figure ``memscan diff`` compares, named as a recording's
columns: ``rss`` (the total), a category (``c_malloc``), or a state
(``go_heap.free``, ``c_malloc.free``). ``--max`` bounds the figure in a
scan; ``--max-growth`` bounds how much it grew over ``--for``, between a
scan at the start and one at the end (``--max`` then applies to the last
scan). ``--for`` has no default: how long to watch is the caller's to say,
and a check that waits when nobody asked would stall a pipeline. Each bound
is one line, ``ok`` or ``FAIL``; the status is 0 when every bound holds and
1 otherwise. A bound on a figure the scan did not measure (the psutil
tier's categories, the Go heap states of a layout scan) fails: nothing
unmeasured passes.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .core.scanner import scan
from .diff import FIGURES, Figures, figures
from .format import mib, size, warn

__all__ = ["bound", "evaluate", "run"]

Bound = Tuple[str, int]


def bound(text: str) -> Bound:
    """argparse type of ``--max`` and ``--max-growth``: ``WHAT=SIZE``."""
    what, sep, amount = text.partition("=")
    what = what.strip()
    if not sep:
        raise argparse.ArgumentTypeError(f"not WHAT=SIZE: {text!r} (e.g. rss=512MiB, c_malloc=1GiB)")
    if what not in FIGURES:
        raise argparse.ArgumentTypeError(
            f"unknown figure {what!r}: rss, a category ({', '.join(FIGURES[1:4])}...) or a state "
            "(go_heap.free, c_malloc.free...)")
    try:
        return what, size(amount)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _result(kind: str, what: str, limit: int, value: Optional[int], seconds: Optional[float]) -> Dict[str, Any]:
    return {"kind": kind, "what": what, "limit": limit, "value": value, "seconds": seconds,
            "ok": value is not None and value <= limit}


def evaluate(pid: int, maxes: Sequence[Bound], growths: Sequence[Bound], seconds: Optional[float],
             tier: str) -> Dict[str, Any]:
    """Scan ``pid`` (twice, ``seconds`` apart, when there are growth bounds)
    and hold each bound against the figures: the JSON-ready result."""
    snaps = [scan(pid, tier=tier)]
    if growths:
        assert seconds is not None
        time.sleep(seconds)
        snaps.append(scan(pid, tier=tier))
    start: Figures = figures(snaps[0].to_dict())
    end: Figures = figures(snaps[-1].to_dict())
    results = [_result("max", what, limit, end[what], None) for what, limit in maxes]
    for what, limit in growths:
        a, b = start[what], end[what]
        results.append(_result("growth", what, limit, None if a is None or b is None else b - a, seconds))
    warnings: List[str] = []
    for snap in snaps:
        warnings += [w for w in snap.warnings if w not in warnings]
    return {"pid": pid, "tier": snaps[-1].tier, "ok": all(r["ok"] for r in results), "bounds": results,
            "warnings": warnings}


def line(r: Dict[str, Any], tier: str) -> str:
    """One bound's result as a person reads it."""
    verdict = "ok" if r["ok"] else "FAIL"
    if r["value"] is None:
        return f"{verdict} {r['what']} not measured (tier {tier})"
    if r["kind"] == "max":
        return f"{verdict} {r['what']} {mib(r['value'])} {'<=' if r['ok'] else '>'} {mib(r['limit'])}"
    return (f"{verdict} {r['what']} grew {mib(r['value'], sign=True)} {'<=' if r['ok'] else '>'} "
            f"{mib(r['limit'])} in {r['seconds']:g} s")


def run(pid: int, maxes: Sequence[Bound], growths: Sequence[Bound], seconds: Optional[float], tier: str,
        as_json: bool) -> int:
    """``memscan check``: print each bound's result; 0 when all hold, else 1."""
    doc = evaluate(pid, maxes, growths, seconds, tier)
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        for r in doc["bounds"]:
            print(line(r, doc["tier"]))
    warn(doc["warnings"])
    return 0 if doc["ok"] else 1
