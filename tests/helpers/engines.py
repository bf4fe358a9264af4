"""The engines the tests compare: the pure-Python one, and the Cython one
where it is built (MEMSCAN_NO_EXTENSIONS changes which one memscan uses,
not which ones the tests can compare); and the model of page_counts."""

from __future__ import annotations

import pytest

from memscan.engine import pure
from memscan.kernel import linux

try:
    from memscan import _fast as fast
except ImportError:  # a pure-Python build
    fast = None

#: name -> engine module, as the ``engine`` fixture's ids.
ENGINES = {"python": pure}
if fast is not None:
    ENGINES["cython"] = fast

both = pytest.mark.skipif(fast is None, reason="the Cython engine is not built (MEMSCAN_NO_EXTENSIONS)")

PAGE = linux.PAGE_SIZE


def model_counts(entries, ranges, zero_pfns):
    """page_counts by its definition, one pagemap entry at a time."""
    zero, hz_lo, hz_hi = zero_pfns
    out = []
    for start, end in ranges:
        c = [0, 0, 0, 0]
        for e in entries[start // PAGE:end // PAGE]:
            c[1] += bool(e & linux.PM_SWAPPED)
            if e & linux.PM_PRESENT:
                c[0] += 1
                pfn = e & linux.PM_PFN_MASK
                if zero and (pfn == zero or hz_lo <= pfn < hz_hi):
                    c[3] += 1
                elif e & linux.PM_EXCLUSIVE:
                    c[2] += 1
        out += c
    return out
