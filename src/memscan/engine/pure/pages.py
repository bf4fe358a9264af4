"""Page counting of the pure-Python engine: the loops over what PAGEMAP_SCAN
and pagemap returned. ``memscan.kernel.pagemap`` does the reading and calls
these in order (the steps, and why, are told there):

- ``page_ranges``: the caller's (start, end) address pairs, checked, as page
  numbers;
- ``scan_spans``: ranges close enough to share one PAGEMAP_SCAN walk;
- ``count_regions``: a walk's regions (3 words each: start, end, categories)
  counted into the ranges, the present non-zero pieces whose exclusive bit
  must be read kept as segments (start page, end page, range index);
- ``read_plan``: the preads that cover the segments;
- ``count_exclusive`` / ``count_entries``: the pagemap entries of one pread
  counted into the segments' ranges (bit 56 only; or all four counts).

Counts are 4 per range in an ``array('q')``: present, swapped, exclusive,
zero pages.
"""

from __future__ import annotations

from array import array
from typing import Sequence, Tuple

from ..._types import PAGE_RANGES_ERROR
from ...kernel.linux import PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_SHIFT, PM_EXCLUSIVE, PM_PFN_MASK, PM_PRESENT
from ..protocol import Buffer

__all__ = ["page_ranges", "scan_spans", "count_regions", "read_plan", "count_exclusive", "count_entries"]

_PAGE_MASK = (1 << PAGE_SHIFT) - 1

# Top byte of an entry (bits 56-63) -> 1 when: present and exclusive; present; swapped.
_EXCL_TOP = bytes(1 if b & 0x81 == 0x81 else 0 for b in range(256))
_PRESENT_TOP = bytes(1 if b & 0x80 else 0 for b in range(256))
_SWAPPED_TOP = bytes(1 if b & 0x40 else 0 for b in range(256))


def page_ranges(ranges: Sequence[Tuple[int, int]]) -> array[int]:
    """Sorted, non-overlapping, page-aligned (start, end) address pairs as
    page numbers, 2 per range (ValueError for anything else)."""
    out = array("Q")
    prev = 0
    for start, end in ranges:
        if start & _PAGE_MASK or end & _PAGE_MASK or start > end or start < prev or start < 0 or end >= 1 << 64:
            raise ValueError(PAGE_RANGES_ERROR)
        prev = end
        out.append(start >> PAGE_SHIFT)
        out.append(end >> PAGE_SHIFT)
    return out


def scan_spans(rng: array[int], gap: int) -> array[int]:
    """Index intervals [i, j) of ranges (page numbers, from page_ranges)
    whose gaps are at most ``gap`` pages, 2 per span."""
    out = array("Q")
    n = len(rng) // 2
    i = 0
    while i < n:
        j = i + 1
        while j < n and rng[2 * j] - rng[2 * j - 1] <= gap:
            j += 1
        out.append(i)
        out.append(j)
        i = j
    return out


def count_regions(words: Sequence[int], rng: array[int], first: int, last: int, private: Buffer,
                  out: array[int], segs: array[int]) -> None:
    """Count the PAGEMAP_SCAN regions ``words`` of the span of ranges [first,
    last) into ``out``: present, swapped and zero pages; present non-zero
    pages are exclusive where ``private[j]`` is set, else appended to
    ``segs`` (start page, end page, j) for their entries to be read."""
    span_lo, span_hi = rng[2 * first], rng[2 * last - 1]
    k = first
    for r in range(0, len(words), 3):
        rs = max(words[r] >> PAGE_SHIFT, span_lo)
        re_ = min(words[r + 1] >> PAGE_SHIFT, span_hi)
        cat = words[r + 2]
        while k < last and rng[2 * k + 1] <= rs:
            k += 1
        j = k
        while j < last and rng[2 * j] < re_:
            a, b = max(rs, rng[2 * j]), min(re_, rng[2 * j + 1])
            if a < b:
                n = b - a
                if cat & PAGE_IS_PRESENT:
                    out[4 * j] += n
                    if cat & PAGE_IS_PFNZERO:
                        out[4 * j + 3] += n
                    elif j < len(private) and private[j]:
                        out[4 * j + 2] += n
                    else:
                        segs.extend((a, b, j))
                elif cat & PAGE_IS_SWAPPED:
                    out[4 * j + 1] += n
            j += 1


def read_plan(segs: array[int], per_read: int, gap: int) -> array[int]:
    """The preads of pagemap that cover ``segs`` (sorted, disjoint, 3 words
    each), 3 words per read: first page, end page, index of the first
    segment in it. A read runs on over the next segments while the gaps are
    at most ``gap`` pages, up to ``per_read`` pages."""
    plan = array("Q")
    nseg = len(segs) // 3
    lo = hi = 0
    for i in range(nseg):
        s, e = segs[3 * i], segs[3 * i + 1]
        while s < e:
            if not (lo <= s < hi):
                fill = e
                j = i + 1
                while fill < s + per_read and j < nseg and segs[3 * j] - fill <= gap:
                    fill = segs[3 * j + 1]
                    j += 1
                lo, hi = s, min(fill, s + per_read)
                plan.extend((lo, hi, i))
            s = min(e, hi)
    return plan


def count_exclusive(entries: memoryview, first: int, segs: array[int], i: int, out: array[int]) -> None:
    """Count the present exclusive entries (bits 63 and 56) among
    ``entries``, pagemap from page ``first``, into the ranges of the
    segments from index ``i`` on that lie in it."""
    end = first + len(entries) // 8
    nseg = len(segs) // 3
    while i < nseg and segs[3 * i] < end:
        a, b = max(segs[3 * i], first), min(segs[3 * i + 1], end)
        if a < b:
            top = entries[(a - first) * 8 + 7 : (b - first) * 8 : 8].tobytes()
            out[4 * segs[3 * i + 2] + 2] += top.translate(_EXCL_TOP).count(1)
        i += 1


def count_entries(entries: memoryview, first: int, segs: array[int], i: int, out: array[int],
                  zero_pfns: Tuple[int, int, int]) -> None:
    """As count_exclusive, all four counts: zero pages are told by PFN
    (``zero_pfns``: the zero page, the huge zero page's [first, end)),
    none when the PFN of the zero page is 0 (unknown)."""
    zero, hz_lo, hz_hi = zero_pfns
    end = first + len(entries) // 8
    nseg = len(segs) // 3
    while i < nseg and segs[3 * i] < end:
        a, b, o = max(segs[3 * i], first), min(segs[3 * i + 1], end), 4 * segs[3 * i + 2]
        i += 1
        if a >= b:
            continue
        top = entries[(a - first) * 8 + 7 : (b - first) * 8 : 8].tobytes()
        npresent = top.translate(_PRESENT_TOP).count(1)
        out[o] += npresent
        out[o + 1] += top.translate(_SWAPPED_TOP).count(1)
        if not zero or not npresent:
            out[o + 2] += top.translate(_EXCL_TOP).count(1)
            continue
        # PFNs visible: look at each present entry.
        nzero = nexcl = 0
        for e in entries[(a - first) * 8 : (b - first) * 8].cast("Q"):
            if e & PM_PRESENT:
                pfn = e & PM_PFN_MASK
                if pfn == zero or hz_lo <= pfn < hz_hi:
                    nzero += 1
                elif e & PM_EXCLUSIVE:
                    nexcl += 1
        out[o + 2] += nexcl
        out[o + 3] += nzero
