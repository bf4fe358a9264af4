"""Totals from psutil, for processes whose smaps memscan may not read.

/proc/PID/statm and status need no ptrace access, smaps does (another
user's process needs CAP_SYS_PTRACE). Only totals can be had then; counters
that need smaps are shown as n/a (0 in JSON) and named in a warning, never
guessed.
"""

from __future__ import annotations

import sys
import time
from typing import List

import psutil

from .._errors import AccessDenied, NoSuchProcess
from .._types import Counters
from .snapshot import Snapshot

UNKNOWN = ("pss", "uss", "shared", "lazyfree", "anon_huge")


def snapshot(pid: int, engine_name: str, why: str) -> Snapshot:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            raise NoSuchProcess(pid, "process is a zombie")
        mem = proc.memory_info()
        swap = anonymous = 0
        unknown: List[str] = list(UNKNOWN)
        if sys.platform.startswith("linux"):
            # status has RssAnon (4.5+) and VmSwap without a ptrace check.
            from ..engine import engine
            from ..kernel import procfs

            st = procfs.parsed(pid, "status", engine.parse_status, procfs.read(pid, "status", bytearray(), engine))
            anonymous, swap = max(st.rss_anon, 0), max(st.vm_swap, 0)
        else:
            unknown += ["anonymous", "swap"]
    except psutil.NoSuchProcess:
        raise NoSuchProcess(pid) from None
    except psutil.AccessDenied:
        raise AccessDenied(pid, "", "psutil may not read this process either") from None
    total = Counters(size=mem.vms, rss=mem.rss, anonymous=anonymous, swap=swap)
    warnings = [
        f"{why}; only totals are shown ({', '.join(unknown)} unknown: n/a in the table, 0 in JSON). "
        "Run memscan as the process's owner or with CAP_SYS_PTRACE for the categories."
    ]
    return Snapshot(pid, time.time(), "psutil", "psutil", engine_name, total, None, warnings=warnings)
