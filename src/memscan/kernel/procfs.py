"""Reading /proc: paths, the read loop, liveness, and OSError translation.

Everything that touches a pid's files goes through here, so that errors are
translated in one place: ENOENT and ESRCH mean the process is gone (ESRCH: it
exited while a file was open), EACCES and EPERM mean access was refused
(ptrace access mode checks in ``mm_access()``, fs/proc/base.c).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from typing import Iterator, List, NamedTuple, Optional, Tuple

from .._errors import AccessDenied, Error, NoSuchProcess, ParseError

PROCFS_PATH = "/proc"

# Flags of /proc/PID/stat (include/linux/sched.h).
_PF_EXITING = 0x00000004
_PF_KTHREAD = 0x00200000


def path(pid: int, name: str) -> str:
    return f"{PROCFS_PATH}/{pid}/{name}"


@contextlib.contextmanager
def translated(pid: int, file: str, pinned: bool = False) -> Iterator[None]:
    """Turn the OSErrors of reading ``file`` of ``pid`` into memscan errors.

    ``pinned``: the file was opened through a directory fd of the process
    (``open_dir``), so ENOENT means this very process is gone, whatever now
    has its pid.
    """
    try:
        yield
    except (FileNotFoundError, ProcessLookupError) as err:
        # A zombie keeps its /proc directory but loses exe, map_files and the
        # like: ENOENT then means "gone" too, unless the process still runs.
        if err.errno == errno.ENOENT and not pinned and _running(pid):
            raise Error(f"{file} is not available on this system") from err
        raise NoSuchProcess(pid) from err
    except PermissionError as err:
        raise AccessDenied(pid, file) from err
    except OSError as err:
        if err.errno == errno.ESRCH:
            raise NoSuchProcess(pid) from err
        raise


def _running(pid: int) -> bool:
    """True unless ``pid`` is gone, a zombie or exiting (its mm already released)."""
    try:
        with open(path(pid, "stat"), "rb") as f:
            st = _parse_stat(f.read())
    except (OSError, ValueError, IndexError):
        return False
    return not (st.gone or st.exiting)


def open_dir(pid: int) -> int:
    """A directory fd of /proc/PID: files opened through it belong to this
    process even if it exits and its pid is reused meanwhile."""
    p = path(pid, "")
    with translated(pid, p):
        return os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def read(pid: int, name: str, buf: bytearray, engine) -> memoryview:  # type: ignore[no-untyped-def]
    """Read /proc/PID/NAME whole into ``buf``; return a view of the bytes read."""
    p = path(pid, name)
    with translated(pid, p):
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        try:
            n = engine.read_all(fd, buf)
        finally:
            os.close(fd)
    return memoryview(buf)[:n]


def read_all(fd: int, buf: bytearray, pause: float = 0.0) -> int:
    """Read ``fd`` from offset 0 to EOF into ``buf`` (grown as needed); return the length.

    seq_file files (smaps, maps) hand out about 4 KiB per read() whatever the
    buffer size, so this loops until read() returns 0. Seeking back to 0
    regenerates the file, so one fd serves every sample.

    ``pause``: seconds to sleep after each read() (the Cython engine's read
    loop takes none: the sleeps, not the loop, then set the pace). Each
    read() of smaps takes the target's mmap_lock for one ~4 KiB chunk; back
    to back, the reader takes it again before a waiting mmap/munmap runs
    (rwsem reader lock stealing, up to the ~4 ms handoff). A pause of ~50 us
    between chunks gave most of a mmap-heavy target's throughput back
    (bench/test_bench_sampler.py measures it with bench/churn.c).
    """
    if len(buf) < 65536:
        buf.extend(bytes(65536 - len(buf)))
    os.lseek(fd, 0, os.SEEK_SET)
    n = 0
    while True:
        if n == len(buf):
            buf.extend(bytes(len(buf)))
        with memoryview(buf) as view:
            got = os.readv(fd, [view[n:]])
        if not got:
            return n
        n += got
        if pause:
            time.sleep(pause)


def parsed(pid: int, name: str, parse, data):  # type: ignore[no-untyped-def]
    """Run an engine parser; a ParseError learns which file it was."""
    try:
        return parse(data)
    except ParseError as err:
        raise ParseError(err.msg, err.offset, path(pid, name)) from None


def parsed_statm(pid: int, data: bytes) -> Tuple[int, ...]:
    """The seven page counts of /proc/PID/statm: size, resident, shared,
    text, lib (0 since Linux 2.6), data, dt (0)."""
    fields = data.split()
    if len(fields) != 7 or not all(f.isdigit() for f in fields):
        raise ParseError(f"statm is not seven numbers: {data[:80]!r}", 0, path(pid, "statm"))
    return tuple(map(int, fields))


# Text read while the process maps and unmaps may list a mapping twice
# (the engines' first_overlap): it is read again, this many times in all.
READ_TRIES = 5


def without_overlap(pid: int, name: str, read, first_overlap):  # type: ignore[no-untyped-def]
    """``read()``, which returns a parsed table first (and what else its
    caller needs), again until the table lists no mapping twice."""
    for _ in range(READ_TRIES):
        got = read()
        if first_overlap(got[0]) < 0:
            return got
    raise Error(f"pid {pid} kept changing its mappings while its {name} was read: "
                f"{READ_TRIES} reads each listed a mapping twice")


# The Cython engine parses smaps on a helper thread while the kernel is
# still producing it, handed over in pieces of this many bytes (about 30 of
# the kernel's ~4 KiB reads): few wake-ups, and a short last piece, which
# the reader parses itself.
SMAPS_PIECE = 128 * 1024


def read_smaps(pid: int, buf: bytearray, engine, dir_fd: int, pause: float = 0.0):  # type: ignore[no-untyped-def]
    """/proc/PID/smaps read whole into ``buf`` through ``dir_fd`` and parsed:
    (length, SmapsTable or the ParseError, naming the file), as
    the engines' ``read_parse_smaps``. With ``pause`` (seconds between read()
    calls, see read_all) the text is read, then parsed; with one CPU
    to run on, there is no second one to parse on meanwhile."""
    with translated(pid, path(pid, "smaps"), True):
        fd = os.open("smaps", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if pause > 0:
                n = read_all(fd, buf, pause)
                with memoryview(buf) as whole, whole[:n] as data:
                    try:
                        result = engine.parse_smaps(data)
                    except ParseError as err:
                        result = err
            else:
                piece = SMAPS_PIECE if len(os.sched_getaffinity(0)) > 1 else 0
                n, result = engine.read_parse_smaps(fd, buf, piece)
        finally:
            os.close(fd)
    if isinstance(result, ParseError):
        result = ParseError(result.msg, result.offset, path(pid, "smaps"))
    return n, result


class Stat(NamedTuple):
    """The fields of /proc/PID/stat memscan needs."""

    state: str  # R S D Z X ...
    flags: int
    starttime: int  # clock ticks after boot: tells a reused pid apart

    @property
    def gone(self) -> bool:
        return self.state in "ZXx"

    @property
    def exiting(self) -> bool:
        return bool(self.flags & _PF_EXITING)

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & _PF_KTHREAD)


def stat(pid: int, dir_fd: Optional[int] = None) -> Stat:
    """Read /proc/PID/stat (no ptrace check: readable for any process)."""
    p = path(pid, "stat")
    with translated(pid, p, dir_fd is not None):
        fd = os.open("stat" if dir_fd is not None else p, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            data = os.read(fd, 4096)  # one record, well under a page
        finally:
            os.close(fd)
    try:
        return _parse_stat(data)
    except (ValueError, IndexError):
        raise ParseError("unrecognised stat line", 0, p) from None


def _stat_fields(data: bytes) -> List[bytes]:
    """The fields of a stat line after comm, from the state (field 3) on."""
    # comm may hold spaces and parentheses: the state follows the last ')'.
    return data[data.rindex(b")") + 2 :].split()


def _parse_stat(data: bytes) -> Stat:
    rest = _stat_fields(data)
    return Stat(rest[0].decode(), int(rest[6]), int(rest[19]))


def stat_after_read(pid: int, dir_fd: int, empty: bool) -> Stat:
    """The process's stat once its smaps was read through ``dir_fd``; raises
    if what was read cannot be trusted.

    A target that turns zombie while smaps is read makes read() return 0:
    a silent EOF with truncated text (m_start() in fs/proc/task_mmu.c finds
    no mm and ends the file). Only this
    check tells a complete read from a truncated one. An empty smaps is a
    zombie, an exiting process or a kernel thread: never zero memory.
    """
    st = stat(pid, dir_fd)
    check_user_process(pid, st)
    if st.state == "Z":
        raise NoSuchProcess(pid, "process is a zombie" if empty else "process exited during the scan")
    if st.gone or st.exiting:
        raise NoSuchProcess(pid, "" if empty else "process exited during the scan")
    if empty:
        raise Error(f"pid {pid}: smaps is empty although the process is alive")
    return st


def check_user_process(pid: int, st: Stat) -> None:
    """A kernel thread has no user memory: an error, never a process of 0 bytes."""
    if st.kernel_thread:
        raise Error(f"pid {pid} is a kernel thread: it has no user memory")


def live_thread(pid: int) -> Optional[int]:
    """Another thread of ``pid`` that still runs, or None.

    When the main thread exits alone (pthread_exit() in main), the thread
    group leader is a zombie: /proc/PID/smaps, mem and pagemap have no
    memory any more, but the process lives on in its other threads, whose
    /proc/TID files show its memory (one mm for the whole group).

    A process being killed looks the same for a moment: the leader is
    reaped into a zombie before its other threads have run their exit. But
    then the kernel has queued SIGKILL on every thread (zap_other_threads):
    a thread with SIGKILL pending is not a live one.
    """
    try:
        tids = os.listdir(path(pid, "task"))
    except OSError:
        return None
    for name in tids:
        tid = int(name)
        if tid == pid:
            continue
        try:
            st = stat(tid)
        except Error:
            continue
        if not (st.gone or st.exiting or _sigkill_pending(pid, tid)):
            return tid
    return None


_SIGKILL_BIT = 1 << (9 - 1)  # SigPnd/ShdPnd are masks with bit (signo - 1) set


def _sigkill_pending(pid: int, tid: int) -> bool:
    """SIGKILL queued for thread ``tid`` (its SigPnd) or its thread group (ShdPnd);
    True too when the thread is gone already."""
    try:
        with open(path(pid, f"task/{tid}/status"), "rb") as f:
            text = f.read()
    except OSError:
        return True
    for line in text.splitlines():
        if line.startswith((b"SigPnd:", b"ShdPnd:")) and int(line.split()[1], 16) & _SIGKILL_BIT:
            return True
    return False


def stack_limit(pid: int) -> Optional[int]:
    """The soft RLIMIT_STACK of ``pid`` in bytes, None if unlimited."""
    p = path(pid, "limits")
    with translated(pid, p):
        with open(p, "rb") as f:
            for line in f:
                if line.startswith(b"Max stack size"):
                    soft = line[26:].split()[0]
                    return None if soft == b"unlimited" else int(soft)
    raise ParseError("no 'Max stack size' line", 0, p)


def exit_code(pid: int, starttime: int) -> Optional[int]:
    """The wait status of ``pid`` as it exits or lies a zombie (field 52 of
    /proc/PID/stat, Linux 3.5+: the task's exit_code, set in do_exit); None
    once it was reaped, or if the pid now names another process."""
    try:
        with open(path(pid, "stat"), "rb") as f:
            data = f.read()
        rest = _stat_fields(data)
        if int(rest[19]) != starttime or len(rest) < 50:
            return None
        return int(rest[49])
    except (OSError, ValueError, IndexError):
        return None


def comm(pid: int) -> str:
    """The process's command name (/proc/PID/comm, 15 bytes at most)."""
    with translated(pid, path(pid, "comm")):
        with open(path(pid, "comm"), "rb") as f:
            return f.read().decode(errors="replace").rstrip("\n")
