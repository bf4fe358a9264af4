"""Real cgroup v1 memory cgroups for the tests: created as children of the
test process's own memory cgroup, removed afterwards (their processes moved
back to the parent first, since rmdir fails on a populated cgroup)."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from typing import Iterator, Optional

import pytest

from memscan.kernel import cgroup


class MemoryCgroup:
    """One child cgroup: ``directory`` on disk, ``path`` in the hierarchy."""

    def __init__(self, directory: str, path: str) -> None:
        self.directory = directory
        self.path = path

    def file(self, name: str) -> str:
        with open(os.path.join(self.directory, name)) as f:
            return f.read()

    def number(self, name: str) -> int:
        return int(self.file(name))

    def stat(self) -> dict:
        return cgroup.parse_flat(self.file("memory.stat"), "memory.stat")

    def add(self, pid: int) -> None:
        with open(os.path.join(self.directory, "cgroup.procs"), "w") as f:
            f.write(str(pid))


@contextlib.contextmanager
def memory_cgroup(limit: Optional[int] = None) -> Iterator[MemoryCgroup]:
    """A fresh v1 memory cgroup (skips the test where there is none to create)."""
    try:
        own = cgroup.of_pid(os.getpid())
    except Exception as err:  # noqa: BLE001 - any reason means: no cgroup to test with
        pytest.skip(f"no memory cgroup: {err}")
    if own.version != 1 or not os.access(own.directory, os.W_OK):
        pytest.skip("needs a writable cgroup v1 memory hierarchy")
    name = f"memscan-test-{uuid.uuid4().hex[:8]}"
    directory = os.path.join(own.directory, name)
    os.mkdir(directory)
    try:
        if limit is not None:
            with open(os.path.join(directory, "memory.limit_in_bytes"), "w") as f:
                f.write(str(limit))
        yield MemoryCgroup(directory, os.path.join(own.path, name))
    finally:
        _remove(directory, own.directory)


def _remove(directory: str, parent: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with open(os.path.join(directory, "cgroup.procs")) as f:
                pids = f.read().split()
            for pid in pids:
                with contextlib.suppress(OSError), open(os.path.join(parent, "cgroup.procs"), "w") as f:
                    f.write(pid)
            os.rmdir(directory)
            return
        except OSError:
            # A process may still be exiting (an OOM victim being reaped).
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
