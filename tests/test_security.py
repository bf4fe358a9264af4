"""What memscan does to the processes it reads: it only reads, opens
nothing for writing, and reads only the runtime's and the allocator's
structures, a bounded amount, never the program's data."""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

import pytest

import memscan
from memscan.owners import c as cmalloc
from memscan.owners.go import heap as goheap
from memscan.owners.go import runtime as goruntime

from helpers.goheap import exe_module, read

MiB = 1 << 20
KiB = 1 << 10


class Recorder:
    """Every open, read and write of a /proc/PID file of the target, by path."""

    def __init__(self, pid: int) -> None:
        self.prefix = f"/proc/{pid}/"
        self.opens: List[Tuple[str, int]] = []
        self.mem_fds: set = set()
        self.proc_fds: Dict[int, str] = {}
        self.mem_reads: List[Tuple[int, int]] = []  # (address, bytes returned)
        self.writes: List[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch, dir_fds: Dict[int, str]) -> None:
        real_open, real_pread, real_write, real_pwrite = os.open, os.pread, os.write, os.pwrite

        def opened(path, flags, mode=0o777, *, dir_fd=None):  # type: ignore[no-untyped-def]
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            full = os.fsdecode(path)
            if dir_fd is not None and not full.startswith("/"):
                full = os.readlink(f"/proc/self/fd/{dir_fd}") + "/" + full
            if full.startswith(self.prefix):
                self.opens.append((full, flags))
                self.proc_fds[fd] = full
                if full.endswith("/mem"):
                    self.mem_fds.add(fd)
            return fd

        def pread(fd, n, offset):  # type: ignore[no-untyped-def]
            data = real_pread(fd, n, offset)
            if fd in self.mem_fds:
                self.mem_reads.append((offset, len(data)))
            return data

        def write(fd, data):  # type: ignore[no-untyped-def]
            if fd in self.proc_fds:
                self.writes.append(self.proc_fds[fd])
            return real_write(fd, data)

        def pwrite(fd, data, offset):  # type: ignore[no-untyped-def]
            if fd in self.proc_fds:
                self.writes.append(self.proc_fds[fd])
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(os, "open", opened)
        monkeypatch.setattr(os, "pread", pread)
        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "pwrite", pwrite)

    def bytes_in(self, ranges: List[Tuple[int, int]]) -> int:
        return sum(max(0, min(a + n, hi) - max(a, lo)) for a, n in self.mem_reads for lo, hi in ranges)


@pytest.mark.slow
def test_exact_scan_only_reads_structures(go_program, monkeypatch) -> None:
    prog = go_program(cgo=True, args=("-heap", "96", "-cmalloc", "16", "-csmall", "300", "-cthreads", "2"))
    memscan.scan(prog.pid, tier="exact")  # layouts parsed and cached: what is left are the target's reads
    rec = Recorder(prog.pid)
    rec.install(monkeypatch, {})
    snap = memscan.scan(prog.pid, tier="exact")
    monkeypatch.undo()
    assert snap.tier == "exact", snap.warnings

    # Read-only: every /proc file of the target opened O_RDONLY, nothing written.
    assert rec.opens and rec.mem_fds
    for path, flags in rec.opens:
        assert flags & os.O_ACCMODE == os.O_RDONLY, (path, oct(flags))
    assert rec.writes == []

    # Bounded: far below the caps, and a small fraction of what the program holds.
    total = sum(n for _, n in rec.mem_reads)
    assert total <= goheap.MAX_READ_BYTES + goruntime.MAX_READ_BYTES + cmalloc.MAX_READ_BYTES
    rss = snap.total.rss
    print(f"\nread {total / KiB:.0f} KiB of target memory in {len(rec.mem_reads)} reads; rss {rss / MiB:.0f} MiB")
    assert total < rss / 50

    # Not the program's data: of the Go heap's pages, only the few objects
    # the runtime's own structures are (allp and the Ps); of the 16 MiB C
    # buffer (an mmapped chunk), only its header page.
    heap = read(prog.pid, *exe_module(prog.pid))
    objects = [(s, e) for s, e, st in heap.intervals if st == goheap.OBJECTS]
    in_objects = rec.bytes_in(objects)
    print(f"{in_objects} bytes of it inside Go heap objects")
    assert in_objects <= 4 * KiB, f"{in_objects} bytes read inside Go heap objects"
    big = [(s, e) for s, e in _chunks_at_least(prog.pid, 16 * MiB)]
    assert big, "the 16 MiB mmapped chunk is not among the C regions"
    assert all(rec.bytes_in([(s + 4 * KiB, e)]) == 0 for s, e in big), "read past a chunk's header page"


def _chunks_at_least(pid: int, size: int) -> List[Tuple[int, int]]:
    from memscan.engine import get_engine
    from memscan.kernel import procfs

    eng = get_engine(None)
    table = eng.parse_smaps(procfs.read(pid, "smaps", bytearray(), eng).tobytes())
    regions = cmalloc.c_regions(pid, table)
    return [(s, e) for s, e, kind in regions.intervals if kind == "mmapped chunk" and e - s >= size]
