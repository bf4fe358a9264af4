"""``memscan watch``: a live table of a process's memory by category, with
each category's change and a sparkline over the last seconds."""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Deque, Dict, Optional, Sequence

from ._types import CATEGORIES, Counters
from .core.exact import C_DETAIL, DETAIL
from .core.sampler import Sample, Sampler
from .format import MIB, mib
from .processes import command_line
from .record import STALE_AFTER

BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 24
REFRESH = 0.25  # seconds between redraws
# A sparkline spans at least this much: each of its 7 steps above the
# lowest block is then 1 MiB or more. Allocator and page-table churn of a
# few hundred KiB, which the table's Δ shows as +0.1 or +0.3, rounds to the
# lowest block (under 0.5 MiB) or the next, instead of being stretched to
# full height as if it were growth; a change of 7 MiB or more still fills it.
# Absolute rather than a fraction of the value: the unit people read (MiB)
# is the same for a 20 MiB and a 20 GiB process.
SPARK_FLOOR = (len(BLOCKS) - 1) * MIB


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH, floor: float = 0.0) -> str:
    """``values`` (oldest first) as at most ``width`` block characters.

    More values than ``width`` are cut into ``width`` consecutive groups and
    each group shows its largest value, so that a short peak stays visible.
    Heights are scaled from the smallest value shown (▁) to the largest (█),
    or to the smallest plus ``floor`` if that is higher; a constant series is
    all ▁: the line shows shape, the table the size.
    """
    n = len(values)
    if n > width:
        values = [max(values[i * n // width:(i + 1) * n // width]) for i in range(width)]
    if not values:
        return ""
    low = min(values)
    span = max(max(values) - low, floor)
    if span == 0:
        return BLOCKS[0] * len(values)
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[round((v - low) * top / span)] for v in values)


def _delta(d: int) -> str:
    """A change in MiB: growth red, shrinking green, under 0.05 MiB dim."""
    if d == 0:
        return "[dim]0.0[/dim]"
    style = "dim" if abs(d) < MIB / 20 else "red" if d > 0 else "green"
    return f"[{style}]{mib(d, unit=False, sign=True)}[/{style}]"


def view(samples: Sequence[Sample], window: float, heading: Sequence[str] = ()) -> Any:
    """What ``memscan watch`` shows for ``samples`` (``sampler.Sample``,
    oldest first, the last ``window`` seconds): the ``heading`` lines, each
    cut to the width of the terminal, then a table of each category's rss
    now, its change since the oldest sample and its sparkline; the Go heap's
    states under go_heap when the exact tier gives them; the total; a line
    saying how old the owners and Go heap states are when older than
    STALE_AFTER. A rich renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    last = samples[-1]
    table = Table(caption=f"Δ and trend over the last {window:g} s", caption_justify="left")
    table.add_column("category")
    table.add_column("rss MiB", justify="right")
    table.add_column(f"Δ {window:g} s", justify="right")
    table.add_column("trend")

    def row(label: str, pick: Any, style: str = "") -> None:
        values = [pick(s) for s in samples]
        values = [v for v in values if v is not None]
        if values:
            table.add_row(label, mib(values[-1], unit=False), _delta(values[-1] - values[0]),
                          sparkline(values, floor=SPARK_FLOOR), style=style)

    if last.categories is not None:
        for cat in CATEGORIES:
            row(cat, lambda s, c=cat: None if s.categories is None else s.categories[c])
            if cat == "go_heap" and last.go_heap_detail is not None:
                for state in DETAIL:
                    row(f"  {state}", lambda s, d=state: None if s.go_heap_detail is None else s.go_heap_detail[d],
                        "dim")
            if cat == "c_malloc" and any(_c_detail(s) for s in samples):
                # From the full scans' samples only (the ticks between count categories).
                for state in C_DETAIL:
                    row(f"  {state}", lambda s, d=state: _c_state(s, d), "dim")
        table.add_section()
    row("total", lambda s: s.rss, "bold")
    lines = [Text(h, no_wrap=True, overflow="ellipsis") for h in heading]
    if last.states_age is not None and last.states_age > STALE_AFTER:
        table.title = Text(f"stale: owners and Go heap states {last.states_age:.1f} s old", style="bold yellow")
    return Group(*lines, table)


def _c_detail(s: Sample) -> Optional[Dict[str, Counters]]:
    return None if s.snapshot is None else s.snapshot.c_malloc_detail


def _c_state(s: Sample, state: str) -> Optional[int]:
    d = _c_detail(s)
    return None if d is None else d[state].rss


def run(pid: int, *, interval: float, tier: str, window: float) -> int:
    """``memscan watch``: redraw the table a few times a second until the
    target exits (one line says so) or Ctrl-C (KeyboardInterrupt, for the CLI)."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    command = command_line(pid, quoted=True)
    recent: Deque[Sample] = deque()
    with Sampler(pid, interval, tier) as sampler, Live(console=console, auto_refresh=False) as live:

        def show() -> None:
            heading = (f"pid {pid} · tier {recent[-1].tier} · {sampler.rate:.0f} samples/s · "
                       f"{sampler.missed:,} ticks missed", command, *(f"warning: {w}" for w in sampler.warnings))
            live.update(view(recent, window, heading), refresh=True)

        shown = 0.0
        for s in sampler:
            recent.append(s)
            while s.mono - recent[0].mono > window:
                recent.popleft()
            now = time.monotonic()
            if now - shown >= REFRESH:
                shown = now
                show()
        if recent:
            show()  # the last samples, which the redraws may have skipped
    if not console.is_terminal:
        console.line()  # rich ends a Live's final render without a newline on a pipe or file
    console.print(f"pid {pid} {'exited' if sampler.exited else 'sampling ended'}: "
                  f"{sampler.samples:,} samples watched.", highlight=False)
    return 0
