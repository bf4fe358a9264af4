"""Build smaps text in the kernel's format, for tests of parsers and rules."""

from __future__ import annotations

from typing import Dict, Iterable, NamedTuple, Optional

from hypothesis import strategies as st

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


def mutate(text: bytes, data) -> bytes:
    """Cut, flip, insert into or delete from ``text`` at a drawn place, or not."""
    mutation = data.draw(st.sampled_from(["none", "cut", "flip", "insert", "delete"]))
    if not text or mutation == "none":
        return text
    i = data.draw(st.integers(0, len(text) - 1))
    if mutation == "cut":
        return text[:i]
    if mutation == "flip":
        return text[:i] + bytes([data.draw(st.integers(0, 255))]) + text[i + 1:]
    if mutation == "insert":
        return text[:i] + data.draw(st.binary(max_size=12)) + text[i:]
    return text[:i] + text[i + data.draw(st.integers(1, 40)):]


# Two mappings that overlap: what smaps shows when a mapping grew across
# where one read() ended and was listed again after it.
OVERLAPPING = (b"00400000-00402000 rw-p 00000000 00:00 0 \nRss:  8 kB\n"
               b"00401000-00403000 rw-p 00000000 00:00 0 \nRss:  8 kB\n")
