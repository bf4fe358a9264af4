"""How memscan shows memory to a person: byte counts in MiB, and a
snapshot as a table."""

from __future__ import annotations

import re
import sys
from typing import Any, Iterable, List, Optional

from ._types import CATEGORIES
from .core import fallback
from .core.snapshot import Part, Snapshot

MIB = 1 << 20
GO_CATEGORIES = ("go_heap", "go_runtime")

# What each category holds, for the table's legend and the README.
DESCRIPTIONS = {
    "go_heap": "Go heap arenas: objects, goroutine stacks, free and released pages",
    "go_runtime": "Go runtime metadata outside the heap (heap index, span and page tables)",
    "c_malloc": "C allocator: [heap], glibc thread arenas, jemalloc/tcmalloc regions",
    "thread_stacks": "main and pthread stacks (cgo threads), with their guard pages",
    "binary": "the executable's file mappings and its .bss",
    "shared_libs": "shared objects (.so) and their .bss",
    "mapped_files": "other mapped files",
    "shmem": "shared memory: memfd, SysV, /dev/shm, shared anonymous",
    "kernel": "vdso, vvar, vsyscall and kernel buffers mapped by the process",
    "anon_other": "anonymous memory not attributed to any of the above",
}


def mib(n: float, *, unit: bool = True, sign: bool = False) -> str:
    """``n`` bytes in MiB to one decimal, thousands grouped ("1,234.5 MiB");
    ``unit`` False leaves " MiB" out (a table says it in its heading),
    ``sign`` shows + or - always (a change)."""
    value = int(n) / MIB
    text = f"{value:+,.1f}" if sign else f"{value:,.1f}"
    return f"{text} MiB" if unit else text


# Units of sizes a person writes: kB, MB... are powers of 1000 (SI, as
# df -H), KiB, MiB... of 1024 (IEC); a bare k, M, G, T are SI too.
SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000 ** 2, "mb": 1000 ** 2,
              "mib": 1 << 20, "g": 1000 ** 3, "gb": 1000 ** 3, "gib": 1 << 30, "t": 1000 ** 4, "tb": 1000 ** 4,
              "tib": 1 << 40}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*", re.I)


def size(text: str) -> int:
    """Bytes of ``"512MiB"``, ``"1.5GiB"``, ``"100MB"``, ``"2G"``, ``"4096"``
    (units: SIZE_UNITS, any case); a ValueError for anything else."""
    m = _SIZE.fullmatch(text)
    if m is None or m.group(2).lower() not in SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (e.g. 512MiB, 1GiB, 100MB, 4096)")
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2).lower()])


# Spaces that end a line, before any closing style codes.
_TRAILING = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$", re.MULTILINE)


def show(renderable: Any, console: Any = None) -> None:
    """Print a rich table on ``console``, or on stdout whole: as wide as
    its content needs, whatever the terminal's width (a pipe counts as 80
    columns to rich, which cut cells short with "…"; a terminal narrower
    than the table wraps its lines instead), without trailing spaces."""
    from rich.console import Console

    if console is not None:
        console.print(renderable)
        return
    console = Console()
    needed = console.measure(renderable, options=console.options.update_width(1 << 16)).maximum
    console.width = max(console.width, needed)
    with console.capture() as captured:
        console.print(renderable)
    sys.stdout.write(_TRAILING.sub(r"\1", captured.get()))
    sys.stdout.flush()


def render(snap: Snapshot, console: Any = None) -> None:
    """Print a snapshot as a rich table."""
    from rich.table import Table

    title = f"pid {snap.pid}"
    if snap.go is not None:
        title += f" · {snap.go.version}{' cgo' if snap.go.cgo else ''}"
    if snap.allocator:
        title += f" · {snap.allocator} malloc"
    title += f" · tier {snap.tier}"
    table = Table(title=title, title_justify="left")
    table.add_column("category")
    for col in ("size", "rss", "pss", "uss", "swap"):
        table.add_column(f"{col} MiB", justify="right")
    table.add_column("% rss", justify="right")
    total = snap.total
    rows = [] if snap.categories is None else [(c, snap.categories[c]) for c in CATEGORIES]

    def add(label: str, c: Any, **style: Any) -> None:
        share = 100.0 * c.rss / total.rss if total.rss else 0.0
        table.add_row(label, *(mib(v, unit=False) for v in (c.size, c.rss, c.pss, c.uss, c.swap)), f"{share:.1f}",
                      **style)

    # The exact tier: the Go heap by the runtime's own page states, C
    # allocator memory by the state of its chunks.
    details = {"go_heap": snap.go_heap_detail, "c_malloc": snap.c_malloc_detail}
    # Rows that cannot apply are left out of the table (JSON keeps them all):
    # the Go categories of a process without Go, the C allocator's states
    # where no allocator was found.
    if snap.go is None:
        rows = [(name, c) for name, c in rows if name not in GO_CATEGORIES or c.size]
        details.pop("go_heap")
    if not snap.allocator:
        details.pop("c_malloc")
    for name, c in rows:
        add(name, c)
        for state, d in (details.get(name) or {}).items():
            add(f"  {state}", d, style="dim")
    if rows:
        table.add_section()
    # Without smaps (the psutil tier) pss and uss are unknown: not zero.
    unknown = set(fallback.UNKNOWN) if snap.source == "psutil" else set()

    def cell(name: str) -> str:
        return "n/a" if name in unknown else mib(getattr(total, name), unit=False)

    table.add_row("total", cell("size"), cell("rss"), cell("pss"), cell("uss"), cell("swap"), "100.0", style="bold")
    show(table, console)
    warn(snap.warnings)


def warn(warnings: Iterable[str]) -> None:
    """Warnings on stderr, one line each: stdout stays the table alone, for a pipe or a file."""
    for w in warnings:
        print(f"memscan: warning: {w}", file=sys.stderr)


def biggest(parts: List[Part], category: Optional[str], n: int) -> List[Part]:
    """The ``n`` parts with the most rss (of ``category`` alone if given), biggest first."""
    chosen = [p for p in parts if category is None or p.category == category]
    return sorted(chosen, key=lambda p: (-p.counters.rss, -p.counters.size, p.start))[:n]


def render_mappings(snap: Snapshot, parts: List[Part], category: Optional[str], console: Any = None) -> None:
    """Print ``parts`` (biggest()) as a rich table: where each lies, what it
    holds and how much of it is resident."""
    from rich.markup import escape
    from rich.table import Table

    title = f"pid {snap.pid} · tier {snap.tier} · the {len(parts)} biggest {category or ''} mappings by rss"
    table = Table(title=" ".join(title.split()), title_justify="left")
    for col, just in (("address", "left"), ("category", "left"), ("state or path", "left"),
                      ("rss MiB", "right"), ("size MiB", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for p in parts:
        # An exact-tier piece has its owner's state, then the name of the
        # mapping it lies in ("[heap]": escaped, not taken for rich markup).
        what = " · ".join(x for x in (p.state, p.path) if x) or "anonymous"
        table.add_row(f"{p.start:x}-{p.end:x}", p.category, escape(what), mib(p.counters.rss, unit=False),
                      mib(p.counters.size, unit=False))
    show(table, console)
    warn(snap.warnings)
