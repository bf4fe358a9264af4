"""What the layout classifier needs to know besides the mappings themselves.

The classification rules live in the engines (``classify``), which run them
over every mapping; this module gathers, once per scan, the few facts they
take: which file is the executable, where each ELF object's .bss lies, the
default pthread stack size, whether a Go runtime and which allocator is
loaded. ELF files are parsed with pyelftools through ``memscan.elf``, cached by
file identity.
"""

from __future__ import annotations

import errno
import os
from typing import List, NamedTuple, Optional, Tuple

from .. import elf
from .._errors import AccessDenied
from .._types import BINARY, SHARED_LIBS, GoRuntime, Interval, LayoutContext, SmapsTable
from ..kernel import procfs

PAGE = 4096
# glibc's ARCH_STACK_DEFAULT_SIZE on x86_64, used when RLIMIT_STACK is unlimited.
UNLIMITED_STACK_DEFAULT = 2 << 20


class GoModule(NamedTuple):
    """Where the ELF object holding a Go runtime can be read, and its load bias."""

    path: str  # a path that opens the file as mapped (map_files, or the name)
    bias: int


class Layout(NamedTuple):
    context: LayoutContext
    go: Optional[GoRuntime]
    go_module: Optional[GoModule]
    allocator: Optional[str]
    warnings: List[str]


def _exe_identity(pid: int, t: SmapsTable) -> Tuple[int, int]:
    """(dev as major << 32 | minor, inode) of the executable, as smaps shows them.

    /proc/PID/exe may be refused where smaps is not (root without
    CAP_SYS_PTRACE looking at a root process): the executable is then the
    lowest file mapped at offset 0 that is not a shared object.
    """
    p = procfs.path(pid, "exe")
    try:
        with procfs.translated(pid, p):
            st = os.stat(p)
        return (os.major(st.st_dev) << 32 | os.minor(st.st_dev), st.st_ino)
    except AccessDenied:
        for i in t.file_starts:
            if not elf.is_shared_object_name(t.names[i]):
                return (t.devs[i], t.inodes[i])
        return (-1, -1)


def _module(pid: int, t: SmapsTable, i: int,
            why: Optional[List[str]] = None) -> "Tuple[Optional[elf.ModuleInfo], str]":
    """The ELF facts of the file mapped at mapping ``i``, and the path that gave them;
    with a list ``why``, the reason each path tried failed is added to it
    (see :func:`unreadable`): asked only once every path failed.

    /proc/PID/map_files names the mapped file itself; the other candidates
    are paths, accepted only while they still name the mapped file (its
    device and inode): a binary replaced on disk is never misread.
    """
    failures: List[str] = [] if why is None else why
    for candidate in elf.mapped_path(pid, t.starts[i], t.ends[i], t.names[i]):
        if "/map_files/" not in candidate:
            try:
                st = os.stat(candidate)
            except OSError as err:
                failures.append(unreadable(candidate, err.errno, opening=False))
                continue
            if (st.st_ino, os.major(st.st_dev) << 32 | os.minor(st.st_dev)) != (t.inodes[i], t.devs[i]):
                failures.append(f"{candidate} is another file now (replaced)")
                continue
        info = elf.module_info(candidate)
        if info is not None:
            return info, candidate
        if why is not None:
            # module_info never raises: the file is opened again to learn why.
            try:
                os.close(os.open(candidate, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK))
                why.append(unreadable(candidate, None, opening=True))
            except OSError as err:
                why.append(unreadable(candidate, err.errno, opening=True))
    return None, ""


def unreadable(path: str, error: Optional[int], *, opening: bool) -> str:
    """Why ``path`` gave no ELF facts: ``error`` is the errno of ``stat``
    (``opening`` False) or ``open`` (True), None when it opened but is not
    an ELF file (or changed while read)."""
    if error is None:
        return f"{path}: not a readable ELF file"
    if "/map_files/" in path:
        if error == errno.EPERM:
            # proc_map_files_get_link() (fs/proc/base.c): following the link
            # needs CAP_SYS_ADMIN, or CAP_CHECKPOINT_RESTORE since Linux 5.9,
            # whoever owns the process.
            return f"{path}: following the link needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE"
        if error == errno.EACCES:
            # The directory is mode 0500, owned by the process's user (root's
            # when the process is not dumpable), and its lookup checks ptrace
            # read access (proc_map_files_lookup()): the link is not reached,
            # whatever capability the reader has beyond those.
            return f"{os.path.dirname(path)}: permission denied on the directory, which is the process owner's, mode 0500"
        if error == errno.ENOENT:
            return f"{path}: no such mapping now"
    elif error == errno.EACCES and not opening:
        # stat needs no permission on the file itself: a directory on the
        # way may not be searched (or, under /proc/PID/root, ptrace access
        # to the process is refused).
        return f"{path}: permission denied on a directory of its path"
    elif error == errno.ENOENT:
        return f"{path}: no such file"
    return f"{path}: {os.strerror(error)}"


def context(pid: int, t: SmapsTable) -> Layout:
    warnings: List[str] = []
    exe_dev, exe_inode = _exe_identity(pid, t)
    limit = procfs.stack_limit(pid)
    stack_size = UNLIMITED_STACK_DEFAULT if limit is None else (limit + PAGE - 1) // PAGE * PAGE

    intervals: List[Interval] = []
    go: Optional[GoRuntime] = None
    go_module: Optional[GoModule] = None
    go_exe = False
    libs: List[str] = []
    for i in t.file_starts:
        name = t.names[i]
        is_exe = t.inodes[i] == exe_inode and t.devs[i] == exe_dev
        shared = elf.is_shared_object_name(name)
        if shared:
            libs.append(os.path.basename(name))
        if not (is_exe or shared):
            continue
        info, opened = _module(pid, t, i)
        if info is None:
            if is_exe or name.endswith(" (deleted)"):
                failures: List[str] = []
                _module(pid, t, i, failures)
                # The path in the process's root failing as ours does is said once, as ours.
                root = f"/proc/{pid}/root/"
                causes = [f for f in failures if not (f.startswith(root) and "/" + f[len(root):] in failures)]
                warnings.append(f"{name} could not be read as mapped ({'; '.join(causes)}): its .bss and any Go "
                                "runtime in it are not recognised")
            continue
        bias = t.starts[i] - info.min_vaddr if info.elf_type == "DYN" else 0
        cat = BINARY if is_exe else SHARED_LIBS
        intervals.extend(Interval(bias + s, bias + e, cat) for s, e in info.bss)
        if info.go is not None:
            runtime = GoRuntime(info.go.version, name, info.go.cgo)
            if go is None or is_exe:
                if go is not None and go != runtime:
                    warnings.append(f"several Go runtimes are loaded; reporting {name}")
                go, go_exe = runtime, is_exe
                go_module = GoModule(opened, bias)
    intervals.sort()
    allocator = elf.allocator(libs)
    ctx = LayoutContext(
        exe_dev=exe_dev,
        exe_inode=exe_inode,
        stack_size=stack_size,
        go=go is not None,
        # A static Go program (no libc loaded): all anonymous memory outside
        # the arenas, stacks and .bss is the Go runtime's own.
        go_only=go_exe and allocator is None,
        jemalloc=allocator == "jemalloc",
        intervals=intervals,
    )
    return Layout(ctx, go, go_module, allocator, warnings)
