"""Build smaps text in the kernel's format, for tests of parsers and rules."""

from __future__ import annotations

from typing import Dict, Iterable, NamedTuple, Optional

KEYS = (
    "Size", "KernelPageSize", "MMUPageSize", "Rss", "Pss", "Pss_Dirty",
    "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty",
    "Referenced", "Anonymous", "KSM", "LazyFree", "AnonHugePages",
    "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb", "Private_Hugetlb",
    "Swap", "SwapPss", "Locked",
)


class M(NamedTuple):
    """One mapping to render; sizes in bytes, ``rss`` defaults to none resident."""

    start: int
    end: int
    perms: str = "rw-p"
    name: str = ""
    inode: int = 0
    dev: str = "00:00"
    offset: int = 0
    flags: str = "rd wr mr mw me ac"
    rss: int = 0
    extra: Optional[Dict[str, int]] = None


def header(m: M) -> str:
    head = f"{m.start:08x}-{m.end:08x} {m.perms} {m.offset:08x} {m.dev} {m.inode} "
    return (head.ljust(73) + m.name) if m.name else head


def render(maps: Iterable[M]) -> bytes:
    out = []
    for m in maps:
        out.append(header(m))
        values = {"Size": m.end - m.start, "KernelPageSize": 4096, "MMUPageSize": 4096, "Rss": m.rss,
                  "Pss": m.rss, "Private_Dirty": m.rss, "Anonymous": m.rss if not m.inode else 0}
        values.update(m.extra or {})
        for k in KEYS:
            out.append(f"{k + ':':<16}{values.get(k, 0) // 1024:>8} kB")
        out.append("THPeligible:           0")
        out.append(f"VmFlags: {m.flags} ")
    return ("\n".join(out) + "\n").encode()
