"""Recordings: a process's memory by category over time, written as it is
sampled (CSV or JSON Lines), and read back.

A recording survives whatever ends it. Every line (a sample, an event, the
header) goes to the file in one ``write(2)`` as soon as it is made, with no
buffer in between: if memscan is killed, at most the line being written is
lost, and what reached the file is a run of complete lines, perhaps followed
by one partial line, which :func:`read` sets aside (``Recording.partial``)
rather than read as a sample. A clean end (the target exited, the duration
passed, Ctrl-C) is written as a last event line carrying the sample count, so
a recording cut short is told apart by its missing end event.

Format 1, the same columns in both forms (``COLUMNS``; ``UNITS`` gives each
one's unit: memory in bytes, times in seconds):

- CSV: ``# key: <JSON value>`` comment lines (memscan version, pid, command
  line, command name, tier, start time, units...), then the header row, then one row per
  sample; a value that was not measured on that row is empty. Events are
  comment lines after the header: ``# event: {"event": "exit", ...}``, so
  ``pandas.read_csv(path, comment="#")`` reads the samples alone.
- JSON Lines: a first object with the same keys as the comment lines plus
  ``columns``, then one object per sample (keys = columns, ``null`` where not
  measured) and the events as objects with an ``event`` key.

Events: ``{"event": "exit"}`` when the target exited (found gone, within a
tick of its exit); ``{"event": "stop",
"reason": "duration" | "interrupted"}`` when memscan stopped. Both carry
``wall``, ``mono``, ``samples``, ``missed`` and ``rate``. ``{"event":
"warning", "message": ...}`` when the sampler warns (``wall``, ``mono``).
"""

from __future__ import annotations

import datetime
import json
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ._errors import Error
from ._types import CATEGORIES
from ._version import __version__
from .core.exact import C_DETAIL, DETAIL
from .core.sampler import Sample, Sampler
from .core.snapshot import Snapshot
from .format import warn
from .kernel import procfs
from .processes import command_line

FORMAT = 1
SUFFIXES = (".csv", ".jsonl")

DETAIL_COLUMNS = tuple(f"go_heap.{state}" for state in DETAIL)
# Totals of the full scans (every ``full_every`` seconds): empty on other rows.
FULL_COLUMNS = ("pss", "swap", "uss")
# c_malloc by state, from the full scans likewise (empty where no C allocator was read).
C_DETAIL_COLUMNS = tuple(f"c_malloc.{state}" for state in C_DETAIL)
# The reader goes by each file's own header: recordings written before
# "states_age" was a column read back without it (and older ones with their
# "stale" column, the age only of states kept past a failed heap read).
COLUMNS: Tuple[str, ...] = (
    "seq", "wall", "mono", "tier", "missed", "rss", *CATEGORIES, *DETAIL_COLUMNS, *FULL_COLUMNS, "states_age",
    *C_DETAIL_COLUMNS,
)
UNITS: Dict[str, str] = {
    "seq": "tick number",
    "wall": "seconds, Unix time",
    "mono": "seconds since the first sample (monotonic clock)",
    "tier": "exact, layout or psutil",
    "missed": "ticks skipped just before this sample",
    **{c: "bytes resident" for c in ("rss", *CATEGORIES, *DETAIL_COLUMNS, *C_DETAIL_COLUMNS)},
    "pss": "bytes, proportional set size",
    "swap": "bytes swapped out",
    "uss": "bytes, unique set size",
    "states_age": "seconds since the Go heap page states and the owners counted were read (exact tier; "
                  "0 on a full scan); empty in other tiers",
}
# States older than this are marked as such by watch and plot.
STALE_AFTER = 1.0
# Columns read back as text and as floats; every other one is an integer.
_TEXT = ("tier",)
_FLOAT = ("wall", "mono", "states_age", "stale")


def header(pid: int, *, tier: str, hz: float, full_every: float) -> Dict[str, Any]:
    """What a recording's header says of how it was made (``Writer``'s ``meta``)."""
    return {"memscan": __version__, "format": FORMAT, "pid": pid, "command": command_line(pid, quoted=True),
            "name": procfs.comm(pid), "tier": tier, "hz": hz, "full_every": full_every}


def format_of(path: str) -> str:
    """"csv" or "jsonl", from the file name; an Error for anything else."""
    for suffix in SUFFIXES:
        if path.lower().endswith(suffix):
            return suffix[1:]
    raise Error(f"{path}: a recording's name must end in {' or '.join(SUFFIXES)}")


def _iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).isoformat(timespec="milliseconds")


class Writer:
    """Writes one recording: :meth:`write` per sample, :meth:`event`, :meth:`close`.

    ``meta`` holds what the file header says besides the start time and the
    target's runtime, which come from the first sample (whose ``mono`` is the
    recording's time 0). Format from the file name (``format_of``).
    """

    def __init__(self, path: str, meta: Dict[str, Any]) -> None:
        self.path = path
        self.format = format_of(path)
        self.meta = dict(meta)
        self.samples = 0
        self.t0: Optional[Tuple[float, float]] = None  # (mono, wall) of time 0
        try:
            # Unbuffered: each line below is one write(2), nothing waits in memory.
            self._file = open(path, "wb", buffering=0)
        except OSError as err:
            raise Error(f"cannot write {path}: {err.strerror}") from None

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, line: str) -> None:
        data = memoryview((line + "\n").encode("utf-8"))
        try:
            while data:
                # A regular file takes it all unless the disk is full or a
                # fatal signal arrived; loop for the rest all the same.
                data = data[self._file.write(data):]
        except OSError as err:
            raise Error(f"cannot write {self.path}: {err.strerror}") from None

    def _start(self, mono: float, wall: float, snapshot: Optional[Snapshot] = None) -> None:
        """Write the header, once: time 0 is (mono, wall)."""
        self.t0 = (mono, wall)
        meta = dict(self.meta, start=_iso(wall), start_wall=round(wall, 6))
        if snapshot is not None:
            meta["go"] = None if snapshot.go is None else snapshot.go.version
            meta["allocator"] = snapshot.allocator
        meta["units"] = UNITS
        if self.format == "csv":
            for key, value in meta.items():
                self._put(f"# {key}: {json.dumps(value)}")
            self._put(",".join(COLUMNS))
        else:
            self._put(json.dumps({**meta, "columns": COLUMNS}))

    def write(self, s: Sample) -> None:
        """Append one ``sampler.Sample`` as a complete line."""
        if self.t0 is None:
            self._start(s.mono, s.wall, s.snapshot)
        assert self.t0 is not None
        values: List[Any] = [s.seq, round(s.wall, 6), round(s.mono - self.t0[0], 6), s.tier, s.missed, s.rss]
        cats, detail, snap = s.categories, s.go_heap_detail, s.snapshot
        values += [None] * len(CATEGORIES) if cats is None else [cats[c] for c in CATEGORIES]
        values += [None] * len(DETAIL) if detail is None else [detail[d] for d in DETAIL]
        if snap is None:
            values += [None] * len(FULL_COLUMNS)
        else:
            t = snap.total
            # The psutil tier cannot see pss and uss: unknown, not 0.
            known = snap.source != "psutil"
            values += [t.pss if known else None, t.swap, t.uss if known else None]
        values.append(None if s.states_age is None else round(s.states_age, 6))
        c_detail = None if snap is None else snap.c_malloc_detail
        values += [None] * len(C_DETAIL) if c_detail is None else [c_detail[d].rss for d in C_DETAIL]
        if self.format == "csv":
            self._put(",".join("" if v is None else str(v) for v in values))
        else:
            self._put(json.dumps(dict(zip(COLUMNS, values))))
        self.samples += 1

    def event(self, event: str, **fields: Any) -> Dict[str, Any]:
        """Append an event line (``exit``, ``stop``) and return it; its
        ``wall`` and ``mono`` are the current time unless given."""
        mono, wall = time.monotonic(), time.time()
        if self.t0 is None:
            self._start(mono, wall)
        assert self.t0 is not None
        ev = {"event": event, "wall": round(wall, 6), "mono": round(mono - self.t0[0], 6), **fields}
        self._put(f"# event: {json.dumps(ev)}" if self.format == "csv" else json.dumps(ev))
        return ev

    def close(self) -> None:
        self._file.close()


def record(
    sampler: Sampler,
    writer: Writer,
    *,
    duration: Optional[float] = None,
    stop: Callable[[], Any] = lambda: False,
    stop_reason: str = "interrupted",
    each: Callable[[Sample], None] = lambda s: None,
    exit_fields: Callable[[], Dict[str, Any]] = dict,
) -> Dict[str, Any]:
    """Write ``sampler``'s samples until the target exits, ``duration``
    seconds have passed since the first sample, or ``stop()`` is true (asked
    after each sample, which is written first; the stop event then gives
    ``stop_reason``, or what ``stop()`` returned if that is a string);
    ``exit_fields()`` adds to the exit event; ``each(sample)`` after every
    write. The sampler's warnings (a tier given up, a part read per
    mapping) are written as they appear. The file ends with the event saying
    which, also returned."""
    end: Dict[str, Any] = {"event": "exit"}
    warned = 0
    for s in sampler:
        writer.write(s)
        for w in sampler.warnings[warned:]:
            writer.event("warning", message=w)
        warned = len(sampler.warnings)
        each(s)
        asked = stop()
        if asked:
            end = {"event": "stop", "reason": asked if isinstance(asked, str) else stop_reason}
            break
        assert writer.t0 is not None
        if duration is not None and s.mono - writer.t0[0] >= duration:
            end = {"event": "stop", "reason": "duration"}
            break
    if end["event"] == "exit":
        end.update(exit_fields())
    summary: Dict[str, Any] = {"samples": writer.samples, "missed": sampler.missed, "rate": round(sampler.rate, 3)}
    return writer.event(**end, **summary)


class _Interrupt:
    """SIGINT handler for recording: the first Ctrl-C lets the sample under
    way be written and the file closed with its end event; a second one
    interrupts at once (the default handler is back)."""

    def __init__(self) -> None:
        self.asked = False

    def __enter__(self) -> "_Interrupt":
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.asked = True
        signal.signal(signal.SIGINT, self._old)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._old)


# How long after the first sample the rate reached is judged, and the
# share of missed ticks that says a rate cannot be met (a busy machine
# misses a few; a rate beyond what a tick costs misses most).
RATE_CHECK = 0.5
RATE_UNMET = 0.5


def rate_unmet(hz: float, sampler: Sampler) -> Optional[str]:
    """What to say when ``sampler`` missed most of its ticks so far (none
    when it keeps up): the first sample's one-time work is not counted."""
    ticks = sampler.samples - 1 + sampler.missed
    if ticks <= 0 or sampler.missed < RATE_UNMET * ticks:
        return None
    share = sampler.missed / ticks
    return (f"--hz {hz:g} cannot be met: {share:.0%} of the ticks since the first sample were missed "
            f"(about {hz * (1 - share):,.0f} samples a second); the recording goes on at the rate it can")


def run(pid: int, output: str, *, hz: float, duration: Optional[float], tier: str,
        engine: Optional[str], full_every: float) -> int:
    """``memscan record``: sample ``pid`` into ``output`` with a progress bar
    on stderr (when it is a terminal); one line at the end."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn

    format_of(output)  # a bad name fails before anything starts
    meta = header(pid, tier=tier, hz=hz, full_every=full_every)
    console = Console(stderr=True)
    columns: List[ProgressColumn] = [TextColumn(f"recording pid {pid}")]
    if duration is not None:
        columns.append(BarColumn())
    columns += [
        TextColumn("{task.completed:.1f}" + ("" if duration is None else f"/{duration:g}") + " s"),
        TextColumn("{task.fields[samples]:,} samples · {task.fields[rate]:.0f} Hz · {task.fields[missed]:,} missed"),
    ]
    progress = Progress(*columns, console=console, auto_refresh=False, disable=not console.is_terminal)
    with Sampler(pid, 1.0 / hz, tier, full_every=full_every, engine=engine) as sampler, \
            Writer(output, meta) as writer, progress, _Interrupt() as interrupt:
        task = progress.add_task("", total=duration, samples=0, rate=0.0, missed=0)
        start = time.monotonic()
        shown = 0.0
        rate_checked = False

        def show(s: Optional[Sample] = None) -> None:
            # The bar is redrawn at most 10 times a second, not per sample.
            nonlocal shown, rate_checked
            if not rate_checked and s is not None and writer.t0 is not None and s.mono - writer.t0[0] >= RATE_CHECK:
                rate_checked = True
                unmet = rate_unmet(hz, sampler)
                if unmet:
                    console.print(f"memscan: warning: {unmet}", soft_wrap=True, markup=False, highlight=False)
            now = time.monotonic()
            if now - shown >= 0.1 or s is None:
                shown = now
                progress.update(task, completed=now - start, samples=writer.samples, rate=sampler.rate,
                                missed=sampler.missed)
                progress.refresh()

        end = record(sampler, writer, duration=duration, stop=lambda: interrupt.asked, each=show)
        show()
        warnings = list(sampler.warnings)
    warn(warnings)
    what = {"exit": f"pid {pid} exited", "duration": "done", "interrupted": "interrupted"}
    print(f"memscan: {what[end.get('reason', 'exit')]}: {end['samples']:,} samples ({end['rate']:.0f} Hz, "
          f"{end['missed']:,} missed ticks) in {output}", file=sys.stderr)
    return 130 if end.get("reason") == "interrupted" else 0


@dataclass
class Recording:
    """A recording read back (:func:`read`), whichever its format.

    ``rows``: one dict per sample, column -> int, float, str, or None where
    the value was not measured. ``events``: the event objects, in order.
    ``partial``: the text of an incomplete last line (memscan was killed
    while writing it), not taken as a sample; "" if none.
    """

    path: str
    meta: Dict[str, Any]
    columns: Tuple[str, ...]
    rows: List[Dict[str, Any]]
    events: List[Dict[str, Any]]
    partial: str = ""

    def column(self, name: str) -> List[Any]:
        """One column's values, a sample each (None where not measured)."""
        return [r.get(name) for r in self.rows]

    @property
    def end(self) -> Optional[Dict[str, Any]]:
        """The event that ended the recording, or None if it was cut short."""
        ends = [ev for ev in self.events if ev.get("event") in ("exit", "stop")]
        return ends[-1] if ends else None


def read(path: str) -> Recording:
    """Read a recording written by ``memscan record`` (CSV or JSON Lines,
    told apart by their first character)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise Error(f"cannot read {path}: {err.strerror}") from None
    cut = data.rfind(b"\n") + 1
    try:
        lines = data[:cut].decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError as err:
        raise _not_a_recording(path, f"not UTF-8 text at byte {err.start}") from None
    partial = data[cut:].decode("utf-8", "replace")
    if not lines:
        raise _not_a_recording(path, "no complete line")
    reader = _read_jsonl if lines[0].startswith("{") else _read_csv
    meta, columns, rows, events = reader(path, lines)
    if "memscan" not in meta or not {"seq", "mono", "rss"} <= set(columns):
        raise _not_a_recording(path, "no memscan header")
    return Recording(path, meta, columns, rows, events, partial)


def _not_a_recording(path: str, why: str) -> Error:
    return Error(f"{path}: not a memscan recording ({why})")


def _bad(path: str, lineno: int, why: str) -> Error:
    return Error(f"{path}, line {lineno}: {why}")


def _read_csv(path: str, lines: List[str]):  # type: ignore[no-untyped-def]
    meta: Dict[str, Any] = {}
    columns: Tuple[str, ...] = ()
    rows: List[Dict[str, Any]] = []
    events: List[Dict[str, Any]] = []
    for lineno, line in enumerate(lines, 1):
        if line.startswith("#"):
            key, sep, value = line[1:].strip().partition(": ")
            if not sep:
                continue  # a comment of someone else's
            try:
                parsed = json.loads(value)
            except ValueError:
                raise _bad(path, lineno, f"{key}: not a JSON value") from None
            if not columns:
                meta[key] = parsed
            elif key == "event":
                events.append(parsed)
        elif not columns:
            # The header comes first: without it this is someone else's CSV
            # (or /etc/passwd), not a recording with a bad line.
            if "memscan" not in meta:
                raise _not_a_recording(path, "no memscan header")
            columns = tuple(line.split(","))
            meta["columns"] = list(columns)
        else:
            fields = line.split(",")
            if len(fields) != len(columns):
                raise _bad(path, lineno, f"{len(fields)} fields, the header has {len(columns)}")
            try:
                rows.append({c: _value(c, v) for c, v in zip(columns, fields)})
            except ValueError as err:
                raise _bad(path, lineno, str(err)) from None
    if not columns:
        raise _not_a_recording(path, "no header row")
    return meta, columns, rows, events


def _value(column: str, text: str) -> Any:
    if text == "":
        return None
    if column in _TEXT:
        return text
    try:
        return float(text) if column in _FLOAT else int(text)
    except ValueError:
        raise ValueError(f"{column} is not a number: {text!r}") from None


def _read_jsonl(path: str, lines: List[str]):  # type: ignore[no-untyped-def]
    objs = []
    for lineno, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or (lineno == 1 and "memscan" not in obj):
            if lineno == 1:
                raise _not_a_recording(path, "no memscan header")
            raise _bad(path, lineno, "not a JSON object")
        objs.append(obj)
    meta = objs[0]
    columns = tuple(meta.get("columns", ()))
    rows = [o for o in objs[1:] if "event" not in o]
    events = [o for o in objs[1:] if "event" in o]
    return meta, columns, rows, events
