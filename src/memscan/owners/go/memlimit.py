"""The Go runtime's memory limit, read from a live process.

However it was set (GOMEMLIMIT, debug.SetMemoryLimit, or not at all), the
runtime keeps it in ``runtime.gcController.memoryLimit``, an atomic.Int64,
since Go 1.19; math.MaxInt64 means no limit. Its place comes from the
binary's DWARF and symbol table, its value from /proc/PID/mem.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Optional

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from ..._errors import Error, NoRuntimeInfo
from ...elf import module_info
from ...engine import get_engine
from ...kernel import procfs
from ..memory import TargetMemory, read_maps
from .dwarf import Dwarf
from .layout import find_symbol

__all__ = ["memory_limit", "NO_LIMIT"]

VARIABLE = "runtime.gcController"
#: What memoryLimit holds when no limit is set (math.MaxInt64).
NO_LIMIT = (1 << 63) - 1


class _GcControllerDwarf(Dwarf):
    """The DWARF of runtime.gcController alone."""

    def _find(self, dwarf: Any) -> None:
        self._find_by_name(dwarf, {VARIABLE})
        if not self._complete():
            self._walk(dwarf, {VARIABLE})

    def _complete(self) -> bool:
        return VARIABLE in self.dies


def memory_limit(pid: int) -> Optional[int]:
    """The runtime's memory limit in bytes, None when it has none (MaxInt64).
    Raises NoRuntimeInfo when the executable lacks the DWARF or symbol to
    find it (Go before 1.19, a stripped binary), AccessDenied without
    ptrace-attach rights."""
    exe = procfs.path(pid, "exe")
    info = module_info(exe)
    if info is None or info.go is None:
        raise NoRuntimeInfo(f"pid {pid}'s executable holds no Go runtime")
    with open(exe, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        sym = find_symbol(symtab, VARIABLE) if isinstance(symtab, SymbolTableSection) else None
        if sym is None or elf.get_section_by_name(".debug_info") is None:
            raise NoRuntimeInfo(f"pid {pid}'s executable has no symbol and DWARF for {VARIABLE}")
        d = _GcControllerDwarf(elf, exe)
        field, die = d.member(d.var_type(VARIABLE), "memoryLimit")
        offset, size = d.value_in(field, die)
        order = "<" if elf.little_endian else ">"
    bias = 0
    if info.elf_type == "DYN":
        # A PIE: its lowest mapping is the one at file offset 0.
        path = os.readlink(exe)
        starts = [m.start for m in read_maps(pid, get_engine(None)) if m.name == path]
        if not starts:
            raise Error(f"pid {pid}'s executable {path} is not mapped")
        bias = min(starts) - info.min_vaddr
    mem = procfs.path(pid, "mem")
    with procfs.translated(pid, mem), TargetMemory(pid, 64, maps=True, subject=VARIABLE) as t:
        raw = t.read(bias + sym["st_value"] + offset, size, f"{VARIABLE}.memoryLimit")
    value = struct.unpack(order + {8: "q", 4: "i"}[size], raw)[0]
    return None if value == NO_LIMIT else value
