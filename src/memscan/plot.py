"""``memscan plot``: a recording (``memscan record``) as a picture.

Stacked areas of each category's resident memory over time (categories at
zero throughout are left out), the total rss as a line and the full scans'
pss as dots; a second panel splits the Go heap by the runtime's page states
when the exact tier recorded them; the target's exit and an interruption are
marked, and so are the phases of a scripted run (``phase`` events, as
``memscan demo`` writes them) and the stretches where the owners and Go heap
states counted were more than STALE_AFTER seconds old (hatched). matplotlib (the ``plot`` extra) is imported only here, and drawn
with its Agg backend: no display is needed.
"""

from __future__ import annotations

import math
import os
import shlex
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._errors import Error
from ._types import CATEGORIES
from .format import MIB
from .record import C_DETAIL_COLUMNS, DETAIL_COLUMNS, STALE_AFTER, Recording, read

# One fixed colour per category, the same in every plot (matplotlib's tab10).
COLORS = dict(zip(CATEGORIES, (f"C{i}" for i in range(len(CATEGORIES)))))
DETAIL_COLORS = ("#08519c", "#6baed6", "#fd8d3c", "#bdbdbd", "#f0f0f0")  # objects ... reserved
C_DETAIL_COLORS = ("#a63603", "#fd8d3c", "#f0f0f0", "#bdbdbd")  # in_use, free, reserved, unassigned
MARKED = {"exit": "exited", "interrupted": "interrupted", "trigger": "trigger fired"}


def _matplotlib() -> Tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise Error("plotting needs matplotlib: pip install 'memscan[plot]'") from None
    return Figure, FigureCanvasAgg


def _mib(values: Sequence[Optional[int]]) -> List[float]:
    # Not measured on a row (another tier) is a gap in the plot, not zero.
    return [math.nan if v is None else v / MIB for v in values]


def _stack(ax: Any, t: List[float], rec: Recording, columns: Sequence[str], labels: Sequence[str],
           colors: Sequence[str]) -> bool:
    """Stacked areas of the columns that are not zero throughout; False if there are none."""
    return _stack_values(ax, t, [rec.column(c) for c in columns], labels, colors)


def _stack_values(ax: Any, t: List[float], values: Sequence[Sequence[Optional[int]]], labels: Sequence[str],
                  colors: Sequence[str]) -> bool:
    kept = [i for i, v in enumerate(values) if any(v)]
    if kept:
        ax.stackplot(t, *[_mib(values[i]) for i in kept], labels=[labels[i] for i in kept],
                     colors=[colors[i] for i in kept], alpha=0.85, linewidth=0)
    return bool(kept)


def stale_stretches(rec: Recording) -> List[Tuple[float, float]]:
    """(from, to) times of the runs of samples whose owners and Go heap
    states were more than STALE_AFTER seconds old (recordings from before
    "states_age" give the age in "stale", set only past a failed heap read)."""
    ages = rec.column("states_age" if "states_age" in rec.columns else "stale")
    out: List[Tuple[float, float]] = []
    t = rec.column("mono")
    for i, age in enumerate(ages):
        if age is None or age <= STALE_AFTER:
            continue
        # A run reaches to the next sample, which is when the stale figure was replaced.
        end = t[i + 1] if i + 1 < len(t) else t[i]
        if out and out[-1][1] == t[i]:
            out[-1] = (out[-1][0], end)
        else:
            out.append((t[i], end))
    return out


def figure(rec: Recording) -> Any:
    """The matplotlib Figure of a recording (not saved: see :func:`plot`)."""
    Figure, FigureCanvasAgg = _matplotlib()
    if not rec.rows:
        raise Error(f"{rec.path}: no samples to plot")
    t = rec.column("mono")
    has_detail = any(v for c in DETAIL_COLUMNS for v in rec.column(c))
    # c_malloc's states are measured by the full scans only: their rows.
    c_rows = [i for i, v in enumerate(rec.column(C_DETAIL_COLUMNS[0])) if v is not None]
    panels = 1 + has_detail + bool(c_rows)
    fig = Figure(figsize=(11, 6 + 2.5 * (panels - 1)), dpi=100, constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": (3,) + (2,) * (panels - 1)} if panels > 1 else None)[:, 0]
    ax = axes[0]
    stacked = _stack(ax, t, rec, CATEGORIES, CATEGORIES, [COLORS[c] for c in CATEGORIES])
    ax.plot(t, _mib(rec.column("rss")), color="black", linewidth=0.8, label="rss (total)")
    full = [(ti, v) for ti, v in zip(t, rec.column("pss")) if v is not None]
    if full:
        ax.plot([f[0] for f in full], [f[1] / MIB for f in full], "o", markersize=3, color="0.25",
                label="pss (full scans)")
    ax.set_ylabel("resident MiB")
    ax.set_title("by category" if stacked else "total only: the psutil tier has no categories")
    if has_detail:
        states = [c.split(".", 1)[1] for c in DETAIL_COLUMNS]
        _stack(axes[1], t, rec, DETAIL_COLUMNS, states, DETAIL_COLORS)
        axes[1].set_ylabel("resident MiB")
        axes[1].set_title("go_heap by the Go runtime's page states")
    if c_rows:
        states = [c.split(".", 1)[1] for c in C_DETAIL_COLUMNS]
        columns = [rec.column(c) for c in C_DETAIL_COLUMNS]
        _stack_values(axes[-1], [t[i] for i in c_rows], [[col[i] for i in c_rows] for col in columns], states,
                      C_DETAIL_COLORS)
        axes[-1].set_ylabel("resident MiB")
        axes[-1].set_title("c_malloc by the state of its chunks (full scans)")
    for k, (lo, hi) in enumerate(stale_stretches(rec)):
        for a in axes:
            a.axvspan(lo, hi, facecolor="none", edgecolor="0.5", hatch="//", linewidth=0,
                      label=None if k or a is not ax else f"states > {STALE_AFTER:g} s old")
    # Time runs a little past the last sample or event, so that an exit at
    # the end is not hidden in the frame.
    end = max([t[-1]] + [ev["mono"] for ev in rec.events if isinstance(ev.get("mono"), (int, float))])
    for a in axes:
        a.set_ylim(bottom=0)
        a.set_xlim(0, end * 1.02 or 1)
        a.grid(True, alpha=0.3)
        # The legend lists the stacked areas top down, as they are drawn, then the lines.
        handles, labels = a.get_legend_handles_labels()
        n = len(a.collections)
        order = [*range(n - 1, -1, -1), *range(n, len(handles))]
        a.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left",
                 bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    axes[-1].set_xlabel("seconds since start")
    for ev in rec.events:
        if ev.get("event") == "phase" and ev.get("mono") is not None:
            # A phase of a scripted run (memscan demo): where it begins.
            for a in axes:
                a.axvline(ev["mono"], color="0.4", linestyle=":", linewidth=1)
            ax.annotate(str(ev.get("name", "")), (ev["mono"], 1), xycoords=("data", "axes fraction"),
                        xytext=(3, -3), textcoords="offset points", ha="left", va="top", color="0.3",
                        fontsize="small")
            continue
        label = "OOM-killed" if ev.get("oom_kill") else MARKED.get(str(ev.get("reason", ev.get("event"))))
        if label is None or ev.get("mono") is None:
            continue
        for a in axes:
            a.axvline(ev["mono"], color="crimson", linestyle="--", linewidth=1)
        ax.annotate(label, (ev["mono"], 1), xycoords=("data", "axes fraction"), xytext=(-3, -3),
                    textcoords="offset points", ha="right", va="top", color="crimson", fontsize="small")
    m = rec.meta
    command = title_command(m)
    if len(command) > 90:
        command = command[:87] + "..."
    head = f"pid {m.get('pid')}: {command}" if command else f"pid {m.get('pid')}"
    tiers = sorted({str(v) for v in rec.column("tier") if v})
    info = [f"started {m['start']}" if "start" in m else "", f"tier {', '.join(tiers)}",
            m.get("go") or "", f"{len(rec.rows):,} samples"]
    fig.suptitle(f"{head}\n{' · '.join(i for i in info if i)}", fontsize="medium")
    return fig


def title_command(meta: Dict[str, Any]) -> str:
    """The target as a figure names it: its command name (/proc/PID/comm)
    and its arguments, not the path it was started by, which may be long
    and say little (a build cache's). Recordings from before the header's
    "name" give the command line as it was recorded."""
    command, name = str(meta.get("command", "")), meta.get("name")
    if not name:
        return command
    try:
        args = shlex.split(command)[1:]
    except ValueError:  # not the shell-quoted line a recorder writes
        return command
    return shlex.join([str(name), *args])


def plot(path: str, output: Optional[str] = None) -> str:
    """Draw the recording at ``path`` into ``output`` (default: the same
    name ending in .png; the format follows the name: png, svg, pdf...)."""
    out = output or os.path.splitext(path)[0] + ".png"
    fig = figure(read(path))
    try:
        fig.savefig(out)
    except OSError as err:
        raise Error(f"cannot write {out}: {err.strerror}") from None
    except ValueError as err:  # matplotlib: "Format 'xyz' is not supported ..."
        raise Error(f"cannot write {out}: {err}") from None
    return out
