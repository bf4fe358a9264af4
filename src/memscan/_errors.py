"""memscan's exceptions: one tree, raised alike by both engines."""

from __future__ import annotations

from typing import Optional

__all__ = ["Error", "NoSuchProcess", "AccessDenied", "ParseError"]


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
