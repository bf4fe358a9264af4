"""Regenerate the capture corpus in this folder from real processes.

Run as ``python3 tests/data/make_corpus.py`` (Linux; root gives more
process kinds). Each capture is the raw bytes of a procfs file; the file
name says which (``<kind>.smaps``, ``.maps``, ``.smaps_rollup``, ``.status``).
Edge cases the running kernel cannot show (``[anon:...]`` names need
CONFIG_ANON_VMA_NAME; fields of older kernels) are derived from real
captures by ``derived()``, and say so in their names.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = ("smaps", "maps", "smaps_rollup", "status")


def capture(kind: str, pid: int) -> None:
    for f in FILES:
        with open(f"/proc/{pid}/{f}", "rb") as src:
            data = src.read()
        with open(os.path.join(HERE, f"{kind}.{f}"), "wb") as dst:
            dst.write(data)


def odd_mappings() -> None:
    """Map the awkward kinds into this process: a path with spaces, a
    deleted file, a file named like a deleted one, memfd, SysV shm, shared
    anonymous and /dev/zero, private /dev/zero."""
    keep = []
    tmp = tempfile.mkdtemp()
    for name in ("a file with spaces.bin", "gone.bin", "fake (deleted)"):
        p = os.path.join(tmp, name)
        with open(p, "wb") as f:
            f.write(b"x" * 8192)
        fd = os.open(p, os.O_RDONLY)
        keep.append(mmap.mmap(fd, 8192, prot=mmap.PROT_READ))
        os.close(fd)
    os.unlink(os.path.join(tmp, "gone.bin"))
    mfd = os.memfd_create("memscan corpus")
    os.ftruncate(mfd, 65536)
    m = mmap.mmap(mfd, 65536)
    m[:] = b"m" * 65536
    keep.append(m)
    shared = mmap.mmap(-1, 65536, flags=mmap.MAP_SHARED)
    shared[:4096] = b"s" * 4096
    keep.append(shared)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    shmid = libc.shmget(0, 65536, 0o600 | 0o1000)  # IPC_PRIVATE, IPC_CREAT
    if shmid >= 0:
        addr = libc.shmat(shmid, None, 0)
        ctypes.memset(addr, 1, 4096)
        libc.shmctl(shmid, 0, None)  # IPC_RMID once detached
    zfd = os.open("/dev/zero", os.O_RDWR)
    keep.append(mmap.mmap(zfd, 65536, flags=mmap.MAP_PRIVATE))
    keep.append(mmap.mmap(zfd, 65536, flags=mmap.MAP_SHARED))
    os.close(zfd)
    capture("python-odd-mappings", os.getpid())


def derived() -> None:
    """Cases from other kernels and configurations, edited from real captures."""
    with open(os.path.join(HERE, "python-odd-mappings.smaps"), "rb") as f:
        smaps = f.read()
    # A 5.x kernel: no Pss_Dirty (6.0), no KSM (6.7), THPeligible as "%d".
    old = re.sub(rb"(?m)^(Pss_Dirty|KSM):.*\n", b"", smaps)
    old = re.sub(rb"(?m)^THPeligible: +(\d+)$", rb"THPeligible:    \1", old)
    write("derived-kernel5.smaps", old)
    # Go 1.25+ and glibc 2.39+ names, as on a kernel with CONFIG_ANON_VMA_NAME.
    names = [b"[anon: Go: heap]", b"[anon: Go: page summary]", b"[anon: glibc: malloc arena]",
             b"[anon: glibc: pthread stack: 4242]", b"[anon:some name]", b"[anon_shmem:shm name]"]
    out, k = [], 0
    for line in smaps.split(b"\n"):
        if re.match(rb"^[0-9a-f]+-[0-9a-f]+ [-rwxsp]{4} 0+ 00:00 0 *$", line) and k < len(names):
            line = line.rstrip(b" ").ljust(73) + names[k]
            k += 1
        out.append(line)
    write("derived-anon-names.smaps", b"\n".join(out))
    # A read cut short by the target exiting: ends in the middle of a line.
    write("derived-truncated.smaps", smaps[: len(smaps) // 2 + 7])


def write(name: str, data: bytes) -> None:
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def main() -> None:
    capture("python", os.getpid())
    child = subprocess.Popen(["sleep", "60"])
    try:
        capture("sleep", child.pid)
    finally:
        child.kill()
        child.wait()
    odd_mappings()
    derived()
    if len(sys.argv) > 1:
        # Extra captures of running programs: make_corpus.py KIND=PID ...
        for arg in sys.argv[1:]:
            kind, pid = arg.split("=")
            capture(kind, int(pid))


if __name__ == "__main__":
    main()
