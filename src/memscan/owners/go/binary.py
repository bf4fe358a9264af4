"""The runtime layout of a Go binary, as the heap and runtime readers get it:
parsed once per file identity and kept.

From the binary's DWARF and symbol table (:mod:`memscan.owners.go.layout`)
when it has DWARF for its Go code. Without (``-ldflags=-w`` or ``-s``,
``strip``) it is a :class:`NoRuntimeInfo` unless the shipped layout tables
are enabled (``tables=True``, or :data:`LAYOUT_TABLES`):
:mod:`memscan.owners.go.tables`, generated from the DWARF of real toolchains
by ``tools/gen_golayouts.py``, per GOARCH and Go minor version, for default
GOEXPERIMENTs only (another experiment set is refused). With the symbol
table (``-w``) the addresses come from it, and the sizes of a few runtime
variables (mheap_, m0, g0, emptymspan...) must match the table's. Without
symbols (``-s``) mheap_ and allp are found in the target by a symbol-less
scan of the module's data segments (:mod:`memscan.owners.go.search`).
"""

from __future__ import annotations

import os
import struct
from typing import Any, Collection, Optional, Tuple, Union

from elftools.common.exceptions import DWARFError, ELFError
from elftools.construct.core import ConstructError
from elftools.elf.elffile import ELFFile

from ..._cache import LRU
from ..._errors import Error, NoRuntimeInfo
from ...elf import ModuleInfo, module_info
from .dwarf import Dwarf, no_info
from .layout import Layout, dwarf_layout
from .tables import table_layout


def _no_dwarf(path: str) -> NoRuntimeInfo:
    return no_info(path, "it has no DWARF debug info for its Go code (built with -ldflags=-w or -s, or "
                         "stripped); the exact tier needs DWARF for this binary (or its shipped layout tables, "
                         "which are not enabled)")


# Parsed layouts (or the NoRuntimeInfo message) per file identity.
_LAYOUTS_KEPT = 16
_layouts: "LRU[Tuple[int, ...], Any]" = LRU(_LAYOUTS_KEPT)

_DWARF_ERRORS = (ELFError, DWARFError, ConstructError, KeyError, IndexError, ValueError, struct.error, EOFError)


#: Whether readers use the shipped layout tables (memscan.owners.go.tables) for a
#: Go binary without DWARF when not told otherwise (``tables=None``). The
#: tables come from the DWARF of the real toolchains (tools/gen_golayouts.py)
#: and a binary is refused when its experiments or symbol sizes differ.
LAYOUT_TABLES = True


def display_path(path: str) -> str:
    """The binary's path as /proc/PID/maps names it, for messages: a
    ``/proc/PID/map_files`` entry (how the readers open the very file the
    process maps) is a link to it."""
    if path.startswith("/proc/") and "/map_files/" in path:
        try:
            return os.readlink(path)
        except OSError:  # gone, or no right to follow it
            pass
    return path


#: What a reader is told about the shipped layout tables: use them or not
#: (None: LAYOUT_TABLES), or use only the tables of these Go minor versions
#: (e.g. ``("1.21", "1.26")``: as if memscan had no table for the others).
Tables = Union[None, bool, Collection[str]]


def layout_of(path: str, tables: Tables = None) -> Layout:
    """The layout of the Go binary at ``path``, parsed once per file identity.

    ``tables``: for a binary without DWARF, take the layout from the
    shipped tables (None: :data:`LAYOUT_TABLES`; a collection of Go minor
    versions: from those tables only); else such a binary is a
    NoRuntimeInfo that says it needs DWARF."""
    if tables is None:
        tables = LAYOUT_TABLES
    minors = None if isinstance(tables, bool) else tuple(sorted(tables))
    name = display_path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise Error(f"cannot open the Go binary {name}: {err.strerror}") from err
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, minors)

        def parse() -> Any:
            try:
                return _parse_file(fd, name, minors)
            except NoRuntimeInfo as err:
                return (str(err), err.no_dwarf)

        hit = _layouts.get_or_make(key, parse)
    finally:
        os.close(fd)
    if not isinstance(hit, Layout):  # (message, whether the binary lacks DWARF)
        if hit[1] and not tables:
            raise _no_dwarf(name)
        raise NoRuntimeInfo(hit[0])
    if hit.source != "dwarf" and not tables:
        raise _no_dwarf(name)
    return hit


def _parse_file(fd: int, path: str, minors: Optional[Collection[str]]) -> Layout:
    # module_info opens the very file we have open (by fd), not the path again.
    info = module_info(f"/proc/self/fd/{fd}")
    if info is None:
        raise no_info(path, "it is not an ELF file")
    if info.go is None:
        raise no_info(path, "it holds no Go runtime (no .go.buildinfo)")
    with os.fdopen(os.dup(fd), "rb") as f:
        try:
            return _parse_layout(ELFFile(f), path, info, minors)
        except _DWARF_ERRORS as err:
            raise no_info(path, f"its DWARF could not be parsed ({type(err).__name__}: {err})") from err


def _parse_layout(elf: ELFFile, path: str, info: ModuleInfo, minors: Optional[Collection[str]]) -> Layout:
    # Not elf.has_dwarf_info(): that is true for any .eh_frame (every
    # externally linked cgo binary, stripped or not). And a cgo binary
    # linked with -w may keep the DWARF of its C objects only.
    if not any(elf.get_section_by_name(name) is not None for name in (".debug_info", ".zdebug_info")):
        return table_layout(elf, path, info, minors)
    d = Dwarf(elf, path)
    if "runtime.mheap_" not in d.dies:
        return table_layout(elf, path, info, minors)
    return dwarf_layout(elf, path, info, d)
