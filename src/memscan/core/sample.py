"""Sample: one tick of a :class:`memscan.Sampler`.

::

    class Sample:                # frozen dataclass with slots
        pid: int
        seq: int                 # tick number, 0-based
        mono: float              # time.monotonic() when the tick's read started
        wall: float              # time.time() at the same moment
        tier: str                # "exact" | "layout" | "psutil"
        rss: int                 # total resident bytes of the process
        categories: Optional[Dict[str, int]]   # rss bytes per category, all ten CATEGORIES; None in the psutil tier
        go_heap_detail: Optional[Dict[str, int]]  # rss bytes per state objects/stacks/free/released/reserved, or None
        snapshot: Optional[Snapshot]  # the full scan made on this tick (every Nth tick and the first): pss, swap, uss...
        missed: int              # ticks skipped just before this one because the previous read overran
        states_age: Optional[float]  # exact tier: seconds since the Go heap page states and the owners
                                     # counted were read (0.0 on a full scan's tick); None in other tiers

Where each figure comes from, and how fresh it is:

- ``rss``: /proc/PID/statm (resident, status's VmRSS in pages), this tick.
  The per-mm counters cost ~2 us and take no lock; on a full-scan tick it
  is the scan's total.
- ``categories``: one PAGEMAP_SCAN pass (kernel.pagemap's page_counts, present
  pages minus the zero page) over the category intervals, this tick's
  pages. The intervals (a category per mapping in the layout tier; the
  exact tier's owner regions cut into the mappings) are kept between ticks
  and rebuilt only when /proc/PID/maps changes (compared byte for byte:
  maps is lock-free on kernel 6.17+ and is the only cheap source that
  changes exactly when the mappings do; statm's counters miss an mprotect or
  an mmap+munmap of equal size). A mapping that appeared since the last
  full scan is classified from maps, without the smaps VmFlags the layout
  rules also use (nr, nh), until the next full scan. When neither maps nor
  statm's size, resident and shared pages (anonymous, file and shmem
  pages, a swapped-out page leaving resident) changed since the last
  count, no page was mapped or unmapped: the count is reused, without
  touching the target, for up to ``RECOUNT_AFTER`` seconds. What statm
  cannot show (as many pages mapped in one category as unmapped in another
  between two reads; a change below the per-CPU counters' batch, as the
  counters are per-CPU since kernel 6.2) shows at the next
  count, at most that much later.
- ``go_heap_detail`` (exact tier): this tick's resident pages of the Go
  heap's page-state intervals; the intervals (which spans hold objects,
  are free, released...) and the other owners' regions are those last
  read, by a full scan or by a refresh between two (``core.refresh``: the
  Go heap every 0.1 s, every owner when anonymous mappings grew, within
  2 % of the time; and in the tick itself when its count contradicts
  them: anon_other grown, heap pages resident in reserved or released
  address space). ``states_age`` says how old they are, on every exact
  sample; an iterated tick whose count still contradicts them is missed
  (``missed``) rather than given. A read that finds the heap changing under
  every try (a program allocating flat out on all cores) keeps the last
  good states, which keep ageing (a full scan's failure is a warning,
  once); with none yet, the tick is skipped (``missed``).
- ``snapshot``: a full ``scan()`` (smaps, and in the exact tier the Go and C
  allocators' structures), on the first tick and then every ``full_every``
  seconds: pss, uss, swap and the rest are that fresh. It also refreshes
  the classification (the smaps VmFlags) and the exact regions.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Dict, Optional

from .snapshot import Snapshot

__all__ = ["Sample"]

_DATACLASS_SLOTS = {"slots": True} if sys.version_info >= (3, 10) else {}


@dataclass(frozen=True, **_DATACLASS_SLOTS)
class Sample:
    """One tick of a Sampler: see the module docstring for each field's source."""

    pid: int
    seq: int
    mono: float
    wall: float
    tier: str
    rss: int
    categories: Optional[Dict[str, int]]
    go_heap_detail: Optional[Dict[str, int]]
    snapshot: Optional[Snapshot]
    missed: int
    states_age: Optional[float] = None
