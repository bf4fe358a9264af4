"""``memscan demo``: build the bundled Go program, walk it through the
situations where Go's numbers and the operating system's part, and show each
with memscan.

The program (the Go sources beside this file) answers commands on stdin with the runtime's own
accounting (runtime.MemStats, mallinfo2) as JSON. The demo drives it through
phases while a Sampler records it (a CSV, shown live as memscan watch shows
it), then draws the recording (a PNG) and ends with memscan explain:

1. allocate: live Go heap, in steps;
2. drop: the heap is freed and collected, but the runtime keeps the pages
   (go_heap "free"): RSS does not move;
3. release: debug.FreeOSMemory() returns them now, as the scavenger would
   over minutes (go_heap "released");
4. cgo leak: C memory, malloc'd through cgo and never freed, grows while
   the Go heap stays flat: pprof and MemStats cannot see it.

Without a C compiler the program is built without cgo and phase 4 is left out.
"""

from __future__ import annotations

import json
import os
import queue
import selectors
import shutil
import subprocess
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, List, NamedTuple, Optional, Tuple

from .._errors import Error
from ..core.sampler import Sample, Sampler
from ..core.scanner import scan
from ..core.snapshot import Snapshot
from ..format import mib, render
from . import build
TIMEOUT = 120.0
# The live view's window and refresh period, seconds.
WINDOW = 10.0
REFRESH = 0.25


class Phase(NamedTuple):
    title: str
    commands: Tuple[str, ...]  # sent one per step, each followed by a pause
    note: str  # what to look at, shown while the phase runs


def phases(cgo: bool, quick: bool) -> List[Phase]:
    step = 16 if quick else 32
    out = [
        Phase("allocate", (f"alloc {step}",) * 4,
              f"{4 * step} MiB of live Go heap, in steps: go_heap objects grow, and so does RSS"),
        Phase("drop", ("drop",),
              "the live heap is dropped and collected; the runtime keeps its pages: go_heap objects turn into "
              "free, RSS stays"),
        Phase("release", ("release",),
              "debug.FreeOSMemory() returns the free pages now, as the scavenger would over minutes: "
              "go_heap free turns into released, RSS falls"),
    ]
    if cgo:
        out.append(Phase("cgo leak", (f"cleak {step // 2}",) * 4,
                         f"{2 * step} MiB of C memory malloc'd through cgo, never freed: c_malloc grows while the "
                         "Go heap stays flat, and MemStats does not see it"))
    return out


class _Program:
    """The running demo program: commands in, JSON reports out."""

    def __init__(self, binary: str, args: List[str]) -> None:
        self.proc = subprocess.Popen([binary, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def report(self) -> Dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(TIMEOUT):
                raise Error("the demo program did not report in time")
        line = self.proc.stdout.readline()
        if not line:
            raise Error(f"the demo program exited with status {self.proc.wait()}")
        doc: Dict[str, Any] = json.loads(line)
        if "error" in doc:
            raise Error(f"the demo program: {doc['error']}")
        return doc

    def command(self, cmd: str) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.report()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class _Driver(threading.Thread):
    """Sends the phases' commands at their pace, beside the sampling; what
    happened goes to ``events`` (read by the sampling loop, which alone
    writes the recording)."""

    def __init__(self, program: _Program, plan: List[Phase], pause: float) -> None:
        super().__init__(name="memscan-demo", daemon=True)
        self.program, self.plan, self.pause = program, plan, pause
        self.events: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            time.sleep(self.pause)
            for i, phase in enumerate(self.plan):
                self.events.put(("phase", i))
                for cmd in phase.commands:
                    self.events.put(("memstats", self.program.command(cmd)))
                    time.sleep(self.pause)
                time.sleep(self.pause)
        except BaseException as err:  # noqa: BLE001 - reported by the sampling loop
            self.error = err
        finally:
            self.events.put(("done", None))


def run_demo(quick: bool = False, output: str = "memscan-demo") -> int:
    """The whole demo; files go to the directory ``output``."""
    from rich.console import Console
    from rich.live import Live

    from .. import explain, plot, record, watch

    console = Console()
    goroot = build.find_goroot()
    cgo = shutil.which(os.environ.get("CC", "gcc")) is not None
    with console.status(f"building the demo with {build.go_version(goroot)}"
                        f"{' (cgo)' if cgo else ' (no C compiler: without cgo)'}"):
        binary = build.build(build.DEMO_DIR, goroot=goroot, cgo=cgo, out_name="memscan-demo")
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as err:
        raise Error(f"cannot create {output}: {err.strerror}") from None
    csv_path, png_path = os.path.join(output, "demo.csv"), os.path.join(output, "demo.png")
    plan = phases(cgo, quick)
    pause = 0.5 if quick else 1.5
    args = ["-goroutines", "100"] + (["-csmall", "500", "-cthreads", "2"] if cgo else [])

    program = _Program(binary, args)
    try:
        memstats = program.report()["memstats"]
        driver = _Driver(program, plan, pause)
        recent: Deque[Sample] = deque()
        leak_snaps: List[Snapshot] = []
        before_leak: List[Snapshot] = []
        current = -1
        shown = 0.0
        # Not polite: the demo reads its own program, and full scans twice a
        # second let new C memory show as c_malloc at once (see Sampler).
        with Sampler(program.pid, interval=0.02, full_every=0.5, polite=False) as sampler, \
                record.Writer(csv_path, record.header(program.pid, tier="auto", hz=50, full_every=0.5)) as writer, \
                Live(console=console, auto_refresh=False) as live:
            done = False

            def each(s: Sample) -> None:
                nonlocal current, shown, done, memstats
                while True:
                    try:
                        kind, value = driver.events.get_nowait()
                    except queue.Empty:
                        break
                    if kind == "phase":
                        current = value
                        writer.event("phase", name=plan[value].title)
                    elif kind == "memstats":
                        memstats = value["memstats"]
                    else:
                        done = True
                if s.snapshot is not None:
                    # The leak's growth: from the last full scan before its phase to the end.
                    if current >= 0 and plan[current].title == "cgo leak":
                        leak_snaps.append(s.snapshot)
                    else:
                        before_leak[:] = [s.snapshot]
                recent.append(s)
                while s.mono - recent[0].mono > WINDOW:
                    recent.popleft()
                now = time.monotonic()
                if now - shown >= REFRESH or done:
                    shown = now
                    heading = [_heading(plan, current), f"  {plan[current].note}" if current >= 0 else "",
                               f"Go says: HeapAlloc {mib(memstats['HeapAlloc'])} · HeapIdle-HeapReleased "
                               f"{mib(memstats['HeapIdle'] - memstats['HeapReleased'])} · HeapReleased "
                               f"{mib(memstats['HeapReleased'])} · Sys {mib(memstats['Sys'])}"]
                    live.update(watch.view(recent, WINDOW, heading), refresh=True)

            driver.start()
            record.record(sampler, writer, stop=lambda: done, stop_reason="end of the demo", each=each)
        driver.join()
        if driver.error is not None:
            raise driver.error
        final = scan(program.pid)
    finally:
        program.stop()

    console.print()
    render(final, console)
    console.print(f"\nrecorded {csv_path} ({writer.samples:,} samples, {sampler.rate:.0f}/s)")
    try:
        console.print(f"plotted  {plot.plot(csv_path, png_path)}")
    except Error as err:  # matplotlib missing: the rest of the demo stands
        console.print(f"[yellow]not plotted:[/yellow] {err}")
    console.print("\n[bold]memscan explain[/bold] at the end"
                  + (", with the growth over the cgo leak phase" if len(leak_snaps) >= 2 else "") + ":")
    explain.render(explain.report(before_leak + [final] if leak_snaps else [final], memstats), console)
    return 0


def _heading(plan: List[Phase], current: int) -> str:
    steps = " → ".join(f"[{p.title}]" if i == current else p.title for i, p in enumerate(plan))
    return f"memscan demo: {steps}" if current >= 0 else "memscan demo: starting"

