"""Per-page bookkeeping of the Go heap reader: bitmaps held as Python ints
(bit i = page i, as the runtime's pallocBits and pageCache words), one byte
per page, runs of set bits or equal bytes, and the intervals they make.
"""

from __future__ import annotations

import re
from typing import Iterator, List, Tuple


def page_flags(bits: int, n: int) -> bytes:
    """Bitmap -> one byte per page (1 = set), bit i = byte i."""
    return format(bits, f"0{n}b")[::-1].encode().translate(_DIGIT_TO_FLAG)


def flag_bits(flags: bytearray, value: int) -> int:
    """One byte per page -> bitmap of the pages whose byte is ``value``."""
    table = bytes(0x31 if i == value else 0x30 for i in range(256))
    return int(flags.translate(table)[::-1], 2) if flags else 0


_DIGIT_TO_FLAG = bytes.maketrans(b"01", b"\x00\x01")


def merge(ranges: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """``ranges`` sorted, those that overlap or touch joined."""
    out: List[Tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def range_bits(ranges: List[Tuple[int, int]], base: int, n: int, ps: int) -> int:
    """Bit i set when page i of the arena at ``base`` lies in one of ``ranges``."""
    bits = 0
    end = base + n * ps
    for lo, hi in ranges:
        lo, hi = max(lo, base), min(hi, end)
        if lo < hi:
            first, last = (lo - base) // ps, (hi - base + ps - 1) // ps
            bits |= ((1 << (last - first)) - 1) << first
    return bits


def cache_bits(caches: List[Tuple[int, int, int]], base: int, n: int, ps: int) -> Tuple[int, int]:
    """Pages of the arena at ``base`` that the P's page caches hold, and
    those of them that are scavenged."""
    pages = scav_pages = 0
    for cbase, cache, scav in caches:
        first = (cbase - base) // ps
        if 0 <= first < n and (cbase - base) % ps == 0:
            pages |= cache << first
            scav_pages |= scav << first
    full = (1 << n) - 1
    return pages & full, scav_pages & full


_ONES = re.compile("1+")


def runs(mask: int) -> Iterator[Tuple[int, int]]:
    """[lo, hi) of every run of set bits."""
    if not mask:
        return
    bits = format(mask, "b")[::-1]  # bits[i] is bit i
    for m in _ONES.finditer(bits):
        yield m.start(), m.end()


_SAME = re.compile(rb"(.)\1*", re.DOTALL)


def state_runs(base: int, states: bytearray, ps: int) -> List[Tuple[int, int, int]]:
    """Per-page states of the arena at ``base`` -> (start, end, state) runs."""
    return [(base + m.start() * ps, base + m.end() * ps, states[m.start()]) for m in _SAME.finditer(states)]


def intervals(arenas: List[List[Tuple[int, int, int]]]) -> List[Tuple[int, int, int]]:
    """The runs of each arena (arenas sorted by base) -> merged intervals:
    adjacent arenas' runs of the same state join."""
    out: List[Tuple[int, int, int]] = []
    for arena in arenas:
        for start, end, state in arena:
            if out and out[-1][1] == start and out[-1][2] == state:
                out[-1] = (out[-1][0], end, state)
            else:
                out.append((start, end, state))
    return out
