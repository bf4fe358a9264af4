"""The ``memscan`` command: scan, ps, demo.

Every failure ends with one line on stderr and a non-zero exit status:
1 for a memscan error (no such process, access denied, malformed procfs),
2 for bad usage, 130 on Ctrl-C. ``MEMSCAN_TRACEBACK=1`` shows tracebacks
of unexpected errors, for bug reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from . import __version__, fallback
from ._errors import Error
from ._impl import ENGINES
from ._types import CATEGORIES
from .scan import TIERS, scan
from .snapshot import Snapshot

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


def mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f}"


def render(snap: Snapshot, console=None) -> None:  # type: ignore[no-untyped-def]
    """Print a snapshot as a rich table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
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
    def add(label: str, c, **style) -> None:  # type: ignore[no-untyped-def]
        share = 100.0 * c.rss / total.rss if total.rss else 0.0
        table.add_row(label, mib(c.size), mib(c.rss), mib(c.pss), mib(c.uss), mib(c.swap), f"{share:.1f}", **style)

    for name, c in rows:
        add(name, c)
        if name == "go_heap" and snap.go_heap_detail:
            # The exact tier: the Go heap by the runtime's own page states.
            for state, d in snap.go_heap_detail.items():
                add(f"  {state}", d, style="dim")
    if rows:
        table.add_section()
    # Without smaps (the psutil tier) pss and uss are unknown: not zero.
    unknown = set(fallback.UNKNOWN) if snap.source == "psutil" else set()

    def cell(name: str) -> str:
        return "n/a" if name in unknown else mib(getattr(total, name))

    table.add_row("total", cell("size"), cell("rss"), cell("pss"), cell("uss"), cell("swap"), "100.0", style="bold")
    console.print(table)
    for w in snap.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


def cmd_scan(args: argparse.Namespace) -> int:
    snap = scan(args.pid, tier=args.tier, engine=args.engine)
    if args.json:
        print(json.dumps(snap.to_dict(), indent=None if args.compact else 2))
    else:
        render(snap)
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .goprocs import go_processes

    table = Table(title="Go processes", title_justify="left")
    for col, just in (("pid", "right"), ("name", "left"), ("Go", "left"), ("cgo", "left"),
                      ("rss MiB", "right"), ("path", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    found = go_processes()
    for p in found:
        table.add_row(str(p.pid), p.name, p.go.version, "yes" if p.go.cgo else "no", mib(p.rss), p.go.path)
    if args.json:
        print(json.dumps([{"pid": p.pid, "name": p.name, "version": p.go.version, "cgo": p.go.cgo,
                           "rss": p.rss, "path": p.go.path} for p in found], indent=2))
    else:
        Console().print(table)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo_run import run_demo

    return run_demo(quick=args.quick)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="memscan",
        description="Where a process's resident memory goes: Go heap, runtime, C malloc, stacks, libraries.",
    )
    ap.add_argument("--version", action="version", version=f"memscan {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("scan", help="attribute one process's memory to categories")
    s.add_argument("pid", type=int)
    s.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    s.add_argument("--compact", action="store_true", help="with --json: one line")
    s.add_argument("--tier", choices=TIERS, default="auto")
    s.add_argument("--engine", choices=sorted(ENGINES), default=None, help="parser engine (default: fastest)")
    s.set_defaults(func=cmd_scan)

    p = sub.add_parser("ps", help="list the processes running Go that memscan can see")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ps)

    d = sub.add_parser("demo", help="build, run and scan the bundled Go program (needs memscan[demo])")
    d.add_argument("--quick", action="store_true", help="smaller amounts of memory")
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Error as err:
        print(f"memscan: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("memscan: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into head(1) and friends: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # noqa: BLE001 - the CLI never shows a traceback
        if os.environ.get("MEMSCAN_TRACEBACK"):
            raise
        print(f"memscan: internal error: {type(err).__name__}: {err} "
              "(set MEMSCAN_TRACEBACK=1 for details)", file=sys.stderr)
        return 70
