"""The pure-Python engine: bytes in, memscan records out.

``memscan/_fast.pyx`` implements the same functions with the same results and the
same ParseError messages; tests run both over the same inputs. Nothing here
opens files by name, knows pids or translates OSError: that is ``memscan.kernel.procfs``.

Formats follow the kernel's ``fs/proc/task_mmu.c`` (Documentation/filesystems/
proc.rst): a header line per mapping, ``Key:   <n> kB`` lines, and a final
``VmFlags:`` line. Every field is optional: fields appear with kernel versions
(see ``_types.SMAPS_KEYS``), so the parser dispatches by key, never position.
"""

from __future__ import annotations

import os
from array import array
from typing import List, Optional, Tuple, Union

from ..._cache import once
from ..._errors import ParseError
from ..._types import (
    ANON_OTHER,
    C_MALLOC,
    CATEGORIES,
    F,
    GO_HEAP,
    GO_RUNTIME,
    MAPPED_FILES,
    NFIELDS,
    PERM_R,
    PERM_S,
    PERM_W,
    PERM_X,
    SHMEM,
    SMAPS_KEYS,
    THREAD_STACKS,
    UNITLESS_KEYS,
    VM_NH,
    VM_NR,
    VMFLAG_BIT,
    VMFLAG_UNKNOWN,
    LayoutContext,
    MemFields,
    SmapsTable,
    Status,
)
from ...kernel.procfs import read_all
from ...layout.rules import ARENA, GO_HEAP_LIMIT, GUARD_MAX, by_name

__all__ = [
    "read_all",
    "read_parse_smaps",
    "parse_smaps",
    "first_overlap",
    "parse_rollup",
    "parse_status",
    "classify",
    "accumulate",
]

_KEY_INDEX = {k.encode(): i for i, k in enumerate(SMAPS_KEYS)}
_UNITLESS = frozenset(k.encode() for k in UNITLESS_KEYS)
_VMFLAG = {k.encode(): v for k, v in VMFLAG_BIT.items()}
_HEX = frozenset(b"0123456789abcdef")
_DEC = frozenset(b"0123456789")
_KEYCHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# kB values are stored in bytes in a signed 64-bit slot.
_MAX_I64 = 2**63 - 1
_MAX_KB = _MAX_I64 // 1024
_MAX_U64 = 2**64 - 1

def _hex(line: bytes, pos: int, stop: bytes, what: str, base: int) -> Tuple[int, int]:
    """Parse lowercase hex from ``pos`` up to the byte ``stop``; return (value, next)."""
    end = line.find(stop, pos)
    if end <= pos or not all(c in _HEX for c in line[pos:end]) or end - pos > 16:
        raise ParseError(f"bad {what} in mapping header", base)
    return int(line[pos:end], 16), end + 1


def _header(line: bytes, base: int) -> Tuple[int, int, int, int, int, int, bytes]:
    start, p = _hex(line, 0, b"-", "start address", base)
    end, p = _hex(line, p, b" ", "end address", base)
    if end < start:
        raise ParseError("end address below start address", base)
    if end - start > _MAX_I64:
        # Sizes are kept in signed 64-bit slots; no real mapping comes close.
        raise ParseError("mapping size out of range", base)
    pr = line[p : p + 4]
    if (
        len(pr) != 4
        or pr[0] not in b"r-"
        or pr[1] not in b"w-"
        or pr[2] not in b"x-"
        or pr[3] not in b"sp"
        or line[p + 4 : p + 5] != b" "
    ):
        raise ParseError("bad permissions in mapping header", base)
    perms = (
        (PERM_R if pr[0] == 114 else 0)
        | (PERM_W if pr[1] == 119 else 0)
        | (PERM_X if pr[2] == 120 else 0)
        | (PERM_S if pr[3] == 115 else 0)
    )
    offset, p = _hex(line, p + 5, b" ", "offset", base)
    major, p = _hex(line, p, b":", "device", base)
    minor, p = _hex(line, p, b" ", "device", base)
    if major > 0xFFFFFFFF or minor > 0xFFFFFFFF:
        raise ParseError("bad device in mapping header", base)
    q = p
    while q < len(line) and line[q] in _DEC:
        q += 1
    if q == p or q - p > 20 or (q < len(line) and line[q] != 32):
        raise ParseError("bad inode in mapping header", base)
    inode = int(line[p:q])
    if inode > _MAX_U64:
        raise ParseError("bad inode in mapping header", base)
    # The kernel pads to column 73 before the name; unnamed mappings end
    # with a single space.
    while q < len(line) and line[q] == 32:
        q += 1
    return start, end, perms, offset, major << 32 | minor, inode, line[q:]


def _value(line: bytes, p: int, unit: bool, base: int) -> int:
    """Parse ``<spaces><digits>[ kB]`` from ``p`` to the end of ``line``."""
    q = p
    while q < len(line) and line[q] == 32:
        q += 1
    r = q
    while r < len(line) and line[r] in _DEC:
        r += 1
    if r == q or q == p:
        raise ParseError("bad value", base)
    if r - q > 20:
        raise ParseError("value out of range", base)
    rest = line[r:]
    if unit:
        if rest != b" kB":
            raise ParseError("bad value", base)
        value = int(line[q:r])
        if value > _MAX_KB:
            raise ParseError("value out of range", base)
        return value * 1024
    if rest:
        raise ParseError("bad value", base)
    return 0


def _vmflags(line: bytes, base: int) -> int:
    bits = 0
    for tok in line[8:].split(b" "):
        if not tok:
            continue
        if len(tok) != 2:
            raise ParseError("bad VmFlags", base)
        bits |= _VMFLAG.get(tok, VMFLAG_UNKNOWN)
    return bits


def parse_smaps(buf: bytes) -> SmapsTable:
    """Parse /proc/PID/smaps, smaps_rollup or maps text into a SmapsTable.

    A mapping without a ``Size:`` line (maps, or an unusual kernel) gets its
    size from its addresses.
    """
    data = bytes(buf)
    t = SmapsTable()
    if not data:
        return t
    if data[-1] != 10:
        raise ParseError("truncated line", data.rfind(b"\n") + 1)
    names: dict = {}
    fields = t.fields
    row = -1  # index of the current mapping's first field in ``fields``
    size_seen = False
    pos = 0
    for line in data[:-1].split(b"\n"):
        base = pos
        pos += len(line) + 1
        # Field keys start with an upper-case letter, headers with an address.
        if line and line[0] in _HEX:
            if row >= 0 and not size_seen:
                fields[row] = (t.ends[-1] - t.starts[-1])
            start, end, perms, offset, dev, inode, raw = _header(line, base)
            name = names.get(raw)
            if name is None:
                name = names[raw] = raw.decode("utf-8", "surrogateescape")
            t.starts.append(start)
            t.ends.append(end)
            t.perms.append(perms)
            t.offsets.append(offset)
            t.devs.append(dev)
            t.inodes.append(inode)
            t.names.append(name)
            t.vmflags.append(0)
            if offset == 0 and inode != 0:
                t.file_starts.append(len(t.starts) - 1)
            row = len(fields)
            fields.extend(_ZEROS)
            size_seen = False
            continue
        colon = line.find(b":")
        if colon <= 0 or not all(ch in _KEYCHARS for ch in line[:colon]):
            raise ParseError("unrecognised line", base)
        if row < 0:
            raise ParseError("field before the first mapping header", base)
        key = line[:colon]
        if key == b"VmFlags":
            t.vmflags[-1] = _vmflags(line, base)
            continue
        unit = key not in _UNITLESS
        value = _value(line, colon + 1, unit, base)
        i = _KEY_INDEX.get(key)
        if i is not None:
            fields[row + i] = value
            if i == 0:
                size_seen = True
    if row >= 0 and not size_seen:
        fields[row] = t.ends[-1] - t.starts[-1]
    return t


_ZEROS = array("q", bytes(8 * NFIELDS))


def read_parse_smaps(fd: int, buf: bytearray, piece: int = 0) -> "Tuple[int, Union[SmapsTable, ParseError]]":
    """read_all then parse_smaps: (length, SmapsTable), or (length, the
    ParseError), returned, not raised. A process that exits while its smaps
    is read cuts the text short (m_start() in fs/proc/task_mmu.c finds no mm
    and ends the file): only the caller,
    looking at the process afterwards, can tell that from malformed text.

    ``piece``: the Cython engine hands the text to a helper thread each time
    ``piece`` more bytes arrived, so that it is parsed while the kernel
    produces the rest (0: not). This engine reads, then parses.
    """
    n = read_all(fd, buf)
    with memoryview(buf) as whole, whole[:n] as data:
        try:
            return n, parse_smaps(data)
        except ParseError as err:
            return n, err


def first_overlap(t: SmapsTable) -> int:
    """Index of the first mapping that starts below the end of the one
    before it, or -1. The kernel lists mappings in address order, but each
    read() of smaps or maps resumes after the last mapping it gave: one that
    grew across that address between two reads (a neighbour mapped and
    merged into it) is listed again, overlapping. Such text tells of several
    moments, and its sums count some memory twice."""
    starts, ends = t.starts, t.ends
    for i in range(1, len(starts)):
        if starts[i] < ends[i - 1]:
            return i
    return -1


def parse_rollup(buf: bytes) -> MemFields:
    """Parse /proc/PID/smaps_rollup (kernel 4.14+): one ``[rollup]`` record."""
    t = parse_smaps(buf)
    if len(t) != 1:
        raise ParseError("expected one rollup record", 0)
    return MemFields(*t.fields)


_STATUS_KB = {
    b"VmPeak": 6, b"VmSize": 7, b"VmHWM": 8, b"VmRSS": 9, b"RssAnon": 10,
    b"RssFile": 11, b"RssShmem": 12, b"VmData": 13, b"VmStk": 14, b"VmExe": 15,
    b"VmLib": 16, b"VmPTE": 17, b"VmSwap": 18,
}
_STATUS_INT = {b"Tgid": 2, b"PPid": 3, b"Uid": 4, b"Threads": 5}


def parse_status(buf: bytes) -> Status:
    """Parse /proc/PID/status. Absent numeric lines are -1."""
    data = bytes(buf)
    if not data:
        raise ParseError("empty status", 0)
    if data[-1] != 10:
        raise ParseError("truncated line", data.rfind(b"\n") + 1)
    out: List[object] = ["", ""] + [-1] * 17
    pos = 0
    for line in data[:-1].split(b"\n"):
        base = pos
        pos += len(line) + 1
        colon = line.find(b":")
        if colon <= 0:
            raise ParseError("unrecognised line", base)
        key = line[:colon]
        if key == b"Name":
            out[0] = line[colon + 1 :].lstrip(b"\t ").decode("utf-8", "surrogateescape")
        elif key == b"State":
            out[1] = line[colon + 1 :].lstrip(b"\t ")[:1].decode("utf-8", "surrogateescape")
        elif key in _STATUS_KB:
            out[_STATUS_KB[key]] = _value(line.replace(b"\t", b" "), colon + 1, True, base)
        elif key in _STATUS_INT:
            # "Uid:\t0\t0\t0\t0": the real id comes first.
            rest = line[colon + 1 :].lstrip(b"\t ")
            first = rest.split(b"\t", 1)[0]
            if not first or not all(ch in _DEC for ch in first) or len(first) > 19:
                raise ParseError("bad value", base)
            if int(first) > _MAX_I64:
                raise ParseError("value out of range", base)
            out[_STATUS_INT[key]] = int(first)
    if out[2] == -1:
        raise ParseError("no Tgid line", 0)
    return Status(*out)  # type: ignore[arg-type]


# ---------------------------------------------------------------- layout tier


def _go_arena_runs(t: SmapsTable, n: int) -> bytearray:
    """Mark the mappings of Go heap arenas: runs of adjacent unnamed private
    anonymous rw-p/---p mappings that start and end on 64 MiB boundaries
    below 2^46 (runtime/malloc.go: heapArenaBytes, arena hints). MAP_NORESERVE (``nr``) marks glibc
    2.36 arenas, never Go's."""
    marks = bytearray(n)
    starts, ends, perms, names, inodes, flags = t.starts, t.ends, t.perms, t.names, t.inodes, t.vmflags
    i = 0
    while i < n:
        if perms[i] & ~(PERM_R | PERM_W) or names[i] or inodes[i] or flags[i] & VM_NR:
            i += 1
            continue
        j = i
        while (
            j + 1 < n
            and starts[j + 1] == ends[j]
            and not perms[j + 1] & ~(PERM_R | PERM_W)
            and not names[j + 1]
            and not inodes[j + 1]
            and not flags[j + 1] & VM_NR
        ):
            j += 1
        if starts[i] % ARENA == 0 and ends[j] % ARENA == 0 and ends[j] <= GO_HEAP_LIMIT:
            for k in range(i, j + 1):
                marks[k] = 1
        i = j + 1
    return marks


def classify(t: SmapsTable, ctx: LayoutContext) -> bytearray:
    """The layout tier: one category per mapping, from smaps alone.

    Order of the rules: ELF .bss intervals; names; files; Go heap arenas;
    pthread stacks (a guard ``---p`` right below an ``rw-p`` of the default
    stack size, or a smaller MAP_STACK one, VmFlags ``nh`` since kernel 6.7);
    glibc thread arenas (64 MiB aligned, ``rw-p`` head and ``---p`` tail);
    jemalloc regions (``nr``); Go runtime reservations and what lies in them;
    the rest is anon_other, or go_runtime in a Go program without C.
    """
    n = len(t)
    cats = bytearray(n)
    starts, ends, perms, names, inodes, devs, flags = (
        t.starts, t.ends, t.perms, t.names, t.inodes, t.devs, t.vmflags,
    )
    arena = _go_arena_runs(t, n) if ctx.go else bytearray(n)
    iv = ctx.intervals
    k = 0
    pending = []  # anonymous private mappings left for the structural rules
    for i in range(n):
        s = starts[i]
        while k < len(iv) and iv[k].end <= s:
            k += 1
        name = names[i]
        if not name and inodes[i] == 0:
            if k < len(iv) and iv[k].start <= s:
                cats[i] = iv[k].category
            elif perms[i] & PERM_S:
                cats[i] = SHMEM
            elif arena[i]:
                cats[i] = GO_HEAP
            else:
                cats[i] = ANON_OTHER
                pending.append(i)
            continue
        c = by_name(name, perms[i], inodes[i], devs[i], ctx) if name else MAPPED_FILES
        cats[i] = ANON_OTHER if c < 0 else c
    if not pending:
        return cats
    rw = PERM_R | PERM_W
    left = []
    for i in pending:
        size = ends[i] - starts[i]
        p = perms[i]
        if p == rw and i > 0 and cats[i - 1] == ANON_OTHER and ends[i - 1] == starts[i] and perms[i - 1] == 0 and not names[i - 1] and inodes[i - 1] == 0:
            guard = ends[i - 1] - starts[i - 1]
            if size == ctx.stack_size or (flags[i] & VM_NH and guard <= GUARD_MAX and size <= ctx.stack_size):
                cats[i] = THREAD_STACKS
                if guard <= GUARD_MAX:
                    cats[i - 1] = THREAD_STACKS
                continue
        if p == rw and starts[i] % ARENA == 0:
            if size == ARENA:
                cats[i] = C_MALLOC
                continue
            j = i + 1
            if (
                j < n
                and starts[j] == ends[i]
                and perms[j] == 0
                and cats[j] == ANON_OTHER
                and not names[j]
                and inodes[j] == 0
                and ends[j] == starts[i] + ARENA
            ):
                cats[i] = C_MALLOC
                cats[j] = C_MALLOC
                continue
        if ctx.jemalloc and p == rw and flags[i] & VM_NR:
            cats[i] = C_MALLOC
            continue
        left.append(i)
    if not ctx.go:
        return cats
    for i in left:
        if cats[i] != ANON_OTHER:
            continue
        if ctx.go_only:
            cats[i] = GO_RUNTIME
        elif perms[i] == 0 and ends[i] - starts[i] >= ARENA:
            # The page-summary and scavenge-index reservations (~1.1 GiB).
            cats[i] = GO_RUNTIME
    for i in left:
        if cats[i] != ANON_OTHER or perms[i] != rw:
            continue
        below = i > 0 and ends[i - 1] == starts[i] and cats[i - 1] == GO_RUNTIME and perms[i - 1] == 0
        above = i + 1 < n and starts[i + 1] == ends[i] and cats[i + 1] == GO_RUNTIME and perms[i + 1] == 0
        if below or above or flags[i] & VM_NH:
            # Islands mapped inside the reservations; the heap and page-alloc
            # indexes are MADV_NOHUGEPAGE'd while the heap is small.
            cats[i] = GO_RUNTIME
    return cats


def accumulate(t: SmapsTable, cats: bytes) -> List[int]:
    """Sum each mapping into its category: a flat list of (10 + 1) x 9 ints,
    the Counters of each category in CATEGORIES order, then the total."""
    ncat = len(CATEGORIES)
    out = [0] * ((ncat + 1) * 9)
    fields = t.fields
    size, rss, pss = F["Size"], F["Rss"], F["Pss"]
    pc, pd, sc, sd = F["Private_Clean"], F["Private_Dirty"], F["Shared_Clean"], F["Shared_Dirty"]
    anon, swap, lazy, huge = F["Anonymous"], F["Swap"], F["LazyFree"], F["AnonHugePages"]
    for i in range(len(t)):
        r = i * NFIELDS
        for b in (cats[i] * 9, ncat * 9):
            out[b] += fields[r + size]
            out[b + 1] += fields[r + rss]
            out[b + 2] += fields[r + pss]
            out[b + 3] += fields[r + pc] + fields[r + pd]
            out[b + 4] += fields[r + sc] + fields[r + sd]
            out[b + 5] += fields[r + anon]
            out[b + 6] += fields[r + swap]
            out[b + 7] += fields[r + lazy]
            out[b + 8] += fields[r + huge]
    return out


# ------------------------------------------------------------------ pagemap
#
# Page counts of address ranges of a live process, from its /proc/PID/pagemap
# (Documentation/admin-guide/mm/pagemap.rst). Both engines follow the same steps, so
# they give the same counts on the same process state:
#
# 1. PAGEMAP_SCAN (kernel 6.7+) over the ranges, ranges closer than
#    _SCAN_GAP pages merged into one span, with category_anyof_mask =
#    PRESENT|SWAPPED and return_mask = PRESENT|SWAPPED|PFNZERO: run-length
#    present, swapped and zero-page runs (PFNZERO is one compare per PTE in
#    the kernel, unlike FILE or HUGE, which look at the struct page).
# 2. pread of pagemap over the present, non-zero runs (runs closer than
#    _READ_GAP pages read together, in reads of at most _READ_BYTES), counting
#    entries with bits 63 and 56: SCAN has no "exclusive" category.
# 3. Without PAGEMAP_SCAN (ENOTTY or EINVAL: an older kernel), pread of the
#    whole ranges; zero pages are then told by their PFN, which only an opener
#    with CAP_SYS_ADMIN sees: otherwise zero is 0 (see zero_pfns()).
#
# walk_end can be stale on 6.18 when the output vector is longer than the
# kernel's 512-region bounce buffer: a call that came back with fewer regions
# than the vector holds finished its range; after a full vector the scan
# continues from max(walk_end, end of the last region), never from walk_end
# alone (which double-counts).

import ctypes as _ctypes
import errno as _errno
import fcntl as _fcntl
import mmap as _mmap
import struct as _struct

from ...kernel.linux import (
    PAGE_IS_PFNZERO,
    PAGE_IS_PRESENT,
    PAGE_IS_SWAPPED,
    PAGE_SHIFT,
    PAGE_SIZE,
    PAGEMAP_SCAN,
    PM_EXCLUSIVE,
    PM_PFN_MASK,
    PM_PRESENT,
    PM_SCAN_ARG_SIZE,
)
_SCAN_ANYOF = PAGE_IS_PRESENT | PAGE_IS_SWAPPED
_SCAN_RETURN = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO
SCAN_VEC_LEN = 4096  # regions per ioctl (struct page_region: 24 bytes)
_SCAN_GAP = 256  # pages: ranges closer than this share one scan
_READ_GAP = 256  # pages: runs closer than this share one pread
_READ_BYTES = 256 * 1024  # bytes per pread (32,768 pages, 128 MiB of address space)

# Top byte of an entry (bits 56-63) -> 1 when: present and exclusive; present; swapped.
_EXCL_TOP = bytes(1 if b & 0x81 == 0x81 else 0 for b in range(256))
_PRESENT_TOP = bytes(1 if b & 0x80 else 0 for b in range(256))
_SWAPPED_TOP = bytes(1 if b & 0x40 else 0 for b in range(256))

_scan_unsupported = False  # set once PAGEMAP_SCAN gave ENOTTY (no ioctl on pagemap)


def _check_ranges(ranges: "List[Tuple[int, int]]") -> None:
    prev = 0
    for start, end in ranges:
        if start % PAGE_SIZE or end % PAGE_SIZE or start > end or start < prev or start < 0 or end >= 1 << 64:
            raise ValueError("ranges must be sorted, non-overlapping, page-aligned (start, end) pairs")
        prev = end


def _exited() -> ProcessLookupError:
    return ProcessLookupError(_errno.ESRCH, "pagemap read 0 bytes: the process exited")


def _pread_full(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``offset`` of pagemap; 0 bytes means the target exited."""
    n = 0
    while n < len(view):
        got = os.preadv(fd, [view[n:]], offset + n)
        if got == 0:
            raise _exited()
        n += got


@once
def zero_pfns() -> Tuple[int, int, int]:
    """(zero_pfn, huge_zero_first_pfn, huge_zero_end_pfn) as this process sees
    them in its own pagemap, or zeros where unknown.

    Found once: a private anonymous page that is only read maps the shared
    zero page, a read-only 2 MiB MADV_HUGEPAGE range the huge zero page (when
    THP and its zero page are on). PFNs are 0 unless the opener of pagemap
    had CAP_SYS_ADMIN: then (0, 0, 0), and the pread path reports no zero
    pages. Only that path uses this; PAGEMAP_SCAN tells zero pages itself.
    """
    try:
        return _find_zero_pfns()
    except OSError:  # no /proc/self/pagemap (a sandbox): no PFNs either
        return (0, 0, 0)


def _find_zero_pfns() -> Tuple[int, int, int]:
    zero = hz_lo = hz_hi = 0
    huge = 2 << 20
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "rb") as f:
            huge = int(f.read())
    except (OSError, ValueError):
        pass
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        def entry(addr: int) -> int:
            data = os.pread(fd, 8, (addr >> PAGE_SHIFT) * 8)
            return _struct.unpack("<Q", data)[0] if len(data) == 8 else 0

        m = _mmap.mmap(-1, PAGE_SIZE, _mmap.MAP_PRIVATE | _mmap.MAP_ANONYMOUS)
        try:
            m[0]  # a read fault maps the zero page
            c = _ctypes.c_char.from_buffer(m)
            e = entry(_ctypes.addressof(c))
            del c
        finally:
            m.close()
        if e & PM_PRESENT:
            zero = e & PM_PFN_MASK
        if zero and hasattr(_mmap, "MADV_HUGEPAGE"):
            m = _mmap.mmap(-1, 2 * huge, _mmap.MAP_PRIVATE | _mmap.MAP_ANONYMOUS)
            try:
                c = _ctypes.c_char.from_buffer(m)
                base = _ctypes.addressof(c)
                del c
                off = -base % huge
                m.madvise(_mmap.MADV_HUGEPAGE, off, huge)
                m[off]
                e0, e1 = entry(base + off), entry(base + off + PAGE_SIZE)
                pfn = e0 & PM_PFN_MASK
                if e0 & PM_PRESENT and e1 & PM_PRESENT and pfn and pfn != zero and (e1 & PM_PFN_MASK) == pfn + 1:
                    hz_lo, hz_hi = pfn, pfn + huge // PAGE_SIZE
            except OSError:
                pass
            finally:
                m.close()
    finally:
        os.close(fd)
    return zero, hz_lo, hz_hi


def _spans(ranges: "List[Tuple[int, int]]", gap: int) -> "List[Tuple[int, int]]":
    """Index intervals [i, j) of ranges whose gaps are at most ``gap`` pages."""
    out = []
    i = 0
    n = len(ranges)
    while i < n:
        j = i + 1
        while j < n and ranges[j][0] - ranges[j - 1][1] <= gap * PAGE_SIZE:
            j += 1
        out.append((i, j))
        i = j
    return out


def _read_segments(fd: int, segs: "List[Tuple[int, int, int]]", count) -> None:  # type: ignore[no-untyped-def]
    """Read the pagemap entries of ``segs`` (sorted, disjoint (start, end,
    index) page ranges), nearby ones in one pread; ``count(buf, a, b, index)``
    gets the entries [a, b) of each segment, as bytes offsets into ``buf``.

    Every call reads pagemap at least once (the entry of address 0 when there
    are no segments): a read after the scans that returns bytes proves the
    target's memory still existed when they ran. On 6.18 PAGEMAP_SCAN of a
    zombie or reaped target returns no regions, not ESRCH; pread returns 0
    bytes.
    """
    nseg = len(segs)
    if nseg == 0:
        # Nothing to read, but PAGEMAP_SCAN finds nothing rather than failing
        # once the target's mm is gone: make sure it was there throughout.
        _pread_full(fd, memoryview(bytearray(8)), 0)
        return
    buf = bytearray(_READ_BYTES)
    view = memoryview(buf)
    per_read = _READ_BYTES // 8
    i = 0
    lo = hi = 0  # pages in buf: [lo, hi)
    while i < nseg:
        s, e, k = segs[i]
        s >>= PAGE_SHIFT
        e >>= PAGE_SHIFT
        while s < e:
            if not (lo <= s < hi):
                # Refill from s: up to the last segment reachable through gaps
                # of at most _READ_GAP pages, and at most one buffer.
                fill = e
                j = i + 1
                while fill < s + per_read and j < nseg and (segs[j][0] >> PAGE_SHIFT) - fill <= _READ_GAP:
                    fill = segs[j][1] >> PAGE_SHIFT
                    j += 1
                fill = min(fill, s + per_read)
                _pread_full(fd, view[: (fill - s) * 8], s * 8)
                lo, hi = s, fill
            b = min(e, hi)
            count(buf, (s - lo) * 8, (b - lo) * 8, k)
            s = b
        i += 1


def page_counts(fd: int, ranges: "List[Tuple[int, int]]", private: Optional[bytes] = None) -> List[int]:
    """Page counts of address ranges of a process, from its pagemap fd.

    ``fd``: an open /proc/PID/pagemap; ``ranges``: sorted, non-overlapping,
    page-aligned (start, end) address pairs (ValueError otherwise). Returns
    4 ints per range: present (pagemap bit 63; the zero page included),
    swapped (bit 62), exclusive (present, not the zero page, bit 56) and zero
    (present pages that are the shared zero page or the huge zero page).

    Uses PAGEMAP_SCAN where the kernel has it, pread of pagemap otherwise
    (see page_counts_pread). OSError from the kernel propagates (ESRCH as
    ProcessLookupError). A target that exited before or during the call
    raises ProcessLookupError: pagemap is always read after the scans (a
    read of 0 bytes means the target's memory is gone), never silent zeros.
    Ranges must lie below the top of user space (TASK_SIZE).

    ``private``: optional, one byte per range; non-zero marks a range in a
    mapping that smaps showed with no shared pages (Shared_Clean and
    Shared_Dirty 0). Its present pages that are not the zero page are then
    counted exclusive without reading their entries: PAGEMAP_SCAN cannot
    report bit 56, and the pread it takes costs more than the scan itself
    (about 4 ms per GiB resident). The pread path reads bit 56 regardless.
    """
    global _scan_unsupported
    _check_ranges(ranges)
    if not ranges:
        return []
    if _scan_unsupported:
        return page_counts_pread(fd, ranges)
    try:
        return _page_counts_scan(fd, ranges, private or b"")
    except OSError as err:
        if err.errno == _errno.ENOTTY:
            _scan_unsupported = True
        if err.errno in (_errno.ENOTTY, _errno.EINVAL):
            return page_counts_pread(fd, ranges)
        raise


def _page_counts_scan(fd: int, ranges: "List[Tuple[int, int]]", private: bytes) -> List[int]:
    out = [0] * (4 * len(ranges))
    vec = bytearray(SCAN_VEC_LEN * 24)
    vec_addr = _ctypes.addressof((_ctypes.c_char * len(vec)).from_buffer(vec))
    words = memoryview(vec).cast("Q")
    arg = bytearray(PM_SCAN_ARG_SIZE)
    segs: List[Tuple[int, int, int]] = []  # present, non-zero pieces: (start, end, range index)
    for first, last in _spans(ranges, _SCAN_GAP):
        span_end = ranges[last - 1][1]
        pos = ranges[first][0]
        k = first
        while pos < span_end:
            _struct.pack_into(
                "<12Q", arg, 0, PM_SCAN_ARG_SIZE, 0, pos, span_end, 0, vec_addr, SCAN_VEC_LEN, 0,
                0, 0, _SCAN_ANYOF, _SCAN_RETURN,
            )
            ret = _fcntl.ioctl(fd, PAGEMAP_SCAN, arg, True)
            for r in range(ret):
                rs, re_, cat = max(words[3 * r], pos), min(words[3 * r + 1], span_end), words[3 * r + 2]
                while k < last and ranges[k][1] <= rs:
                    k += 1
                j = k
                while j < last and ranges[j][0] < re_:
                    a, b = max(rs, ranges[j][0]), min(re_, ranges[j][1])
                    if a < b:
                        n = (b - a) >> PAGE_SHIFT
                        if cat & PAGE_IS_PRESENT:
                            out[4 * j] += n
                            if cat & PAGE_IS_PFNZERO:
                                out[4 * j + 3] += n
                            elif j < len(private) and private[j]:
                                out[4 * j + 2] += n
                            else:
                                segs.append((a, b, j))
                        elif cat & PAGE_IS_SWAPPED:
                            out[4 * j + 1] += n
                    j += 1
            if ret < SCAN_VEC_LEN:
                break
            # A full vector: go on after what was returned (walk_end alone may be stale).
            walk_end = _struct.unpack_from("<Q", arg, 32)[0]
            nxt = max(walk_end, words[3 * ret - 2])
            if nxt <= pos:
                raise OSError(_errno.EIO, "PAGEMAP_SCAN made no progress")
            pos = nxt

    def count(buf: bytearray, a: int, b: int, j: int) -> None:
        out[4 * j + 2] += buf[a + 7 : b : 8].translate(_EXCL_TOP).count(1)

    _read_segments(fd, segs, count)
    return out


def page_counts_pread(fd: int, ranges: "List[Tuple[int, int]]") -> List[int]:
    """page_counts by pread of pagemap alone (what page_counts falls back to
    without PAGEMAP_SCAN): 8 bytes per page of every range, read in chunks of
    up to 256 KiB. Zero pages are told by PFN (zero_pfns()): counted only
    when both this process and the opener of ``fd`` see PFNs, 0 otherwise."""
    _check_ranges(ranges)
    if not ranges:
        return []
    out = [0] * (4 * len(ranges))
    zero, hz_lo, hz_hi = zero_pfns()

    def count(buf: bytearray, a: int, b: int, j: int) -> None:
        top = buf[a + 7 : b : 8]
        o = 4 * j
        npresent = top.translate(_PRESENT_TOP).count(1)
        out[o] += npresent
        out[o + 1] += top.translate(_SWAPPED_TOP).count(1)
        if not zero or not npresent:
            out[o + 2] += top.translate(_EXCL_TOP).count(1)
            return
        # PFNs visible: look at each present entry.
        nzero = nexcl = 0
        for e in memoryview(buf)[a:b].cast("Q"):
            if e & PM_PRESENT:
                pfn = e & PM_PFN_MASK
                if pfn == zero or hz_lo <= pfn < hz_hi:
                    nzero += 1
                elif e & PM_EXCLUSIVE:
                    nexcl += 1
        out[o + 2] += nexcl
        out[o + 3] += nzero

    _read_segments(fd, [(s, e, j) for j, (s, e) in enumerate(ranges) if s < e], count)
    return out


__all__ += ["page_counts", "page_counts_pread", "zero_pfns"]
