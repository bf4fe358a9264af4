"""``memscan demo``: build the bundled Go program, run it, scan it, explain.

The program (memscan/demo) puts known amounts of memory where Go users lose
track of it: live heap, freed heap the runtime keeps, goroutine stacks and,
with a C compiler, C malloc through cgo. It prints the runtime's own
accounting as JSON; memscan's table is shown beside it.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
from typing import Any, Dict, List

from . import gobuild
from ._errors import Error
from .scan import scan

DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
TIMEOUT = 120.0


def _read_report(proc: "subprocess.Popen[str]") -> Dict[str, Any]:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(TIMEOUT):
            raise Error("the demo program did not report in time")
    line = proc.stdout.readline()
    if not line:
        raise Error(f"the demo program exited with status {proc.wait()}")
    return json.loads(line)


def _args(cgo: bool, quick: bool) -> List[str]:
    scale = 1 if quick else 4
    args = ["-heap", str(32 * scale), "-garbage", str(32 * scale), "-goroutines", str(50 * scale)]
    if cgo:
        args += ["-cmalloc", str(16 * scale), "-csmall", str(250 * scale), "-cthreads", "2"]
    return args


def run_demo(quick: bool = False) -> int:
    from rich.console import Console

    from .cli import mib, render

    console = Console()
    goroot = gobuild.find_goroot()
    cgo = shutil.which(os.environ.get("CC", "gcc")) is not None
    with console.status(f"building the demo with {gobuild.go_version(goroot)}"
                        f"{' (cgo)' if cgo else ' (no C compiler: without cgo)'}"):
        binary = gobuild.build(DEMO_DIR, goroot=goroot, cgo=cgo, out_name="memscan-demo")
    proc = subprocess.Popen([binary, *_args(cgo, quick)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        with console.status("the demo program is allocating"):
            report = _read_report(proc)
        snap = scan(proc.pid)
        render(snap, console)
        ms = report["memstats"]
        console.print("\n[bold]What the Go runtime says of itself[/bold] (runtime.MemStats, MiB):")
        console.print(f"  Alloc {mib(ms['HeapAlloc'])} · HeapInuse {mib(ms['HeapInuse'])} · "
                      f"HeapIdle {mib(ms['HeapIdle'])} · HeapReleased {mib(ms['HeapReleased'])} · "
                      f"StackInuse {mib(ms['StackInuse'])} · Sys {mib(ms['Sys'])}")
        if "mallinfo2" in report:
            mi = report["mallinfo2"]
            console.print(f"  C malloc (mallinfo2, invisible to MemStats): arena {mib(mi['arena'])} · "
                          f"mmapped {mib(mi['hblkhd'])}")
        cats = snap.categories or {}
        kept = ms["HeapIdle"] - ms["HeapReleased"]
        console.print(
            f"\nRSS is {mib(snap.total.rss)} MiB while the program's live Go heap is {mib(ms['HeapAlloc'])} MiB: "
            f"the runtime keeps {mib(kept)} MiB of freed heap resident (go_heap) until the scavenger "
            "returns it over minutes, or debug.FreeOSMemory / GOMEMLIMIT does."
        )
        if cgo and cats:
            console.print(f"C memory outside the Go heap (c_malloc {mib(cats['c_malloc'].rss)} MiB, the big "
                          f"mmapped chunk among anon_other {mib(cats['anon_other'].rss)} MiB) is invisible to "
                          "pprof and MemStats.")
        assert proc.stdin is not None
        proc.stdin.write("free\n")
        proc.stdin.flush()
        after = _read_report(proc)
        freed = scan(proc.pid)
        line = f"\nAfter runtime.GC() + debug.FreeOSMemory(): RSS {mib(freed.total.rss)} MiB"
        if freed.categories:
            line += f", go_heap {mib(freed.categories['go_heap'].rss)} MiB"
        console.print(f"{line}, HeapReleased {mib(after['memstats']['HeapReleased'])} MiB.")
    finally:
        proc.kill()
        proc.wait()
    return 0
