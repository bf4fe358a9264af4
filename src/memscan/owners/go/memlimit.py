"""The Go runtime's memory limit, read from a live process.

However it was set (GOMEMLIMIT, debug.SetMemoryLimit, or not at all), the
runtime keeps it in ``runtime.gcController.memoryLimit``, an atomic.Int64,
since Go 1.19; math.MaxInt64 means no limit. Its offset comes from the
binary's layout (its DWARF, or without DWARF the shipped table of its Go
version: :func:`memscan.owners.go.binary.layout_of`), the variable's address
from the symbol table, the value from /proc/PID/mem.

A binary without a symbol table (``-ldflags=-s``, ``strip``) does not say
where gcController is, and nothing the symbol-less heap search finds points
to it. There the limit is the one the runtime started with: GOMEMLIMIT in
/proc/PID/environ, parsed as the runtime parses it (readGOMEMLIMIT,
runtime/mgcpacer.go), which debug.SetMemoryLimit may since have changed.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple, Optional

from ..._errors import Error, NoRuntimeInfo
from ...elf import module_info
from ...kernel import procfs
from ..memory import TargetMemory
from .binary import layout_of
from .layout import Layout
from .tables import go_minor

__all__ = ["memory_limit", "MemoryLimit", "NO_LIMIT", "RUNTIME", "ENVIRONMENT", "parse_byte_count"]

VARIABLE = "runtime.gcController"
#: What memoryLimit holds when no limit is set (math.MaxInt64).
NO_LIMIT = (1 << 63) - 1
#: MemoryLimit.source: read from runtime.gcController.memoryLimit.
RUNTIME = "runtime"
#: MemoryLimit.source: GOMEMLIMIT of the process's environment at exec.
ENVIRONMENT = "environment"


class MemoryLimit(NamedTuple):
    #: The limit in bytes; None: no limit.
    value: Optional[int]
    #: RUNTIME (the runtime's own value now) or ENVIRONMENT (the GOMEMLIMIT
    #: the process started with, which debug.SetMemoryLimit may have changed).
    source: str


def memory_limit(pid: int) -> MemoryLimit:
    """The memory limit of Go process ``pid``: the runtime's own value when
    its binary says where it is (DWARF, or a symbol table and the layout
    table of its Go version), else the GOMEMLIMIT of its environment.
    Raises NoRuntimeInfo for a binary without a Go 1.19+ runtime,
    AccessDenied without ptrace-attach rights (both files need them)."""
    exe = procfs.path(pid, "exe")
    info = module_info(exe)
    if info is None or info.go is None:
        raise NoRuntimeInfo(f"pid {pid}'s executable holds no Go runtime")
    minor = go_minor(info.go.version)
    if minor and tuple(int(n) for n in minor.split(".")) < (1, 19):
        raise NoRuntimeInfo(f"pid {pid} runs {info.go.version}: the runtime has a memory limit since Go 1.19")
    try:
        lay: Optional[Layout] = layout_of(exe)
    except NoRuntimeInfo:
        lay = None  # no DWARF and no table for this build: its environment still tells
    addr = lay.global_addr(VARIABLE) if lay is not None else 0
    # A table of another Go version (lay.table) is a guess the heap reader
    # checks by what it reads; a memory limit cannot be checked so.
    if lay is None or not addr or lay.memory_limit < 0 or lay.table:
        return MemoryLimit(_environment_limit(pid), ENVIRONMENT)
    path = os.readlink(exe) if info.elf_type == "DYN" else ""
    mem = procfs.path(pid, "mem")
    with procfs.translated(pid, mem), TargetMemory(pid, 64, maps=True, subject=VARIABLE) as t:
        bias = 0
        if path:
            # A PIE: its lowest mapping is the one at file offset 0.
            starts = [m.start for m in t.maps if m.name == path]
            if not starts:
                raise Error(f"pid {pid}'s executable {path} is not mapped")
            bias = min(starts) - info.min_vaddr
        raw = t.read(bias + addr + lay.memory_limit, lay.memory_limit_size, f"{VARIABLE}.memoryLimit")
    value = struct.unpack(lay.word[0] + {8: "q", 4: "i"}[lay.memory_limit_size], raw)[0]
    return MemoryLimit(None if value == NO_LIMIT else value, RUNTIME)


def _environment_limit(pid: int) -> Optional[int]:
    """GOMEMLIMIT of ``pid``'s environment as the runtime read it at start
    (runtime.readGOMEMLIMIT: the first GOMEMLIMIT= entry, gogetenv; unset,
    empty or "off" is no limit)."""
    p = procfs.path(pid, "environ")
    with procfs.translated(pid, p), open(p, "rb") as f:
        env = f.read()
    for entry in env.split(b"\0"):
        if entry.startswith(b"GOMEMLIMIT="):
            text = entry[len(b"GOMEMLIMIT="):].decode("latin-1")
            if text in ("", "off"):
                return None
            n = parse_byte_count(text)
            if n is None:  # the runtime throws at start on such a value: not a running Go 1.19+
                raise NoRuntimeInfo(f"pid {pid}'s GOMEMLIMIT={text!r} is not one the Go runtime accepts")
            return None if n == NO_LIMIT else n
    return None


_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_byte_count(s: str) -> Optional[int]:
    """runtime.parseByteCount (runtime/string.go, Go 1.19-1.27): plain
    bytes, or a B, KiB, MiB, GiB or TiB suffix; None where it returns
    false (a negative number, another suffix, an overflow of int64)."""
    unit = 1
    if s.endswith("iB") and len(s) >= 4 and s[-3] in _UNITS:
        unit, digits = _UNITS[s[-3]], s[:-3]
    elif s.endswith("B") and len(s) >= 2 and s[-2].isascii() and s[-2].isdigit():
        digits = s[:-1]
    elif s and s[-1].isascii() and s[-1].isdigit():
        digits = s
    else:
        return None
    n = _parse_int64(digits)
    if n is None or n < 0 or n * unit > NO_LIMIT:
        return None
    return n * unit


def _parse_int64(s: str) -> Optional[int]:
    """strconv.ParseInt(s, 10, 64) (Go 1.20+; Go 1.19's atoi64 takes no
    "+", but then its runtime never started with one)."""
    digits = s[1:] if s[:1] in ("+", "-") else s
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    n = -int(digits) if s[0] == "-" else int(digits)
    return n if -(1 << 63) <= n <= NO_LIMIT else None
