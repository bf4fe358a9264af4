"""The smaps parser of the pure-Python engine: /proc/PID/smaps, smaps_rollup
and maps text into a SmapsTable.

Formats follow the kernel's ``fs/proc/task_mmu.c`` (Documentation/filesystems/
proc.rst): a header line per mapping, ``Key:   <n> kB`` lines, and a final
``VmFlags:`` line. Every field is optional: fields appear with kernel versions
(see ``_types.SMAPS_KEYS``), so the parser dispatches by key, never position.
"""

from __future__ import annotations

from array import array
from typing import Tuple, Union

from ..._errors import ParseError
from ..._types import (
    NFIELDS,
    PERM_R,
    PERM_S,
    PERM_W,
    PERM_X,
    SMAPS_KEYS,
    UNITLESS_KEYS,
    VMFLAG_BIT,
    VMFLAG_UNKNOWN,
    MemFields,
    SmapsTable,
)
from ...kernel import procfs
from ..protocol import Buffer

__all__ = ["read_all", "parse_smaps", "read_parse_smaps", "first_overlap", "parse_rollup"]

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


def parse_smaps(buf: Buffer) -> SmapsTable:
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


def read_all(fd: int, buf: bytearray) -> int:
    """Read ``fd`` from offset 0 to EOF into ``buf`` (grown as needed); return
    the length. This engine reads as the kernel layer does
    (``memscan.kernel.procfs.read_all``), without its pauses."""
    return procfs.read_all(fd, buf)


def read_parse_smaps(fd: int, buf: bytearray, piece: int = 0) -> Tuple[int, Union[SmapsTable, ParseError]]:
    """read_all then parse_smaps: (length, SmapsTable), or (length, the
    ParseError), returned, not raised. A process that exits while its smaps
    is read cuts the text short (m_start() in fs/proc/task_mmu.c finds no mm
    and ends the file): only the caller,
    looking at the process afterwards, can tell that from malformed text.

    ``piece``: the Cython engine hands the text to a helper thread each time
    ``piece`` more bytes arrived, so that it is parsed while the kernel
    produces the rest (0: not). This engine reads, then parses.
    """
    n = procfs.read_all(fd, buf)
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


def parse_rollup(buf: Buffer) -> MemFields:
    """Parse /proc/PID/smaps_rollup (kernel 4.14+): one ``[rollup]`` record."""
    t = parse_smaps(buf)
    if len(t) != 1:
        raise ParseError("expected one rollup record", 0)
    return MemFields(*t.fields)
