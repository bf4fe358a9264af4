"""The processes memscan can see: their commands, and those that run Go
(in the executable or a loaded library)."""

from __future__ import annotations

import os
import re
import shlex
from typing import Collection, List, NamedTuple, Optional, Pattern, Tuple, Union

from . import elf
from ._errors import Error
from ._types import GoRuntime
from .engine import engine
from .kernel import procfs


class Process(NamedTuple):
    pid: int
    name: str
    rss: int
    go: Optional[GoRuntime]  # None: no Go runtime in the executable or a loaded library
    path: Optional[str]  # the executable; None where the kernel does not say (another user's)
    command: str  # the command line, its arguments joined by spaces


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


def _pids() -> List[int]:
    return sorted(int(entry) for entry in os.listdir(procfs.PROCFS_PATH) if entry.isdigit())


def command_line(pid: int, quoted: bool = False) -> str:
    """The process's arguments joined by spaces (``quoted``: shell-quoted,
    to be read or pasted back); empty for a kernel thread or a zombie,
    which have no user memory (nor anything to scan)."""
    raw = bytes(procfs.read(pid, "cmdline", bytearray(), engine))
    args = [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]
    return shlex.join(args) if quoted else " ".join(args)


def executable(pid: int) -> Optional[str]:
    """The path of the process's executable; None where the kernel does not
    say (the process exited, or another user's without CAP_SYS_PTRACE)."""
    try:
        return os.readlink(procfs.path(pid, "exe"))
    except OSError:
        return None


def processes(go_only: bool = False) -> List[Process]:
    """Every process this user may inspect, by pid (kernel threads left
    out); ``go_only``: those that run a Go runtime."""
    found = []
    for pid in _pids():
        try:
            command = command_line(pid)
            if not command:
                continue
            # Another user's process (its exe and maps need ptrace rights): listed without them.
            path = executable(pid)
            try:
                go = _go_module(pid)
            except (Error, OSError):
                go = None
            if go is None and go_only:
                continue
            status = engine.parse_status(procfs.read(pid, "status", bytearray(), engine))
        except (Error, OSError):
            # Gone since it was listed: not listed.
            continue
        found.append(Process(pid, status.name, max(status.vm_rss, 0), go, path, command))
    return found


def matching(pattern: Union[str, Pattern[str]], exclude: Collection[int] = ()) -> List[Tuple[int, str]]:
    """The processes whose command line or command name (comm) ``pattern``
    (a regular expression) finds, as (pid, command line), by pid; memscan's
    own process, whose command line may hold the pattern itself, and the
    pids in ``exclude`` left out."""
    regex = re.compile(pattern)
    left_out = {os.getpid(), *exclude}
    found = []
    for pid in _pids():
        if pid in left_out:
            continue
        try:
            command = command_line(pid)
            if command and (regex.search(command) or regex.search(procfs.comm(pid))):
                found.append((pid, command))
        except (Error, OSError):
            continue  # gone since it was listed
    return found
