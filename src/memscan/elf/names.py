"""What the names of a process's file mappings say: which file to open for
a mapping, which C allocator the loaded shared objects suggest, and which
files are shared objects."""

from __future__ import annotations

import os
import re
from typing import Iterable, List, Optional

from ..layout.rules import is_shared_object

__all__ = ["mapped_path", "allocator", "is_shared_object_name", "strip_deleted"]

# What the kernel appends to the path of a mapped file since unlinked
# (d_path(), fs/d_path.c).
_DELETED = " (deleted)"


def strip_deleted(name: str) -> str:
    """``name`` without the " (deleted)" the kernel appends to an unlinked file's path."""
    return name[: -len(_DELETED)] if name.endswith(_DELETED) else name


def mapped_path(pid: int, start: int, end: int, name: str) -> List[str]:
    """Paths to open for the file mapping ``start-end`` named ``name``, best first.

    1. ``/proc/PID/map_files/START-END``: the mapped inode itself, right even
       when the file was deleted, replaced, or lives in another mount
       namespace; opening it needs CAP_SYS_ADMIN (root).
    2. ``/proc/PID/root`` + name: the path as seen from the process's root
       (containers); needs ptrace-read access to the process.
    3. ``name``: the path in our own mount namespace.

    A trailing " (deleted)" is stripped for 2 and 3; but then (and whenever
    the file was replaced) those paths name a *different* file, or none.
    Callers that can should check the opened file against the dev:inode
    column of maps. Names that are not absolute paths (``[heap]``,
    ``[anon:...]``, ``""``) only get candidate 1.
    """
    paths = [f"/proc/{pid}/map_files/{start:x}-{end:x}"]
    path = strip_deleted(name)
    if path.startswith("/"):
        paths.append(f"/proc/{pid}/root{path}")
        paths.append(path)
    return paths


_GLIBC_OLD = re.compile(r"^libc-\d+\.\d+(?:\.\d+)?\.so$")  # glibc < 2.34


# The classifier's rule, shared: a basename with ".so" at its end or before a ".".
is_shared_object_name = is_shared_object


def allocator(lib_names: Iterable[str]) -> Optional[str]:
    """The malloc implementation suggested by the shared objects loaded.

    ``lib_names`` are paths or basenames (e.g. from /proc/PID/maps).
    Preloaded allocators win because they replace malloc even though libc is
    loaded too: "jemalloc" (libjemalloc*), then "tcmalloc" (libtcmalloc*,
    gperftools' _minimal included), then "mimalloc" (libmimalloc*). Then
    "musl" (ld-musl*, libc.musl*; checked before glibc since gcompat makes a
    musl system load a libc.so.6 shim), then "glibc" (libc.so.6, or
    libc-2.NN.so for glibc < 2.34 which maps the real file name). None when
    none is loaded (static Go binary, or an allocator linked statically into
    the executable, which this cannot see). This is a hint: memscan.owners.c confirms
    that a preloaded allocator really owns malloc (glibc's main arena unused).
    """
    bases = {os.path.basename(strip_deleted(n)) for n in lib_names}
    for prefix, result in (
        ("libjemalloc", "jemalloc"),
        ("libtcmalloc", "tcmalloc"),
        ("libmimalloc", "mimalloc"),
    ):
        if any(b.startswith(prefix) for b in bases):
            return result
    if any(b.startswith("ld-musl") or b.startswith("libc.musl") for b in bases):
        return "musl"
    if any(b == "libc.so.6" or _GLIBC_OLD.match(b) for b in bases):
        return "glibc"
    return None
