"""glibc's thread stacks in a live process (nptl/allocatestack.c).

A ``---p`` guard of at most 256 KiB directly below an anonymous ``rw-p``
mapping, confirmed by the TCB at its top: any 16-aligned ``pd`` in the top
two pages with ``tcb == self == pd`` (``*(pd) == pd``, ``*(pd+16) == pd``;
2.36 puts it at ``end - 0x940``, but the offset is not assumed). When the
top pages cannot be read (not present), the shape alone is accepted, with a
warning, when both mappings carry ``nh`` (MAP_STACK, kernel 6.7+) or the
kernel predates ``nh``.
"""

from __future__ import annotations

import os
import re
import struct
from typing import List, Optional

from ..._cache import once
from ..._types import VM_NH
from ...kernel.linux import PAGE_SIZE as PAGE
from ...layout.rules import GUARD_MAX, MIB
from .mappings import Mappings, is_none, is_rw

PTHREAD_STACK_MIN = 16 * 1024  # bits/local_lim.h on x86_64


def find_tcb(data: bytes, base: int) -> List[int]:
    """Addresses ``pd`` (16-aligned) in ``data`` (read at ``base``) whose
    ``tcbhead_t`` points to itself twice: ``tcb == pd`` at +0 and
    ``self == pd`` at +16 (x86_64 ABI, 6). Highest first."""
    out = []
    n = len(data) // 8
    words = struct.unpack(f"<{n}Q", data[: 8 * n])
    first = (-base % 16) // 8  # first 16-aligned word
    for k in range(first, n - 2, 2):
        a = base + 8 * k
        if words[k] == a and words[k + 2] == a:
            out.append(a)
    out.reverse()
    return out


@once
def _kernel_has_nh() -> bool:
    """Kernel 6.7+ marks MAP_STACK mappings VM_NOHUGEPAGE (``nh``)."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (6, 7)


def find_stacks(maps: Mappings, stack_limit: Optional[int]) -> None:
    """Claim the pthread stacks: guard and stack, up to the TCB's top."""
    kernel_nh = _kernel_has_nh()
    for i in range(len(maps.rows) - 1):
        g, s = maps.rows[i], maps.rows[i + 1]
        if not (g.anon and is_none(g) and s.anon and is_rw(s) and g.end == s.start):
            continue
        if g.end - g.start > GUARD_MAX or s.end - s.start < PTHREAD_STACK_MIN:
            continue
        if maps.is_claimed(g.start, s.end):
            continue
        tops = [s.end]
        default = stack_limit if stack_limit else 2 * MIB
        if s.start + default < s.end:
            tops.append(s.start + default)  # merged with a mapping above it
        top = pd = 0
        readable = False
        for t in tops:
            for lo, hi in maps.tgt.present(max(t - 2 * PAGE, s.start), t):
                readable = True
                data = maps.tgt.pread(lo, hi - lo)
                if data is None:
                    continue
                hits = find_tcb(data, lo)
                if hits:
                    top, pd = t, hits[0]
                    break
            if pd:
                break
        if pd:
            maps.claim(g.start, top, "pthread stack")
            maps.found["pthread_stacks"] += 1
            continue
        strong = (g.flags & VM_NH and s.flags & VM_NH) if kernel_nh and maps.has_flags else True
        if not readable and strong:
            maps.claim(g.start, s.end, "pthread stack")
            maps.found["pthread_stacks"] += 1
            maps.found["stacks_by_shape"] += 1
        elif strong and s.flags & VM_NH:
            maps.warn(f"stack-shaped mapping {s.start:#x}-{s.end:#x} (MAP_STACK) has no TCB at its top: "
                      "not claimed")
    if maps.found["stacks_by_shape"]:
        maps.warn(f"{maps.found['stacks_by_shape']} pthread stack(s) accepted by their shape alone "
                  "(top pages not present, TCB not checked)")
