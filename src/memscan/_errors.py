"""memscan's exceptions: every class memscan raises on purpose, one tree,
all exported from ``memscan`` and picklable (they cross process boundaries
in multiprocessing pools and concurrent.futures)."""

from __future__ import annotations

from typing import Optional

__all__ = [
    "Error",
    "NoSuchProcess",
    "AccessDenied",
    "ParseError",
    "NoRuntimeInfo",
    "HeapChanged",
    "ReadLimitExceeded",
    "ToolchainMissing",
    "BuildError",
    "NoSuchCgroup",
]


class Error(Exception):
    """Base class of every exception memscan raises on purpose."""

    __module__ = "memscan"


class NoSuchProcess(Error):
    """The process does not exist, exited during the scan, or is a zombie.

    A zombie still has a /proc entry, but no memory: its smaps reads as
    empty, which must never be reported as a process using zero bytes.
    """

    __module__ = "memscan"

    def __init__(self, pid: int, msg: str = "") -> None:
        self.pid = pid
        self.msg = msg or "process no longer exists"
        super().__init__(pid, self.msg)

    def __str__(self) -> str:
        return f"{self.msg} (pid={self.pid})"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.pid, self.msg))


class AccessDenied(Error):
    """The kernel refused to let us read a file of the process (EACCES, EPERM)."""

    __module__ = "memscan"

    def __init__(self, pid: int, path: str = "", msg: str = "") -> None:
        self.pid = pid
        self.path = path
        self.msg = msg or "permission denied"
        super().__init__(pid, path, self.msg)

    def __str__(self) -> str:
        where = f", {self.path}" if self.path else ""
        return f"{self.msg} (pid={self.pid}{where})"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.pid, self.path, self.msg))


class ParseError(Error, ValueError):
    """procfs text that does not have the kernel's format.

    ``offset`` is the byte offset of the offending line in the file; the
    engines raise it without ``path``, the I/O layer adds the path it read.
    """

    __module__ = "memscan"

    def __init__(self, msg: str, offset: int, path: Optional[str] = None) -> None:
        self.msg = msg
        self.offset = offset
        self.path = path
        super().__init__(msg, offset, path)

    def __str__(self) -> str:
        where = self.path or "<buffer>"
        return f"{where}: {self.msg} at byte {self.offset}"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.msg, self.offset, self.path))


class NoRuntimeInfo(Error):
    """The binary lacks what the exact tier needs to read its Go heap (DWARF,
    the symbol table, or a type/constant the reader relies on; without
    DWARF: a layout table for its Go version and experiments, or, without
    symbols, a unique mheap_ found by the symbol-less scan).

    ``no_dwarf``: the binary has no DWARF for its Go code, so a reader that
    was not allowed the shipped layout tables says it needs DWARF.
    """

    __module__ = "memscan"

    def __init__(self, msg: str, no_dwarf: bool = False) -> None:
        self.no_dwarf = no_dwarf
        super().__init__(msg)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (*self.args, self.no_dwarf))


class HeapChanged(Error):
    """The runtime's structures changed while they were read (the target runs
    on): what was read is inconsistent. Reading again usually succeeds."""

    __module__ = "memscan"


class ReadLimitExceeded(Error):
    """Reading the heap's structures would exceed the read cap."""

    __module__ = "memscan"


class ToolchainMissing(Error):
    """No usable Go toolchain was found."""

    __module__ = "memscan"


class BuildError(Error):
    """``go build`` failed; ``output`` holds what the toolchain printed."""

    __module__ = "memscan"

    def __init__(self, msg: str, output: str = "", returncode: Optional[int] = None) -> None:
        self.msg = msg
        self.output = output
        self.returncode = returncode
        super().__init__(msg, output, returncode)

    def __str__(self) -> str:
        return f"{self.msg}\n{self.output}".rstrip()

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.msg, self.output, self.returncode))


class NoSuchCgroup(Error):
    """No memory cgroup to read: the path names no cgroup, the cgroup has no
    memory controller, or the process is in no memory cgroup (no memory
    hierarchy mounted, or its path lies outside this cgroup namespace)."""

    __module__ = "memscan"
