"""scan(): one look at a process, in the tier asked for."""

from __future__ import annotations

import sys
import time
from typing import Dict, Optional

from . import _procfs, fallback, layout
from ._errors import AccessDenied, Error
from ._impl import get_engine
from ._types import CATEGORIES, Counters
from .snapshot import Snapshot

TIERS = ("auto", "exact", "layout", "psutil")


def scan(pid: int, tier: str = "auto", *, engine: Optional[str] = None) -> Snapshot:
    """Attribute the memory of process ``pid`` to memscan's categories.

    ``tier``: "layout" decides per mapping from smaps alone; "psutil" gives
    totals only; "auto" gives the best tier permitted and falls back to
    psutil with a warning when smaps may not be read. ``engine`` picks
    "cython" or "python" (default: the fastest available).

    Raises NoSuchProcess (no such pid, a zombie, or an exit during the scan),
    AccessDenied (an explicit tier that is not permitted), ParseError.
    """
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
    eng = get_engine(engine)
    name = "cython" if eng.__name__.endswith("_fast") else "python"
    if tier == "exact":
        raise Error("the exact tier is not available in this version; use tier='layout'")
    if tier == "psutil":
        return fallback.snapshot(pid, name, "psutil tier requested")
    if not sys.platform.startswith("linux"):
        if tier == "auto":
            return fallback.snapshot(pid, name, "smaps exists only on Linux")
        raise Error("the layout tier needs Linux's /proc/PID/smaps")
    try:
        return _layout(pid, eng, name)
    except AccessDenied as err:
        if tier != "auto":
            raise
        return fallback.snapshot(pid, name, f"smaps of pid {pid} may not be read ({err.path}: permission denied)")


def _layout(pid: int, eng, engine_name: str) -> Snapshot:  # type: ignore[no-untyped-def]
    before = _procfs.stat(pid)
    when = time.time()
    data = _procfs.read(pid, "smaps", bytearray(), eng)
    if not data:
        raise _procfs.explain_empty(pid, before)
    _procfs.check_alive(pid, before)
    table = _procfs.parsed(pid, "smaps", eng.parse_smaps, data)
    lay = layout.context(pid, table)
    sums = eng.accumulate(table, eng.classify(table, lay.context))
    categories: Dict[str, Counters] = {
        cat: Counters(*sums[9 * i : 9 * i + 9]) for i, cat in enumerate(CATEGORIES)
    }
    total = Counters(*sums[9 * len(CATEGORIES) :])
    return Snapshot(
        pid, when, "smaps", "layout", engine_name, total, categories,
        go=lay.go, allocator=lay.allocator, warnings=lay.warnings,
    )
