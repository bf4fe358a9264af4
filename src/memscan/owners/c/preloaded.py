"""Preloaded allocators that replace glibc's malloc in a live process.

jemalloc: when ``libjemalloc`` is loaded and owns malloc, its anonymous
``rw-p`` regions with VmFlags ``nr`` (MAP_NORESERVE) and without ``ac``;
there are no in-band headers. tcmalloc: ``[heap]`` plus the static metadata
in the library's ``.bss``. Whether one owns malloc is decided from glibc's
main arena (:func:`memscan.owners.c.c_regions`).
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
