"""Preloaded allocators that replace glibc's malloc in a live process.

jemalloc: when ``libjemalloc`` is loaded and owns malloc, its anonymous
``rw-p`` regions with VmFlags ``nr`` (MAP_NORESERVE) and without ``ac``;
there are no in-band headers. tcmalloc: ``[heap]`` plus the static metadata
in the library's ``.bss``. Whether one owns malloc is decided from glibc's
main arena (:func:`memscan.owners.c.c_regions`).

Neither allocator's memory is split into in use and free: the scanner
shows their regions as unassigned, but for the pages purged with
MADV_FREE (LazyFree), and says why in a warning. What it would take, for
Debian 12's jemalloc 5.3.0 (``libjemalloc.so.2``, build-id 1d5163c2...):

- ``.dynsym`` exports the API only (``malloc``... ``mallctl``,
  ``mallctlbymib``, ``mallctlnametomib``, ``malloc_stats_print``,
  ``malloc_usable_size``, ``nallocx``...) and four data symbols, none a way
  in: ``malloc_conf`` (the program's option string), ``malloc_message``
  and ``je_test_hooks_libc_hook``/``je_test_hooks_arena_new_hook``
  (function pointers). The library is stripped (no ``.symtab``, only a
  ``.gnu_debuglink`` to the -dbgsym package of the debian-debug archive,
  which a production host lacks); ``je_opt_*`` are local.
- The counters live in structures reached from local statics only:
  ``je_arenas[]`` (arena_t: per-bin ``curregs`` under each bin's lock,
  per-size large counts, ``pa_shard.nactive``, the dirty and muzzy ecaches'
  page counts) and ``je_arena_emap_global`` (the radix tree from page to
  ``edata_t``, whose packed bits hold each extent's state and a slab's free
  count). Their offsets depend on the build's configuration (stats, prof,
  mutex profiling, SC_NBINS); the merged figures mallctl("stats.*")
  returns are computed only inside an "epoch" call, into ``ctl_stats``,
  another local static. A reader would need offsets per build-id, taken
  from debug info memscan does not have, and disassembly or a pattern scan
  of ``.bss`` to find the statics: not robust enough to trust.
- Page states cannot stand in: the freed half of a slab's objects is on
  pages still in use, and dirty extents (freed, kept until
  ``dirty_decay_ms``) are ordinary resident pages. Only muzzy extents
  (MADV_FREE) show, as LazyFree, and Debian's defaults (``muzzy_decay_ms:0``)
  never make them: even under ``dirty_decay_ms:0,muzzy_decay_ms:-1`` no
  LazyFree was seen (pmuzzy 0, the pages went to ``retained``).

tcmalloc (gperftools 2.10) is alike: its C shim
``MallocExtension_GetNumericProperty`` is exported, but it is code the
target must run; the page heap and size-class caches are C++ statics.
Ground truth for both comes from the programs themselves
(tests/cprogs/allocstats.c, Redis's INFO memory).
"""

from __future__ import annotations

import os
from typing import List, Optional

from ... import elf
from ..._types import VM_NR, SmapsTable
from .mappings import VM_AC, Mappings, Row, is_rw


def claim_jemalloc(maps: Mappings) -> None:
    """Claim jemalloc's regions: anonymous rw-p, ``nr`` without ``ac``."""
    if not maps.has_flags:
        maps.warn("jemalloc owns malloc but the table has no VmFlags: its regions (nr) cannot be told")
        return
    n = 0
    for r in maps.rows:
        if r.anon and is_rw(r) and r.flags & VM_NR and not r.flags & VM_AC and not maps.is_claimed(r.start, r.end):
            maps.claim(r.start, r.end, "jemalloc")
            n += 1
    maps.found["jemalloc_regions"] = n
    if not n:
        maps.warn("jemalloc owns malloc but no anonymous nr mapping was found "
                  "(vm.overcommit_memory=2 maps without MAP_NORESERVE): its regions are not located")


def claim_tcmalloc(maps: Mappings) -> None:
    """Claim ``[heap]`` and tcmalloc's metadata in its library's ``.bss``."""
    if maps.heap_range:
        maps.claim(*maps.heap_range, "tcmalloc")
    lib = [i for i, r in enumerate(maps.rows) if os.path.basename(elf.strip_deleted(r.name)).startswith("libtcmalloc")]
    if not lib:
        return
    last = maps.rows[max(lib)]
    j = maps.row_at(last.end)
    if j is None or not (maps.rows[j].anon and is_rw(maps.rows[j])):
        return
    r = maps.rows[j]
    end = r.end
    bss_end = _bss_end(maps, lib)
    if bss_end is not None:
        end = min(end, bss_end)
    else:
        maps.warn("tcmalloc's .bss end unknown (library not readable): its whole anonymous continuation "
                  "is taken as tcmalloc metadata")
    if r.start < end and not maps.is_claimed(r.start, end):
        maps.claim(r.start, end, "tcmalloc")


def _bss_end(maps: Mappings, lib: List[int]) -> Optional[int]:
    """Where the ``.bss`` of the library mapped at rows ``lib`` ends, or None."""
    first = next((maps.rows[i] for i in lib if _offset_zero(maps.table, maps.rows[i])), None)
    if first is None:
        return None
    for p in elf.mapped_path(maps.pid, first.start, first.end, first.name):
        info = elf.module_info(p)
        if info is None:
            continue
        bias = first.start - info.min_vaddr
        ends = [bias + e for _, e in info.bss]
        return max(ends) if ends else None
    return None


def _offset_zero(table: SmapsTable, r: Row) -> bool:
    for i in range(len(table)):
        if table.starts[i] == r.start:
            return table.offsets[i] == 0
    return False
