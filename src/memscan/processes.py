"""Finding the processes that run Go: in the executable or a loaded library."""

from __future__ import annotations

import os
from typing import List, NamedTuple

from . import elf
from ._errors import Error
from ._types import GoRuntime
from .engine import engine
from .kernel import procfs


class GoProcess(NamedTuple):
    pid: int
    name: str
    rss: int
    go: GoRuntime


def _go_module(pid: int) -> "GoRuntime | None":
    # The executable first: most Go programs are one static binary.
    exe = procfs.path(pid, "exe")
    info = elf.module_info(exe)
    if info is not None and info.go is not None:
        return GoRuntime(info.go.version, os.readlink(exe), info.go.cgo)
    # A Go c-shared library in a C or Python host: look at the loaded objects
    # (maps needs the same access as smaps, no more).
    table = engine.parse_smaps(procfs.read(pid, "maps", bytearray(), engine))
    for i in table.file_starts:
        name = table.names[i]
        if not elf.is_shared_object_name(name):
            continue
        for candidate in elf.mapped_path(pid, table.starts[i], table.ends[i], name):
            info = elf.module_info(candidate)
            if info is not None:
                if info.go is not None:
                    return GoRuntime(info.go.version, name, info.go.cgo)
                break
    return None


def go_processes() -> List[GoProcess]:
    """Every process this user may inspect that runs a Go runtime, by pid."""
    found = []
    for entry in os.listdir(procfs.PROCFS_PATH):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            go = _go_module(pid)
            if go is None:
                continue
            status = engine.parse_status(procfs.read(pid, "status", bytearray(), engine))
        except (Error, OSError):
            # Gone, a kernel thread, or not ours to read: not listed.
            continue
        found.append(GoProcess(pid, status.name, max(status.vm_rss, 0), go))
    return sorted(found)
