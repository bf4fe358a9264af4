"""scan(): one look at a process, in the tier asked for."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from typing import Dict, Optional, Tuple

from . import _procfs, fallback, layout
from ._errors import AccessDenied, Error
from ._impl import get_engine
from ._types import CATEGORIES, Counters
from .snapshot import Snapshot

TIERS = ("auto", "exact", "layout", "psutil")

# Samplers scan the same process again and again: keep each thread's read
# buffer (smaps of 20,000 mappings is 14 MB; growing a new buffer to that
# size costs as much as parsing it), and the layout facts of recent
# processes, valid while the process and its loaded files are the same.
_local = threading.local()
_layouts: "OrderedDict[Tuple, layout.Layout]" = OrderedDict()
_LAYOUTS_KEPT = 64


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
    when = time.time()
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray()
    dir_fd = _procfs.open_dir(pid)
    try:
        data = _procfs.read(pid, "smaps", buf, eng, dir_fd)
        try:
            st = _procfs.stat_after_read(pid, dir_fd, not data)
            table = _procfs.parsed(pid, "smaps", eng.parse_smaps, data)
        finally:
            # A view left alive (in a traceback) would stop the buffer growing.
            data.release()
    finally:
        os.close(dir_fd)
    lay = _layout_of(pid, st.starttime, table)
    sums = eng.accumulate(table, eng.classify(table, lay.context))
    categories: Dict[str, Counters] = {
        cat: Counters(*sums[9 * i : 9 * i + 9]) for i, cat in enumerate(CATEGORIES)
    }
    total = Counters(*sums[9 * len(CATEGORIES) :])
    return Snapshot(
        pid, when, "smaps", "layout", engine_name, total, categories,
        go=lay.go, allocator=lay.allocator, warnings=lay.warnings,
    )


def _layout_of(pid: int, starttime: int, table) -> layout.Layout:  # type: ignore[no-untyped-def]
    """layout.context(), cached per process and set of loaded files.

    The key holds where every file is mapped (address, device, inode): a
    library loaded or unloaded, or a binary replaced, gives a new key.
    """
    files = table.file_starts
    key = (pid, starttime, tuple(table.starts[i] for i in files), tuple(table.inodes[i] for i in files),
           tuple(table.devs[i] for i in files))
    lay = _layouts.get(key)
    if lay is None:
        lay = _layouts[key] = layout.context(pid, table)
        while len(_layouts) > _LAYOUTS_KEPT:
            _layouts.popitem(last=False)
    else:
        _layouts.move_to_end(key)
    return lay
